"""The run manifest: what produced a results folder — package versions, the git commit,
the device, a hash of the validated config, and when the run started and ended."""

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

from .runtime import nvidia_gpus

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
    """The CPU model, and the GPUs nvidia-smi lists (without importing torch)."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return {"requested": requested, "cpu": cpu, "gpus": nvidia_gpus()}


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


def build(config: dict, repo: Path, started: str | None) -> dict:
    marks = (
        {"REHEARSAL": config["rehearsal"]} if "rehearsal" in config else {}
    )  # a rehearsal says so first
    return {
        **marks,
        "started": started,
        "finished": now(),
        "config_sha256": config_hash(config),
        "local_sources": local_sources(config),
        "git": git_state(repo),
        "device": devices(config.get("device", "auto")),
        "versions": versions(),
        "platform": platform.platform(),
    }
