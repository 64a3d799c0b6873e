from oodrepro import data, io, unleashing_mask
from oodrepro.runtime import start_job

start_job(snakemake)
p, inp, out = snakemake.params, snakemake.input, snakemake.output
level = unleashing_mask.flooding_level(p.flooding, p.level, inp.get("constraint"))
mask = p.mask or {}
unleashing_mask.finetune(
    inp.init,
    *data.load_dataset(inp.train),
    p.recipe,
    out.model,
    p.state,
    out.log_csv,
    level=level,
    beta=p.beta,
    mask_keep=mask.get("keep") if p.mask else None,
    train_weights=mask.get("train_weights", False),
    exposure=p.exposure,
    outliers=data.load_dataset(inp.outliers)[0] if p.exposure else None,
    cotrain=p.cotrain,
    detector=io.load_npz(inp.detector) if p.cotrain else None,
    test=data.load_dataset(inp.test),
    seed=p.seed,
    device=p.device,
    spec=p.spec,
)
