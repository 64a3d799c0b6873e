from oodrepro import claims, io, plots
from oodrepro.runtime import start_job

start_job(snakemake)
p = snakemake.params
table = claims.evaluate(p.claims, p.runs, p.benchmark, p.metrics, p.uncertainty, p.watermarknn)
io.save_csv(snakemake.output.table, table)
io.save_figure(snakemake.output.plot, plots.plot_claims(table, p.title))
