"""`make fetch CONFIG=…`: every archive a config reads, downloaded (retried, resumed), verified
and recorded in the data folder's lock file, on the machine that has the network — a cluster's
login node, before any job is submitted.

    python -m oodrepro.fetch CONFIG

An archive no checksum pins (none published, none in the config) is pinned here by its first
download: its sha256 is printed and recorded, and any later copy that differs is refused.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from . import data
from .config import ConfigError, read_yaml, validate


def pinned_by(config: dict, name: str) -> str:
    if {"md5", "sha256"} & set(config["downloads"].get(name, {})):
        return "the config"
    if any(getattr(data.ARCHIVES[name], k) for k in data.download.PINS):
        return "its published checksum"
    return "the lock file alone: compare the sha256 with a copy you trust"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.exit("usage: python -m oodrepro.fetch CONFIG")
    config_file = argv[0]
    if not Path(config_file).is_file():
        sys.exit(f"make fetch: no config file {config_file!r}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = validate(read_yaml(config_file), cache_dir=".snakemake/oodrepro")
    except ConfigError as err:
        sys.exit(f"make fetch: {config_file}: {err}")
    names = data.needed_archives(config)
    if not names:
        print(f"make fetch: {config_file} reads no archive (its data is generated or local)")
        return 0
    failed = []
    for name in names:
        source = data.archive_source(config, name)
        try:
            sha256 = data.fetch(source, data.raw_folder(config) / name)
        except (data.download.DownloadError, data.ChecksumError) as err:
            failed.append(str(err))
            continue
        print(f"{name}  sha256 {sha256}  pinned by {pinned_by(config, name)}")
    print(f"lock file: {data.lock.lock_path(data.raw_folder(config))}")
    if failed:
        sys.exit("make fetch: " + "\n  ".join(failed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
