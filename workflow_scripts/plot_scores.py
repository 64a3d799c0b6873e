import numpy as np

from oodrepro import io, report
from oodrepro.runtime import start_job

start_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
fig = report.plot_scores(
    np.load(snakemake.input.id_scores),
    {name: np.load(path) for name, path in zip(p.ood_sets, snakemake.input.ood_scores)},
    p.title,
)
io.save_figure(snakemake.output[0], fig)
