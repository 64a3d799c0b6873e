from oodrepro import data
from oodrepro.runtime import start_job

start_job(snakemake)
p = snakemake.params
data.convert_download(
    snakemake.wildcards.dataset,
    list(snakemake.input),
    snakemake.output[0],
    p.sample,
    p.seed,
    folder=p.folder,
)
