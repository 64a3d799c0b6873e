"""Per-process set-up: a job's log redirection and thread count, the package on PYTHONPATH, GPUs."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys


def start_job(log_path: str | None, threads: int = 1) -> None:
    """Send stdout/stderr (progress bars included) to the rule's log; use the rule's threads.

    Jobs on cached arrays never import torch; the thread count reaches it only if loaded.
    """
    if log_path:
        stream = open(log_path, "w", buffering=1)
        sys.stdout = sys.stderr = stream
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s", force=True
    )
    threads = max(1, int(threads))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


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
