import sys
from pathlib import Path

from oodrepro import data
from oodrepro.runtime import start_job

start_job(snakemake)
a = snakemake.params.archive
# a distribution's copy (Debian's dataset-fashion-mnist) is read when installed, and verified
url = Path(a["local"]).as_uri() if a["local"] and Path(a["local"]).is_file() else a["url"]
try:
    data.download.download(
        url, snakemake.output[0], md5=a["md5"], sha256=a["sha256"], content_sha256=a["content"]
    )
except data.download.DownloadError as err:  # the message says what to do; a traceback would bury it
    sys.exit(str(err))
