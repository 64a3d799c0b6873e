"""What `make run` does around Snakemake: a short error for a missing or malformed config
instead of a traceback, and recovery from the lock that a killed run leaves behind.

    python -m oodrepro.launch CONFIG -- SNAKEMAKE_ARGS...

Snakemake locks the working directory while it runs and leaves the lock behind when it is
killed; the next run then fails with a LockException until someone finds `--unlock`. Here
the lock is removed when no other Snakemake process works in this directory, and otherwise
the error says which process holds it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from . import data
from .config import ConfigError, read_yaml, validate


def other_snakemake_runs(directory: Path) -> list[int] | None:
    """PIDs of other Snakemake processes whose working directory is `directory`; None where
    processes cannot be listed (no /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    mine = {os.getpid(), os.getppid()}
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone, or not ours to read
            continue
        if cwd == directory and any(
            part.endswith(b"snakemake") or part == b"snakemake" for part in cmdline
        ):
            found.append(int(entry.name))
    return sorted(found)


def release_stale_lock(snakemake: list[str], directory: Path) -> None:
    """Unlock the directory if a killed run left its lock and no other run is alive.

    If one is alive, say so instead."""
    locks = directory / ".snakemake" / "locks"
    if not locks.is_dir() or not any(locks.iterdir()):
        return
    others = other_snakemake_runs(directory)
    if others:
        sys.exit(
            "make run: another Snakemake run works in this directory (pid "
            f"{', '.join(map(str, others))}); "
            "wait for it to finish, or stop it and run make run again"
        )
    if others is None:
        print(
            "make run: this directory is locked. If no other run is working here, unlock it with\n"
            f"  {' '.join(snakemake)} --unlock\nand run make run again.",
            file=sys.stderr,
        )
        return
    print(
        "make run: a killed run left its lock and no other Snakemake run works here: unlocking.",
        file=sys.stderr,
    )
    subprocess.run([*snakemake, "--unlock"], check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] != "--":
        sys.exit("usage: python -m oodrepro.launch CONFIG -- SNAKEMAKE_COMMAND...")
    config_file, snakemake = argv[0], argv[2:]
    if not Path(config_file).is_file():
        sys.exit(
            f"make run: no config file {config_file!r} (the default is config.yaml; presets are in "
            "presets/)"
        )
    try:
        config = validate(read_yaml(config_file), cache_dir=".snakemake/oodrepro")
    except ConfigError as err:
        message = str(err) if str(err).startswith(config_file) else f"{config_file}: {err}"
        sys.exit(f"make run: {message}")
    missing = data.unavailable(config)
    if missing:
        sys.exit(f"make run: {config_file}: " + "\n  ".join(missing))
    release_stale_lock(snakemake, Path.cwd().resolve())
    return subprocess.run(snakemake).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
