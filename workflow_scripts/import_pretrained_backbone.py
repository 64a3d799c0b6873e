from oodrepro import models
from oodrepro.runtime import record, start_job

start_job(snakemake)
p, out = snakemake.params, snakemake.output.model
models.import_pretrained(snakemake.input[0], out, p.spec, p.key_format)
# the file's own fields (Unleashing Mask's arch, epoch, training accuracy) reach the manifest
released = models.load_checkpoint(out, spec=None)[1].get("released")
if released:
    record(snakemake, released=released)
