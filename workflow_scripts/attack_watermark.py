from oodrepro import data, io, watermarknn
from oodrepro.runtime import start_job

start_job(snakemake)
p, out, inp = snakemake.params, snakemake.output, snakemake.input
images, labels = data.load_dataset(inp.train)
share = watermarknn.attacker_share(len(labels), p.data_fraction, p.seed)
key = io.load_npz(inp.marking_key)
watermarknn.attack(
    inp.owner,
    snakemake.wildcards.attack,
    images[share],
    labels[share],
    recipe=p.recipe,
    out=out.model,
    state_path=p.state,
    log_csv=out.log_csv,
    triggers=(key["images"], key["labels"]),
    test=data.load_dataset(inp.test),
    frozen=p.frozen,
    seed=p.seed,
    device=p.device,
    spec=p.spec,
)
