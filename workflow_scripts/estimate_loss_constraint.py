from oodrepro import data, io, unleashing_mask
from oodrepro.runtime import start_job

start_job(snakemake)
p, inp = snakemake.params, snakemake.input
images, labels = data.load_dataset(inp.train)
estimate = unleashing_mask.estimate_constraint(
    inp.model,
    images,
    labels,
    keep=p.keep,
    draws=p.draws,
    batch_size=p.batch_size,
    augmentation=p.augment,
    seed=p.seed,
    device=p.device,
    spec=p.spec,
)
io.save_json(snakemake.output[0], estimate)
