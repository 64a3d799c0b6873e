from oodrepro import claims, io, plots
from oodrepro.runtime import start_job

start_job(snakemake)
p = snakemake.params
table = claims.evaluate(
    p.claims,
    p.runs,
    p.benchmark,
    p.metrics,
    p.uncertainty,
    p.watermarknn,
    shared_backbones=tuple(p.shared_backbones),
)
io.save_csv(snakemake.output.table, table, float_format="%.4f")
io.save_figure(snakemake.output.plot, plots.plot_claims(table, p.title))
