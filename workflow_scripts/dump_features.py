from oodrepro import data, featurenorm, features, models
from oodrepro.devices import pick_device
from oodrepro.runtime import start_job

start_job(snakemake)
p = snakemake.params
model = models.load_model(snakemake.input.model, pick_device(p.device), spec=p.spec)
for dataset, out in zip(snakemake.input.datasets, snakemake.output, strict=True):
    images, labels = data.load_dataset(dataset)
    if p.dump == "convs":
        features.dump_convs(model, images, labels, out, batch_size=p.batch_size)
    else:
        jigsaw = featurenorm.jigsaw_transform(len(images), p.seed) if p.dump == "jigsaw" else None
        features.dump(model, images, labels, out, batch_size=p.batch_size, transform=jigsaw)
