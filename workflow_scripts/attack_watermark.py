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
    p.recipe,
    out.model,
    p.state,
    out.log_csv,
    (key["images"], key["labels"]),
    data.load_dataset(inp.test),
    frozen=p.frozen,
    seed=p.seed,
    device=p.device,
    spec=p.spec,
)
