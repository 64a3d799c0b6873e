from oodrepro import io, scores
from oodrepro.runtime import start_job

start_job(snakemake)
p = snakemake.params
keys = ["layer_names", *(f"layer_{j}" for j in p.layers)]  # only this piece's layers are read
train = io.load_npz(snakemake.input.train_convs, keys)
state = scores.fit_laood(train, n_jobs=snakemake.threads, only=p.layers, **p.hp)
io.save_npz(snakemake.output[0], **state)
