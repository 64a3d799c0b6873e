from oodrepro import data, features, models
from oodrepro.devices import pick_device
from oodrepro.runtime import start_job

start_job(snakemake)
model = models.load_model(
    snakemake.input.model, pick_device(snakemake.params.device), spec=snakemake.params.spec
)
for dataset, out in zip(snakemake.input.datasets, snakemake.output, strict=True):
    images, labels = data.load_dataset(dataset)
    features.dump_convs(model, images, labels, out, batch_size=snakemake.params.batch_size)
