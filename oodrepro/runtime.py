"""Per-process set-up: a job's log redirection and thread count, the package on PYTHONPATH, GPUs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys


def start_job(job) -> None:
    """Start a workflow script's job (`job` is the `snakemake` object): send stdout/stderr
    (progress bars included) to the rule's log, use the rule's threads, and log first one line
    saying what the job ran on (`job_line`).

    Jobs on cached arrays never import torch; the thread count reaches it only if loaded.
    """
    if job.log:
        stream = open(job.log[0], "w", buffering=1)
        sys.stdout = sys.stderr = stream
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", force=True
    )
    threads = max(1, int(job.threads))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    logging.info("%s", job_line(job.rule, list(job.input), dict(job.params.items()), threads))


def job_line(rule: str, inputs: list, params: dict, threads: int, shown: int = 4) -> str:
    """One line: the rule, its threads, the device it was told to use, its inputs (the first
    `shown` and a count) and every parameter, as JSON."""
    files = [str(f) for f in inputs]
    listed = ", ".join(files[:shown]) + (
        f" and {len(files) - shown} more" if len(files) > shown else ""
    )
    device = params.get("device", "none (no network)")
    hp = json.dumps(params, default=str, sort_keys=True, ensure_ascii=False)
    return (
        f"job {rule}: {threads} thread(s), device {device}; inputs {listed or 'none'}; params {hp}"
    )


def put_on_pythonpath(directory: str) -> None:
    """Prepend `directory` to PYTHONPATH for every job started from this process (and, through
    the environment it exports, for cluster jobs), so they import this checkout's package."""
    current = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(directory), current) if p)


def nvidia_gpus() -> list[str]:
    """The GPUs nvidia-smi lists, without importing torch (whose import alone costs a no-op
    rerun seconds); none where nvidia-smi is missing or fails."""
    if not shutil.which("nvidia-smi"):
        return []
    r = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return [g.strip() for g in r.stdout.splitlines() if g.strip()] if r.returncode == 0 else []
