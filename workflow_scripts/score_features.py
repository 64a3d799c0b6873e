from oodrepro import io, scores, search
from oodrepro.runtime import start_job

start_job(snakemake)
score = scores.get(snakemake.wildcards.method)
state = io.load_npz(snakemake.input.detector) if snakemake.input.get("detector") else None
hp = search.hyperparameters(snakemake.params.hp, snakemake.input.get("search"))
for features, out in zip(snakemake.input.features, snakemake.output, strict=True):
    io.save_npy(out, score.score(io.load_npz(features), state, **hp))
