from oodrepro import io, scores, search
from oodrepro.runtime import start_job

start_job(snakemake)
score = scores.get(snakemake.wildcards.method)
inputs = [io.load_npz(snakemake.input[name]) for name in score.fit_inputs]
hp = search.hyperparameters(snakemake.params.hp, snakemake.input.get("search"))
io.save_npz(snakemake.output[0], **score.bind(hp).fit(*inputs, n_jobs=snakemake.threads))
