import sys

from oodrepro import data
from oodrepro.runtime import start_job

start_job(snakemake)
try:
    data.fetch(snakemake.params.archive, snakemake.output[0])
except (data.download.DownloadError, data.ChecksumError) as err:  # the message says what to do
    sys.exit(str(err))
