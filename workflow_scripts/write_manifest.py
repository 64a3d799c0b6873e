from pathlib import Path

import yaml

from oodrepro import io, manifest
from oodrepro.runtime import start_job

start_job(snakemake)
p = snakemake.params
started = Path(p.started).read_text().strip() if Path(p.started).exists() else None
io.save_json(snakemake.output.manifest, manifest.build(p.config, Path(p.repo), started, p.job_logs))
io.save_text(snakemake.output.config, yaml.safe_dump(p.config, sort_keys=False))
