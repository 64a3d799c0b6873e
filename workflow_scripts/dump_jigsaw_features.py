from oodrepro import data, featurenorm, features, models
from oodrepro.devices import pick_device
from oodrepro.runtime import start_job

start_job(snakemake)
model = models.load_model(
    snakemake.input.model, pick_device(snakemake.params.device), spec=snakemake.params.spec
)
images, labels = data.load_dataset(snakemake.input.dataset)
features.dump(
    model,
    images,
    labels,
    snakemake.output[0],
    batch_size=snakemake.params.batch_size,
    transform=featurenorm.jigsaw_transform(len(images), snakemake.params.seed),
)
