import pandas as pd

from oodrepro import io, plots
from oodrepro.runtime import start_job

start_job(snakemake)
io.save_figure(
    snakemake.output[0],
    plots.plot_training(pd.read_csv(snakemake.input[0]), snakemake.params.title),
)
