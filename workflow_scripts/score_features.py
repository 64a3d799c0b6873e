from oodrepro import io, scores, search
from oodrepro.runtime import start_job

start_job(snakemake)
state = io.load_npz(snakemake.input.detector) if snakemake.input.get("detector") else None
hp = search.hyperparameters(snakemake.params.hp, snakemake.input.get("search"))
score = scores.get(snakemake.wildcards.method).bind(hp)
for features, out in zip(snakemake.input.features, snakemake.output, strict=True):
    io.save_npy(out, score(io.load_npz(features), state=state))
