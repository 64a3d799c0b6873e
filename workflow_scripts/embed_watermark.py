from oodrepro import data, watermarknn
from oodrepro.runtime import start_job

start_job(snakemake)
p, out, inp = snakemake.params, snakemake.output, snakemake.input
images, labels = data.load_dataset(inp.train)
watermarknn.embed(
    p.spec,
    images,
    labels,
    data.load_dataset(inp.triggers),
    p.recipe,
    per_batch=p.per_batch,
    out=out.model,
    state_path=p.state,
    log_csv=out.log_csv,
    marking_out=out.marking_key,
    verification_out=out.verification_key,
    init=inp.get("init"),
    first_epoch=p.first_epoch,
    test=data.load_dataset(inp.test),
    nonce_seed=p.nonce_seed,
    seed=p.seed,
    device=p.device,
)
