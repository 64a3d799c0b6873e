from oodrepro import io, scores
from oodrepro.runtime import start_job

start_job(snakemake)
score = scores.get(snakemake.wildcards.method)
inputs = [io.load_npz(snakemake.input[name]) for name in score.fit_inputs]
io.save_npz(
    snakemake.output[0], **scores.fit_state(score, inputs, snakemake.params.hp, snakemake.threads)
)
