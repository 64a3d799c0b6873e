from oodrepro import models
from oodrepro.runtime import start_job

start_job(snakemake)
models.import_pretrained(
    snakemake.input[0], snakemake.output.model, snakemake.params.spec, snakemake.params.key_format
)
