"""Debian packages a test needs (slurm-wlm, chromium), installed with apt-get where missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


class Unavailable(RuntimeError):
    """The packages are missing and this machine cannot install them (no root, no apt)."""


def ensure(packages: list[str], commands: list[str]) -> None:
    """Install `packages` unless every one of `commands` is already on the PATH or in /usr/sbin."""
    if all(shutil.which(c) or Path(f"/usr/sbin/{c}").exists() for c in commands):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise Unavailable(
            f"{', '.join(packages)} missing and cannot be installed (needs root and apt-get)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    wait = ["-o", "DPkg::Lock::Timeout=600"]  # another test process may be installing too
    for args, timeout in (
        (["update", "-qq"], 600),
        (["install", "-y", "-qq", "--no-install-recommends", *packages], 900),
    ):
        subprocess.run(
            ["apt-get", *wait, *args], capture_output=True, check=True, env=env, timeout=timeout
        )
