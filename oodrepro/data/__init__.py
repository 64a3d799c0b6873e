"""The dataset registry: every dataset the workflow can materialise, by name.

A dataset is one array file `{name}.npz` holding `images` (uint8 N×32×32×3) and
`labels` (int64, -1 for unlabelled OOD images). Offline datasets are generated from
a seed; downloaded ones come from checksummed archives and a named 32×32 recipe.
A name may carry a recipe after '@' (`textures@squash-lanczos`), so every recipe of
a source is its own cached file (docs/README.md, conventions).
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import numpy as np

from ..io import load_npz, save_npz
from ..layout import DataFolder
from ..sampling import sample_indices
from . import download as dl
from . import lock
from .archives import ARCHIVES
from .download import Archive, ChecksumError
from .specs import OPENOOD_LISTS, SPECS, DatasetSpec

__all__ = [
    "ARCHIVES",
    "DATASETS",
    "OPENOOD_LISTS",
    "Archive",
    "ChecksumError",
    "DatasetSpec",
    "build_offline",
    "convert_download",
    "get",
    "load_dataset",
    "save_dataset",
]


def save_dataset(path, images: np.ndarray, labels: np.ndarray) -> None:
    images = np.ascontiguousarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ValueError(f"images must be uint8 N×32×32×3, got {images.dtype} {images.shape}")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    save_npz(path, images=images, labels=np.asarray(labels, np.int64))


def load_dataset(path) -> tuple[np.ndarray, np.ndarray]:
    data = load_npz(path)
    return data["images"], data["labels"]


# --------------------------------------------------------------------------- datasets
DATASETS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to the registry (every one of `specs.SPECS`); a name is registered once."""
    if spec.name in DATASETS:
        raise KeyError(f"dataset {spec.name!r} registered twice")
    DATASETS[spec.name] = spec
    return spec


for _spec in SPECS:
    register(_spec)


def get(name: str) -> tuple[DatasetSpec, str | None]:
    """Look up `base@recipe`; returns the spec and the recipe (the default when omitted)."""
    base, _, recipe = name.partition("@")
    if base not in DATASETS:
        raise KeyError(f"unknown dataset {base!r}; known: {', '.join(sorted(DATASETS))}")
    spec = DATASETS[base]
    if recipe and recipe not in spec.recipes:
        raise KeyError(
            f"dataset {base!r} has no recipe {recipe!r}; it has {spec.recipes or 'none'}"
        )
    return spec, (recipe or (spec.recipes[0] if spec.recipes else None))


def is_offline(name: str) -> bool:
    return get(name)[0].offline is not None


def archives_of(name: str) -> tuple[str, ...]:
    return get(name)[0].archives


def expected_size(config: dict, name: str) -> int | None:
    """Images of dataset `name` a run of `config` will hold: the registry's count or the offline
    count the config asks for, capped by `sample`; None where only the files tell (the digits
    split, a user's folder)."""
    spec, _ = get(name)
    sample = config.get("dataset_options", {}).get(name, {}).get("sample")
    if spec.offline is not None:
        key = {"outliers-aux": "n_outliers", "abstract-triggers": "n_triggers"}.get(name, "n_ood")
        n = None if name in ("digits-train", "digits-test") else config["offline"].get(key)
    else:
        n = spec.size
    if n is None:
        return None
    return min(n, sample) if sample else n


def datasets_of(config: dict) -> list[str]:
    """Every dataset a run of `config` makes: train, test, OOD, outliers, triggers and the
    validation sets of a hyper-parameter search."""
    bench = config["benchmark"]
    names = [bench["id_train"], bench["id_test"], *bench["ood"], bench.get("outliers")]
    names.append(config.get("watermarknn", {}).get("triggers"))
    names += [config.get("search", {}).get(k) for k in ("id_val", "ood_val")]
    return list(dict.fromkeys(n for n in names if n))


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether the host of `url` accepts a connection (nothing is downloaded)."""
    import socket
    from urllib.parse import urlparse

    parts = urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def raw_folder(config: dict) -> Path:
    """Where archives are kept, with their lock file (data.lock)."""
    return Path(DataFolder(config["data"]).archives)


def needed_archives(config: dict) -> list[str]:
    """Every archive a run of `config` reads: its datasets' (those not read from a folder of the
    user's) and the released checkpoints its backbones import, at every stage."""
    names = [
        a
        for n in datasets_of(config)
        if not is_offline(n) and source_folder(config, n) is None
        for a in archives_of(n)
    ]
    for backbone in config["backbones"].values():
        pretrained = backbone.get("pretrained", {})
        names += [pretrained.get("archive"), *pretrained.get("snapshots", {}).values()]
    return list(dict.fromkeys(n for n in names if n))


def archive_source(config: dict, name: str) -> dict:
    """Where archive `name` comes from and what pins it: the registry's url and checksums, which a
    config entry may move (a mirror) or replace; a distribution's copy unless the url is moved;
    else the sha256 its first download recorded in the lock file (None when nothing pins it)."""
    archive = ARCHIVES[name]
    override = config["downloads"].get(name, {})
    if "md5" in override or "sha256" in override:
        sums = {"md5": override.get("md5"), "sha256": override.get("sha256"), "git_blob": None}
    else:
        sums = {"md5": archive.md5, "sha256": archive.sha256, "git_blob": archive.git_blob}
    if not any(sums.values()):
        sums["sha256"] = lock.read(raw_folder(config)).get(name, {}).get("sha256")
    return {
        "url": override.get("url", archive.url),
        "local": None if "url" in override else archive.local_copy,
        "content": archive.content_sha256,
        **sums,
    }


def unpinned(config: dict) -> list[str]:
    """One line per archive the run reads that nothing pins (no published checksum, none in the
    config, not yet in the lock file), saying how to pin it; checked before any job."""
    return [
        f"{name}: no checksum is published for it. `make fetch CONFIG=<this config>` downloads it "
        f"(or takes the copy at {raw_folder(config) / name}) and records its sha256 in "
        f"{lock.lock_path(raw_folder(config))}: compare it with a copy you trust; or pin one "
        f"yourself under downloads.{name}.sha256"
        for name in needed_archives(config)
        if not any(archive_source(config, name)[k] for k in dl.PINS)
    ]


def verify_present(config: dict) -> list[str]:
    """Every archive already in the raw folder (downloaded, or put there by hand) checked against
    its pins and the lock file (data.lock.check); one line per mismatch."""
    lines = []
    for name in needed_archives(config):
        source = archive_source(config, name)
        if (raw_folder(config) / name).is_file() and any(source[k] for k in dl.PINS):
            try:
                lock.check(raw_folder(config), name, source)
            except ChecksumError as err:
                lines.append(str(err))
    return lines


def fetch(source: dict, dest, progress: bool = True) -> str:
    """Archive `dest` (in the raw folder) from `source` (archive_source), verified and recorded in
    the lock file, its sha256 returned: the copy already there, else a distribution's copy, else
    the url, retried and resumed. An archive nothing pins is pinned by this first fetch."""
    dest = Path(dest)
    if not dest.is_file():
        local = source["local"]
        url = Path(local).as_uri() if local and Path(local).is_file() else source["url"]
        dl.download(
            url,
            dest,
            md5=source["md5"],
            sha256=source["sha256"],
            git_blob=source["git_blob"],
            content_sha256=source["content"],
            progress=progress,
            pinned=any(source[k] for k in dl.PINS),
        )
    return lock.check(dest.parent, dest.name, source)


def unavailable(config: dict) -> list[str]:
    """One line per archive that a distribution package can provide (`local_copy`) and that this
    run could not get: not in the data folder yet, the package's copy not installed, no url of the
    config's own, and the release's host unreachable. Checked before any job, so an offline run
    fails at once, saying what to install, instead of in a download job."""
    names = datasets_of(config)
    lines = []
    for name in needed_archives(config):
        archive = ARCHIVES[name]
        override = config.get("downloads", {}).get(name, {}).get("url")
        if archive.local_copy is None or override or (raw_folder(config) / name).exists():
            continue
        if Path(archive.local_copy).is_file() or reachable(archive.url):
            continue
        lines.append(
            f"{name}: no copy here and {archive.url} cannot be reached. Install "
            f"{archive.local_package} (it puts the file at {archive.local_copy}), or put the "
            f"release file at {raw_folder(config) / name}, or point "
            f"downloads.{name}.url at a copy (file:// works)"
        )
    return lines + unpinned(config) + _missing_local_files(config, names)


def local_sources(config: dict) -> dict[str, str]:
    """The user's own files a run reads, no checksum published for them, each with what it is:
    OpenOOD's image lists and the released checkpoints given by `pretrained.path` (their sha256
    goes into the manifest, so two runs can prove they read the same files)."""
    found = {
        path: f"image list of {name}"
        for name in datasets_of(config)
        if imglist_of(name)
        for path in source_files(config, name)
    }
    for arch, backbone in config["backbones"].items():
        path = backbone.get("pretrained", {}).get("path")
        for seed in config["seeds"] if path else []:
            found[path.format(seed=seed)] = f"checkpoint of backbone {arch}, seed {seed}"
    return found


def _missing_local_files(config: dict, names) -> list[str]:
    """One line per file of the user's own that the run reads and that is not there: OpenOOD's
    data folder or lists, released checkpoints (docs/openood-v15.md)."""
    folder = config.get("openood", {}).get("data")
    if any(imglist_of(n) for n in names) and not folder:
        return ["the openood-* datasets are read from OpenOOD's data folder: set openood.data"]
    if any(imglist_of(n) for n in names) and not Path(folder).is_dir():
        return [
            f"openood.data: no folder {folder}: download OpenOOD v1.5's data with its "
            "scripts/download/download.py and point openood.data at it (docs/openood-v15.md)"
        ]
    return [
        f"{what}: no file {path}; download OpenOOD v1.5's files (docs/openood-v15.md)"
        for path, what in local_sources(config).items()
        if not Path(path).is_file()
    ]


def imglist_of(name: str) -> str | None:
    """The OpenOOD image list a dataset is read by (under benchmark_imglist/), if it is one."""
    return get(name)[0].converter_args.get("imglist")


def source_folder(config: dict, name: str) -> str | None:
    """The folder a dataset is read from instead of its archives: `dataset_options.<name>.folder`,
    or OpenOOD's data folder (`openood.data`) for a set of its image lists."""
    own = config.get("dataset_options", {}).get(name, {}).get("folder")
    if own is None and imglist_of(name):
        return config.get("openood", {}).get("data")
    return own


def source_files(config: dict, name: str) -> list[str]:
    """What converting a dataset reads, as files a job can depend on: its image list in OpenOOD's
    folder (an edited list makes the set again), nothing else for a folder of one's own, else the
    archives under `<data>/raw/`."""
    folder = source_folder(config, name)
    if folder is not None:
        listed = imglist_of(name)
        return [str(Path(folder) / "benchmark_imglist" / listed)] if listed else []
    return [DataFolder(config["data"]).archive(a) for a in archives_of(name)]


def build_offline(name: str, params: dict, out) -> None:
    spec, _ = get(name)
    images, labels = spec.offline(params)
    save_dataset(out, images, labels)


CONVERTED = "converted %d images in %.3f s"  # a conversion's log line: its own work


def conversion_seconds(log_text: str) -> float | None:
    """The seconds a conversion's log says it spent converting (`CONVERTED`), if it says."""
    found = re.search(r"converted \d+ images in ([0-9.]+) s", log_text)
    return float(found[1]) if found else None


def convert_download(
    name: str,
    archives: list,
    out,
    sample: int | None = None,
    seed: int = 0,
    folder: str | None = None,
) -> None:
    """Convert verified archives into the dataset's array file (`sample`: seeded subsample;
    `folder`: read an unpacked copy instead of the archive, for converters that accept one)."""
    spec, recipe = get(name)
    args = dict(spec.converter_args)
    if folder is not None:
        args["folder"] = folder
    if recipe is not None:
        args["recipe"] = recipe
    dl.preload(spec.converter)
    started = time.perf_counter()
    images, labels = dl.convert(
        spec.converter, [Path(a) for a in archives], sample=sample, seed=seed, **args
    )
    # the conversion's own work, apart from the job's start-up (what the cost estimate scales)
    logging.getLogger(__name__).info(CONVERTED, len(images), time.perf_counter() - started)
    if (
        sample is not None and len(images) > sample
    ):  # a converter that does not sample before decoding
        idx = sample_indices(len(images), sample, seed)
        images, labels = images[idx], labels[idx]
    save_dataset(out, images, labels)
