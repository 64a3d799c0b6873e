import pandas as pd

from oodrepro import io, plots
from oodrepro.runtime import start_job

start_job(snakemake)
tidy = pd.read_csv(snakemake.input[0])
io.save_figure(
    snakemake.output[0],
    plots.plot_overview(
        tidy[tidy["arch"] == snakemake.wildcards.arch],
        snakemake.params.title,
        snakemake.params.sets,
    ),
)
