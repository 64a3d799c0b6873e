from pathlib import Path

from oodrepro import io, manifest
from oodrepro.runtime import start_job

start_job(snakemake)
p = snakemake.params
started = Path(p.started).read_text().strip() if Path(p.started).exists() else None
io.save_json(snakemake.output[0], manifest.build(p.config, Path(p.repo), started))
