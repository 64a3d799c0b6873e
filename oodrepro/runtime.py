"""Per-process set-up: a job's log redirection and thread count, the package on PYTHONPATH, GPUs."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from .io import save_json

NODE_SUFFIX = ".node.json"  # beside a job's log: the machine it ran on (manifest.jobs)


def start_job(job) -> None:
    """Start a workflow script's job (`job` is the `snakemake` object): send stdout/stderr
    to the rule's log, use the rule's threads, log first one line saying what ran where
    (`job_line`) and keep that machine's facts beside the log, for the manifest.

    A job the scheduler was asked to give a GPU (`resources.gpu`) that finds none stops here,
    naming the node, rather than train on its CPUs for the whole time limit. Jobs on cached
    arrays never import torch; the thread count reaches it only if loaded.
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
    facts = {**node_facts(), "startup_s": process_age()}
    params = dict(job.params.items())
    logging.info("%s", job_line(job.rule, list(job.input), params, threads, facts))
    if job.log:
        save_json(str(job.log[0]) + NODE_SUFFIX, {"rule": job.rule, **facts})
    asked = int(job.resources.get("gpu", 0) or 0)
    if asked and not facts["cuda_devices"]:
        sys.exit(
            f"job {job.rule} asked for {asked} GPU(s) but node {facts['host']} gives it none "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}, torch "
            f"{facts['torch']}, CUDA {facts['cuda']}): check the GPU partition and the site's GPU "
            "request (profiles/slurm), or set `device: cpu` to run networks on CPUs"
        )


def record(job, **facts) -> None:
    """Add `facts` a job learnt while it ran (a released checkpoint's own fields) to the facts
    kept beside its log, which the manifest gathers per rule."""
    if job.log:
        path = Path(str(job.log[0]) + NODE_SUFFIX)
        save_json(path, {**json.loads(path.read_text()), **facts})


def node_facts() -> dict:
    """Where this process runs: host, CPU model, GPU models and driver (nvidia-smi), torch and
    the CUDA it was built for, and the CUDA devices it sees (0 where torch is not loaded and
    no GPU is listed: checking would cost the import)."""
    from importlib import metadata

    gpus = nvidia_gpus(("name", "driver_version"))
    torch = sys.modules.get("torch")
    if torch is None and gpus:
        import torch
    return {
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "gpus": [g[0] for g in gpus],
        "driver": gpus[0][1] if gpus else None,
        "torch": metadata.version("torch"),
        "cuda": torch.version.cuda if torch else None,
        "cuda_devices": torch.cuda.device_count() if torch else 0,
    }


def process_age() -> float | None:
    """Seconds since this process started (Linux's /proc, to 10 ms): at a job's start, what it
    paid before its first line of work (the interpreter, the imports, Snakemake's preamble)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return round(uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"), 2)
    except (OSError, ValueError, IndexError):
        return None


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def job_line(
    rule: str, inputs: list, params: dict, threads: int, facts: dict, shown: int = 4
) -> str:
    """One line: the rule, the machine (host, CPU, GPUs, driver, torch, CUDA), its threads, the
    device it was told to use, its inputs (the first `shown` and a count) and every parameter."""
    files = [str(f) for f in inputs]
    listed = ", ".join(files[:shown]) + (
        f" and {len(files) - shown} more" if len(files) > shown else ""
    )
    device = params.get("device", "none (no network)")
    hp = json.dumps(params, default=str, sort_keys=True, ensure_ascii=False)
    gpus = ", ".join(facts["gpus"]) or "none"
    return (
        f"job {rule} on {facts['host']} (CPU {facts['cpu']}; GPU {gpus}, driver "
        f"{facts['driver']}; torch {facts['torch']}, CUDA {facts['cuda']}; started in "
        f"{facts.get('startup_s')} s): {threads} thread(s), device {device}; inputs "
        f"{listed or 'none'}; params {hp}"
    )


def put_on_pythonpath(directory: str) -> None:
    """Prepend `directory` to PYTHONPATH for every job started from this process (and, through
    the environment it exports, for cluster jobs), so they import this checkout's package."""
    current = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(directory), current) if p)


def nvidia_gpus(fields: tuple[str, ...] = ("name",)) -> list:
    """The GPUs nvidia-smi lists (their names, or a tuple of `fields` each), without importing
    torch (whose import alone costs a no-op rerun seconds); none where nvidia-smi is missing or
    fails."""
    if not shutil.which("nvidia-smi"):
        return []
    r = subprocess.run(
        ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    rows = [tuple(f.strip() for f in g.split(",")) for g in r.stdout.splitlines() if g.strip()]
    rows = rows if r.returncode == 0 else []
    return [row[0] for row in rows] if fields == ("name",) else rows
