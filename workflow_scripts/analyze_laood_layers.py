from oodrepro import io, laood, plots
from oodrepro.runtime import start_job

start_job(snakemake)
p = snakemake.params
state = io.load_npz(snakemake.input.detector)
detectors = laood.from_arrays(state)


def decisions_of(path):
    return laood.decisions(detectors, laood.layers_of(io.load_npz(path)))


d_id = decisions_of(snakemake.input.id_features)
d_ood = {
    name: decisions_of(path)
    for name, path in zip(p.ood_sets, snakemake.input.ood_features, strict=True)
}
table = laood.layer_table(state, d_id, d_ood)
io.save_npz(snakemake.output.decisions, **{p.id_set: d_id}, **d_ood)
io.save_csv(snakemake.output.table, table.assign(**p.context))
io.save_figure(snakemake.output.plot, plots.plot_layers(table, p.title))
