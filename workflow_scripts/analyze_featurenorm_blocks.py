from oodrepro import featurenorm, io, plots
from oodrepro.runtime import start_job

start_job(snakemake)
p = snakemake.params
state = io.load_npz(snakemake.input.detector)
table = featurenorm.block_table(
    state["normratio"],
    [str(n) for n in state["block_names"]],
    int(state["block"]),
    io.load_npz(snakemake.input.id_features)["featnorm"],
    {
        name: io.load_npz(path)["featnorm"]
        for name, path in zip(p.ood_sets, snakemake.input.ood_features, strict=True)
    },
)
io.save_csv(snakemake.output.table, table.assign(**p.context))
io.save_figure(snakemake.output.plot, plots.plot_blocks(table, p.title))
