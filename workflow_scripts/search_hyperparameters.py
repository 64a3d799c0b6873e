from oodrepro import io, scores, search
from oodrepro.runtime import start_job

start_job(snakemake)
p, inp = snakemake.params, snakemake.input
score = scores.get(snakemake.wildcards.method)
fitted = [io.load_npz(inp[name]) for name in score.fit_inputs] if score.fit else []
table = search.search(
    score, fitted, io.load_npz(inp.id_val), io.load_npz(inp.ood_val), hp=p.hp, grid=p.grid
)
io.save_csv(snakemake.output.table, search.as_summary_table(table, p.grid, p.context))
io.save_json(snakemake.output.chosen, {"chosen": search.chosen(table, p.grid)})
