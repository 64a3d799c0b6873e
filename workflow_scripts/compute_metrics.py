import numpy as np

from oodrepro import io, metrics, plots
from oodrepro.runtime import start_job

start_job(snakemake)
p = snakemake.params
id_scores = np.load(snakemake.input.id_scores)
ood_scores = {
    name: np.load(path) for name, path in zip(p.ood_sets, snakemake.input.ood_scores, strict=True)
}
id_feats = io.load_npz(snakemake.input.id_features)
accuracy = metrics.accuracy_percent(id_feats["logits"], id_feats["labels"])
table = metrics.metrics_table(
    id_scores, ood_scores, accuracy, p.context, groups=p.groups, **p.settings
)
io.save_csv(snakemake.output.table, table)
io.save_figure(snakemake.output.plot, plots.plot_scores(id_scores, ood_scores, p.title))
