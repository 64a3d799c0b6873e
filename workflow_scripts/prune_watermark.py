from oodrepro import data, io, watermarknn
from oodrepro.runtime import start_job

start_job(snakemake)
p, inp = snakemake.params, snakemake.input
key = io.load_npz(inp.marking_key)
curve = watermarknn.pruning_curve(
    inp.owner,
    p.rates,
    (key["images"], key["labels"]),
    data.load_dataset(inp.test),
    device=p.device,
    spec=p.spec,
)
io.save_csv(snakemake.output[0], curve)
