from oodrepro import data, io, models, scores
from oodrepro.devices import pick_device
from oodrepro.runtime import start_job

start_job(snakemake)
p, inp = snakemake.params, snakemake.input
model = models.load_model(inp.model, pick_device(p.device), spec=p.spec)
state = (
    scores.get(snakemake.wildcards.method)
    .bind(p.hp)
    .fit(
        model,
        data.load_dataset(inp.train),
        data.load_dataset(inp.tune),
        augmentation=p.augmentation,
        seed=p.seed,
    )
)
io.save_npz(snakemake.output[0], **state)
