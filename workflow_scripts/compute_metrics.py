import numpy as np

from oodrepro import io, metrics, report
from oodrepro.runtime import start_job

start_job(snakemake.log[0], snakemake.threads)
p = snakemake.params
id_feats = io.load_npz(snakemake.input.id_features)
table = report.metrics_table(
    np.load(snakemake.input.id_scores),
    {name: np.load(path) for name, path in zip(p.ood_sets, snakemake.input.ood_scores)},
    metrics.accuracy(id_feats["logits"], id_feats["labels"]),
    p.context, p.groups, **p.settings,
)
io.save_csv(snakemake.output[0], table)
