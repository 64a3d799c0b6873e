from oodrepro import data, io, models, scores
from oodrepro.devices import pick_device
from oodrepro.runtime import start_job

start_job(snakemake)
model = models.load_model(
    snakemake.input.model, pick_device(snakemake.params.device), spec=snakemake.params.spec
)
state = io.load_npz(snakemake.input.detector) if "detector" in snakemake.input.keys() else None
score = scores.get(snakemake.wildcards.method).bind(snakemake.params.hp)
for dataset, out in zip(snakemake.input.datasets, snakemake.output, strict=True):
    images, _ = data.load_dataset(dataset)
    io.save_npy(out, score(model, images, state=state))
