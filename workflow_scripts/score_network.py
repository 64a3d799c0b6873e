from oodrepro import data, io, models, scores
from oodrepro.runtime import start_job
from oodrepro.training import pick_device

start_job(snakemake.log[0], snakemake.threads)
model = models.load_model(snakemake.input.model, pick_device(snakemake.params.device))
images, _ = data.load_dataset(snakemake.input.dataset)
values = scores.get(snakemake.wildcards.method).score(model, images, None, **snakemake.params.hp)
io.save_npy(snakemake.output[0], values)
