from oodrepro import report
from oodrepro.runtime import start_job

start_job(snakemake)
p, inp = snakemake.params, snakemake.input
report.write_summary(
    snakemake.output,
    metrics_files=inp.metrics,
    tables={key: list(getattr(inp, key)) for key in p.tables},
    titles=p.tables,
    ownership=inp.ownership,
    claims=inp.claims,
    title=p.title,
    banner=p.banner,
    reference=p.reference,
    watermarks=p.watermarks,
    score_names=p.scores,
    groups=p.groups,
    hyperparameters=p.hyperparameters,
    search=p.search,
    run=p.run,
    overviews=p.overviews,
)
