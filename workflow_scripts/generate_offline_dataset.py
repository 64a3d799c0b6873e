from oodrepro import data
from oodrepro.runtime import start_job

start_job(snakemake)
data.build_offline(snakemake.wildcards.dataset, snakemake.params.offline, snakemake.output[0])
