from oodrepro import data, training
from oodrepro.runtime import start_job

start_job(snakemake)
p, out = snakemake.params, snakemake.output
images, labels = data.load_dataset(snakemake.input.train)
test = data.load_dataset(snakemake.input.test) if "test" in snakemake.input.keys() else None
training.train_backbone(
    p.spec,
    images,
    labels,
    p.recipe,
    out.model,
    p.state,
    out.log_csv,
    keep={name: (epoch, out[f"kept_{name}"]) for name, epoch in p.keep.items()},
    seed=p.seed,
    device=p.device,
    test=test,
)
