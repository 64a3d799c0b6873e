import pandas as pd

from oodrepro import io, plots
from oodrepro.runtime import start_job

start_job(snakemake)
tidy = pd.concat([pd.read_csv(f) for f in snakemake.input], ignore_index=True)
p = snakemake.params
ours = tidy[tidy["arch"] == snakemake.wildcards.arch]
io.save_figure(snakemake.output[0], plots.plot_overview(ours, p.title, p.sets))
