import sys

from oodrepro import data
from oodrepro.runtime import start_job

start_job(snakemake.log[0], snakemake.threads)
a = snakemake.params.archive
try:
    data.download.download(a["url"], snakemake.output[0], md5=a["md5"], sha256=a["sha256"])
except data.download.DownloadError as err:  # the message says what to do; a traceback would bury it
    sys.exit(str(err))
