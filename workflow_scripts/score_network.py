from oodrepro import data, io, models, scores
from oodrepro.runtime import start_job
from oodrepro.training import pick_device

start_job(snakemake.log[0], snakemake.threads)
model = models.load_model(snakemake.input.model, pick_device(snakemake.params.device))
images, _ = data.load_dataset(snakemake.input.dataset)
state = io.load_npz(snakemake.input.detector) if "detector" in snakemake.input.keys() else None
values = scores.get(snakemake.wildcards.method).score(model, images, state, **snakemake.params.hp)
io.save_npy(snakemake.output[0], values)
