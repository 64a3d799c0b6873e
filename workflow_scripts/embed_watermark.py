from oodrepro import data, watermarknn
from oodrepro.runtime import start_job

start_job(snakemake.log[0], snakemake.threads)
p, out, inp = snakemake.params, snakemake.output, snakemake.input
images, labels = data.load_dataset(inp.train)
watermarknn.embed(
    p.spec, images, labels, data.load_dataset(inp.triggers), p.recipe, p.per_batch, out.model, p.state,
    out.log_csv, out.marking_key, out.verification_key, init=inp.get("init"), first_epoch=p.first_epoch,
    test=data.load_dataset(inp.test), nonce_seed=p.nonce_seed, seed=p.seed, device=p.device,
)
