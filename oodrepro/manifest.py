"""The run manifest: what produced a results folder — package versions, the git commit, the
machine each job ran on, the sha256 of every archive and file of the user's it read, a hash of
the validated config, and when the run started and ended."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from .runtime import NODE_SUFFIX, cpu_model, nvidia_gpus

PACKAGES = (
    "oodrepro",
    "torch",
    "torchvision",
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "matplotlib",
    "pillow",
    "snakemake",
    "snakemake-executor-plugin-slurm",
)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def config_hash(config: dict) -> str:
    """SHA-256 of the validated config (defaults filled in), key order ignored."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(repo: Path) -> dict:
    """The commit of the workflow's checkout and whether it had uncommitted changes."""

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10
        )

    head = git("rev-parse", "HEAD") if shutil.which("git") else None
    if head is None or head.returncode != 0:
        return {"commit": None, "dirty": None}
    return {
        "commit": head.stdout.strip(),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no").stdout),
    }


def devices(requested: str) -> dict:
    """The machine that ran Snakemake (a cluster's login node): its CPU model and the GPUs
    nvidia-smi lists (without importing torch)."""
    return {"requested": requested, "cpu": cpu_model(), "gpus": nvidia_gpus()}


def jobs(folders) -> dict[str, list[dict]]:
    """Per rule, the machine each of its jobs ran on (host, CPU, GPUs, driver, torch, CUDA), from
    the facts every job keeps beside its log (runtime.start_job); each names its log."""
    found: dict[str, list[dict]] = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob(f"*{NODE_SUFFIX}")):
            facts = json.loads(path.read_text())
            log = str(path)[: -len(NODE_SUFFIX)]
            found.setdefault(facts.pop("rule"), []).append({"log": log, **facts})
    return dict(sorted(found.items()))


def archives(config: dict) -> list[dict]:
    """Each archive the run read, with the sha256 the data folder's lock file recorded."""
    from . import data

    locked = data.lock.read(data.raw_folder(config))
    return [
        {"path": str(data.raw_folder(config) / name), "sha256": locked.get(name, {}).get("sha256")}
        for name in data.needed_archives(config)
    ]


def mark_start(path) -> None:
    """Note when this Snakemake invocation began (read by the manifest at the end of the run)."""
    from .io import save_text

    save_text(path, now() + "\n")


def local_sources(config: dict) -> list[dict]:
    """The sha256 of each file of the user's own the run read (`data.local_sources`)."""
    from .data import local_sources as sources
    from .data.download import file_digest

    return [
        {"path": path, "what": what, "sha256": file_digest(path, "sha256")}
        for path, what in sources(config).items()
    ]


def build(config: dict, repo: Path, started: str | None, job_logs=()) -> dict:
    marks = (
        {"REHEARSAL": config["rehearsal"]} if "rehearsal" in config else {}
    )  # a rehearsal says so first
    return {
        **marks,
        "started": started,
        "finished": now(),
        "config_sha256": config_hash(config),
        "archives": archives(config),
        "local_sources": local_sources(config),
        "git": git_state(repo),
        "device": devices(config.get("device", "auto")),
        "jobs": jobs(job_logs),
        "versions": versions(),
        "platform": platform.platform(),
    }
