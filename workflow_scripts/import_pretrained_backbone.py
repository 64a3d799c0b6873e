from oodrepro import models
from oodrepro.io import load_torch
from oodrepro.runtime import record, start_job

start_job(snakemake)
p, out = snakemake.params, snakemake.output.model
models.import_pretrained(snakemake.input[0], out, p.spec, p.key_format)
# the file's own fields (Unleashing Mask's arch, epoch, training accuracy) reach the manifest
released = load_torch(out).get("released")
if released:
    record(snakemake, released=released)
