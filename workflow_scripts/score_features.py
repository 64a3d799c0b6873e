from oodrepro import io, scores
from oodrepro.runtime import start_job

start_job(snakemake.log[0], snakemake.threads)
score = scores.get(snakemake.wildcards.method)
state = io.load_npz(snakemake.input.detector) if snakemake.input.get("detector") else None
values = score.score(io.load_npz(snakemake.input.features), state, **snakemake.params.hp)
io.save_npy(snakemake.output[0], values)
