"""Checksummed downloads and conversion of released archives to 32×32 uint8 arrays.

A downloaded file is verified before it is given its final name; a file whose checksum
does not match is deleted and the error names it, so a corrupt archive is never used.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable
from urllib.error import HTTPError

import numpy as np
from PIL import Image

from ..progress import count as progress_counter
from ..progress import tenths
from ..sampling import sample_indices

SIZE = 32
log = logging.getLogger(__name__)


class ChecksumError(RuntimeError):
    pass


@dataclass(frozen=True)
class Archive:
    """A released file: where it lives and the checksum it must have."""

    filename: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    # the git blob id of a file released in a git repository: SHA-1 of b"blob <size>\0" + content,
    # so the content is pinned from any mirror before its sha256 is known
    git_blob: str | None = None
    unverified: bool = False  # no checksum is published: the config must pin one
    # bytes of the released file, where recorded (a rehearsal's download estimate)
    size: int | None = None
    # sha256 of the gunzipped content: a recompressed copy of the same data (a distribution's
    # package) verifies by it when the release's own checksum cannot match
    content_sha256: str | None = None
    # where a distribution package installs a copy, read instead of the network when present,
    # and how to install that package (said when neither the copy nor the network is there)
    local_copy: str | None = None
    local_package: str | None = None

    def __post_init__(self):
        if not (self.md5 or self.sha256 or self.git_blob or self.unverified):
            raise ValueError(f"archive {self.filename} has no checksum")
        if (self.local_copy is None) != (self.local_package is None):
            raise ValueError(
                f"archive {self.filename}: a local copy needs the package that installs it"
            )


def file_digest(path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


PINS = ("md5", "sha256", "git_blob")  # the checksums that can pin an archive


def git_blob_id(path) -> str:
    """The id git gives the file's content: SHA-1 of b"blob <size>\0" followed by the bytes."""
    h = hashlib.sha1(f"blob {Path(path).stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def content_digest(path) -> str:
    """sha256 of a gzip file's decompressed bytes."""
    import gzip

    h = hashlib.sha256()
    with gzip.open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(
    path,
    md5: str | None = None,
    sha256: str | None = None,
    content_sha256: str | None = None,
    git_blob: str | None = None,
) -> None:
    """Raise ChecksumError naming `path` (and delete it) when a checksum does not match.

    With `content_sha256`, a file whose own checksum differs still verifies when its gunzipped
    content has that sha256: the same data, compressed again."""
    if content_sha256 is not None:
        try:
            if content_digest(path) == content_sha256.lower():
                return
        except OSError:  # not gzip at all: the file checksums below decide
            pass
    for algorithm, expected in (("sha256", sha256), ("md5", md5), ("git blob id", git_blob)):
        if expected is None:
            continue
        actual = git_blob_id(path) if algorithm == "git blob id" else file_digest(path, algorithm)
        if actual != expected.lower():
            Path(path).unlink(missing_ok=True)
            raise ChecksumError(
                f"{algorithm} mismatch for {Path(path).name}: expected {expected}, got {actual}; "
                "the file was deleted"
            )


class DownloadError(OSError):
    """An archive could not be fetched; the message names the archive, the URL and the way out."""


RETRIES = 5  # attempts per download; a broken connection resumes where it stopped
TIMEOUT = 60  # seconds without data before an attempt is given up


def _fetch_into(url: str, part: Path, report) -> None:
    """Append `url`'s bytes to `part` from its current size (an HTTP range request); a server
    that ignores the range (or a file:// URL) sends the whole file, which then starts over."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
        resumed = have and getattr(response, "status", None) == 206
        length = int(response.headers.get("Content-Length") or 0)
        add = report((have if resumed else 0) + length or None)
        if resumed:
            add(have)
        got = 0
        with open(part, "ab" if resumed else "wb") as fh:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                fh.write(chunk)
                got += len(chunk)
                add(len(chunk))
    if length and got < length:  # the connection closed early: what came is kept
        raise ConnectionError(f"the connection closed after {got} of {length} bytes")


def download(
    url: str,
    dest,
    md5: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    content_sha256: str | None = None,
    retries: int = RETRIES,
    pinned: bool = True,
    git_blob: str | None = None,
) -> Path:
    """Download `url` to `dest`, verifying the checksum before the file takes its final name.

    Bytes arrive in `.<name>.part` beside `dest`: a failed attempt is retried (after 1, 2, 4 …
    s) from where it stopped, and so is a download killed and started again. `pinned=False`
    takes a file no checksum pins yet (the caller records its sha256: data.lock)."""
    if pinned and not (md5 or sha256 or git_blob):
        raise ValueError(
            f"refusing to download {url} without a checksum: no checksum is published for "
            f"{Path(dest).name}; `make fetch CONFIG=<config>` downloads it and records its "
            "sha256, or pin one you trust under "
            f"downloads.{Path(dest).name}.sha256"
        )
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.part")
    report = partial(progress_counter, desc=dest.name, show=progress)
    for attempt in range(1, retries + 1):
        try:
            _fetch_into(url, part, report)
        except HTTPError as err:
            if err.code == 416 and part.exists():  # nothing past what `part` holds: complete
                break
            reason, lasting = err.reason, err.code < 500  # a missing file stays missing
        except (OSError, ValueError) as err:  # URLError, timeouts, a malformed URL
            reason = getattr(err, "reason", None) or err
            lasting = isinstance(err, ValueError) or url.startswith("file:")  # no network
        else:
            break
        if attempt < retries and not lasting:
            log.warning("%s: attempt %d failed (%s); retrying", dest.name, attempt, reason)
            time.sleep(2 ** (attempt - 1))
            continue
        raise DownloadError(
            f"could not download {dest.name} from {url} ({attempt} attempt(s)): {reason}. "
            f"Point the config at a mirror or a local copy: downloads: {{{dest.name}: {{url: "
            f"'https://mirror/{dest.name}'}}}} (file:///path/to/{dest.name} works too), or put "
            f"the file at {dest} yourself; its checksum is verified either way"
        ) from None
    try:
        verify(part, md5=md5, sha256=sha256, content_sha256=content_sha256, git_blob=git_blob)
    except ChecksumError as err:
        raise ChecksumError(str(err).replace(part.name, dest.name)) from None
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- recipes
def to_rgb32(img: Image.Image, recipe: str) -> np.ndarray:
    """Bring one PIL image to 32×32 RGB by a named recipe (docs/README.md, conventions).

    crop32: resize the short side to 32 (bilinear) and centre-crop; 32×32 passes as is.
    centre32: centre-crop 32×32 without resizing (LSUN-crop's 36×36 copies, WatermarkNN's
    triggers), the origin rounded as torchvision's CenterCrop rounds it.
    squash-bilinear / squash-lanczos: resize to 32×32, aspect ratio not kept.
    openood: OpenOOD v1.5's test transform for 32×32 benchmarks, torchvision's
    Resize(32, bilinear) then CenterCrop(32) (crop32 up to rounding); 32×32 passes as is.
    """
    img = img.convert("RGB")
    w, h = img.size
    if recipe == "crop32":
        if (w, h) != (SIZE, SIZE):
            scale = SIZE / min(w, h)
            img = img.resize(
                (max(SIZE, round(w * scale)), max(SIZE, round(h * scale))), Image.BILINEAR
            )
            w, h = img.size
            left, top = (w - SIZE) // 2, (h - SIZE) // 2
            img = img.crop((left, top, left + SIZE, top + SIZE))
    elif recipe == "centre32":
        if min(w, h) < SIZE:
            raise ValueError(f"centre32 needs images of at least 32×32, got {w}×{h}")
        left, top = int(round((w - SIZE) / 2.0)), int(round((h - SIZE) / 2.0))
        img = img.crop((left, top, left + SIZE, top + SIZE))
    elif recipe == "openood":
        from torchvision import transforms

        resize = transforms.Resize(SIZE, interpolation=transforms.InterpolationMode.BILINEAR)
        img = transforms.CenterCrop(SIZE)(resize(img))
    elif recipe == "squash-bilinear":
        img = img.resize((SIZE, SIZE), Image.BILINEAR)
    elif recipe == "squash-lanczos":
        img = img.resize((SIZE, SIZE), Image.LANCZOS)
    else:
        raise ValueError(f"unknown recipe {recipe!r}")
    return np.asarray(img, dtype=np.uint8)


def _extract(archive: Path, into: Path) -> None:
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            z.extractall(into)
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")


def _stack(images) -> np.ndarray:
    return (
        np.stack(list(images)).astype(np.uint8)
        if images
        else np.zeros((0, SIZE, SIZE, 3), np.uint8)
    )


def _image_folder(
    root: Path, recipe: str, sample: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """All images under `root` (torchvision's ImageFolder order), converted by `recipe`."""
    from torchvision.datasets import ImageFolder

    folder = ImageFolder(str(root))
    idx = sample_indices(len(folder.samples), sample, seed)
    images = [
        to_rgb32(folder.loader(folder.samples[i][0]), recipe)
        for i in tenths(idx, desc=root.name, unit="images")
    ]
    return _stack(images), np.full(len(idx), -1, np.int64)


# --------------------------------------------------------------------------- converters
def _verified(dataset_class):
    """A torchvision dataset class whose md5 check of the extracted files is skipped.

    Our archives were verified by checksum at download; torchvision's md5s of the official
    files would only reject the small copies in the real format that the tests build.
    """
    return type(
        dataset_class.__name__, (dataset_class,), {"_check_integrity": lambda self, *args: True}
    )


def convert_cifar(archives: list[Path], work: Path, *, classes: int, train: bool, **_) -> tuple:
    """CIFAR-10/100 from the python release's pickled batches.

    torchvision's CIFAR classes hard-code per-file md5s of the official release, so they
    cannot read a verified local copy built for tests; the archive's own checksum, checked
    at download, covers the same bytes, so the batches are read here directly.
    """
    import pickle

    _extract(archives[0], work)
    folder = work / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    if classes == 10:
        names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    else:
        names = ["train"] if train else ["test"]
    key = "labels" if classes == 10 else "fine_labels"
    images, labels = [], []
    for name in names:
        with open(folder / name, "rb") as fh:
            batch = pickle.load(fh, encoding="latin1")
        images.append(
            np.asarray(batch["data"], np.uint8).reshape(-1, 3, SIZE, SIZE).transpose(0, 2, 3, 1)
        )
        labels.append(np.asarray(batch[key], np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def convert_svhn(archives: list[Path], work: Path, **_) -> tuple:
    """SVHN test split (26,032) through torchvision's class (which maps label 10 to digit 0)."""
    from torchvision.datasets import SVHN

    os.symlink(archives[0].resolve(), work / "test_32x32.mat")
    ds = _verified(SVHN)(str(work), split="test", download=False)
    return np.ascontiguousarray(ds.data.transpose(0, 2, 3, 1)), np.asarray(ds.labels, np.int64)


def convert_mnist(archives: list[Path], work: Path, *, recipe: str, sample=None, seed=0, **_):
    """MNIST test (10,000, 28×28 grey) through torchvision's class, brought to 32×32 RGB by
    `recipe`."""
    import gzip
    import shutil

    from torchvision.datasets import MNIST

    raw = work / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for archive in archives:
        with gzip.open(archive) as src, open(raw / archive.name.removesuffix(".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    # Only the test files are fetched; the subclass keeps the name torchvision's folder layout uses.
    test_only = type(
        "MNIST", (MNIST,), {"resources": [r for r in MNIST.resources if r[0].startswith("t10k")]}
    )
    ds = test_only(str(work), train=False, download=False)
    idx = sample_indices(len(ds), sample, seed)
    images = [to_rgb32(Image.fromarray(ds.data[i].numpy()), recipe) for i in idx]
    return _stack(images), ds.targets.numpy()[idx].astype(np.int64)


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (gzipped or not): magic 0, 0, 0x08, ndim; big-endian dims."""
    import gzip

    with (gzip.open if Path(path).suffix == ".gz" else open)(path, "rb") as fh:
        raw = fh.read()
    if raw[:3] != b"\x00\x00\x08":
        raise ValueError(f"{Path(path).name}: not an unsigned-byte IDX file")
    dims = np.frombuffer(raw, ">u4", raw[3], 4).astype(np.int64)
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * raw[3]).reshape(dims)


def convert_idx(archives: list[Path], work: Path, *, recipe: str, sample=None, seed=0, **_):
    """An IDX images file and its IDX labels file (Fashion-MNIST), 28×28 grey to 32×32 RGB."""
    images, labels = read_idx(archives[0]), read_idx(archives[1])
    if len(images) != len(labels):
        raise ValueError(f"{archives[0].name}: {len(images)} images but {len(labels)} labels")
    idx = sample_indices(len(images), sample, seed)
    return _stack([to_rgb32(Image.fromarray(images[i]), recipe) for i in idx]), labels[idx].astype(
        np.int64
    )


def convert_folder(
    archives: list[Path], work: Path, *, subdir: str, recipe: str, sample=None, seed=0, **_
):
    """An archive of image files (DTD, the ODIN releases) read as one ImageFolder."""
    _extract(archives[0], work)
    return _image_folder(work / subdir, recipe, sample, seed)


def convert_lsun_test(archives: list[Path], work: Path, *, recipe: str, sample=None, seed=0, **_):
    """The LSUN test set (10,000 scenes) from its LMDB release.

    Read with `lmdb` directly: torchvision's LSUN class writes a key cache into the working
    directory and unpickles it on later runs, which a pipeline job must not do.
    """
    import io

    import lmdb

    _extract(archives[0], work)
    env = lmdb.open(
        str(work / "test_lmdb"), readonly=True, lock=False, readahead=False, meminit=False
    )
    with env.begin(write=False) as txn:
        keys = [k for k in txn.cursor().iternext(keys=True, values=False)]
        idx = sample_indices(len(keys), sample, seed)
        images = [
            to_rgb32(Image.open(io.BytesIO(txn.get(keys[i]))), recipe)
            for i in tenths(idx, desc="lsun test", unit="images")
        ]
    env.close()
    return _stack(images), np.full(len(idx), -1, np.int64)


def convert_places365(archives: list[Path], work: Path, *, recipe: str, sample=None, seed=0, **_):
    """A seeded sample of Places365's 36,500 validation images (small, 256×256) via torchvision."""
    from torchvision.datasets import Places365

    for archive in archives:
        _extract(archive, work)
    ds = _verified(Places365)(str(work), split="val", small=True, download=False)
    idx = sample_indices(len(ds.imgs), sample, seed)
    images = [
        to_rgb32(ds.loader(ds.imgs[i][0]), recipe)
        for i in tenths(idx, desc="places365", unit="images")
    ]
    return _stack(images), np.full(len(idx), -1, np.int64)


def convert_npy_images(archives: list[Path], work: Path, *, sample=None, seed=0, **_):
    """A released N×32×32×3 uint8 .npy array (Hendrycks' 300K random images), seeded sample,
    read memory-mapped so that only the sampled images are loaded."""
    array = np.load(archives[0], mmap_mode="r", allow_pickle=False)
    if array.dtype != np.uint8 or array.shape[1:] != (SIZE, SIZE, 3):
        raise ValueError(
            f"{archives[0].name}: expected uint8 N×32×32×3 images, got {array.dtype} {array.shape}"
        )
    idx = sample_indices(len(array), sample, seed)
    return np.ascontiguousarray(array[idx]), np.full(len(idx), -1, np.int64)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def convert_user_folder(
    archives: list[Path],
    work: Path,
    *,
    recipe: str,
    folder: str | None = None,
    sample=None,
    seed=0,
    **_,
):
    """Every image file under a user's `folder` (any nesting, sorted by path), by `recipe`."""
    if folder is None:
        raise ValueError("this dataset is read from a folder: set dataset_options.<name>.folder")
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no image files under {folder}")
    idx = sample_indices(len(files), sample, seed)
    images = [
        to_rgb32(Image.open(files[i]), recipe)
        for i in tenths(idx, desc=Path(folder).name, unit="images")
    ]
    return _stack(images), np.full(len(idx), -1, np.int64)


def read_imglist(path) -> list[tuple[str, int]]:
    """OpenOOD's image list: one `relative/path label` line per image (label −1 for OOD)."""
    entries = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        name, _, label = line.strip().partition(" ")
        if not label or name.startswith("/"):
            raise ValueError(
                f"{path}, line {n}: expected '<path under images_classic/> <label>', got {line!r}"
            )
        entries.append((name, int(label)))
    return entries


def convert_imglist(
    archives: list[Path],
    work: Path,
    *,
    recipe: str,
    imglist: str,
    folder: str | None = None,
    sample=None,
    seed=0,
    **_,
):
    """Exactly the images an OpenOOD v1.5 image list names, in its order, with its labels.

    `folder` is OpenOOD's data folder: the list is `benchmark_imglist/<imglist>`, its paths are
    under `images_classic/`. A named image that is missing is an error, not a shorter set."""
    if folder is None:
        raise ValueError("OpenOOD's image lists are read from its data folder: set openood.data")
    root = Path(folder)
    entries = read_imglist(root / "benchmark_imglist" / imglist)
    missing = [name for name, _ in entries if not (root / "images_classic" / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(entries)} images of {imglist} are not under "
            f"{root / 'images_classic'} (first: {missing[0]}); download the images with "
            "OpenOOD's scripts/download/download.py (docs/openood-v15.md)"
        )
    idx = sample_indices(len(entries), sample, seed)
    images = [
        to_rgb32(Image.open(root / "images_classic" / entries[i][0]), recipe)
        for i in tenths(idx, desc=imglist, unit="images")
    ]
    return _stack(images), np.array([entries[i][1] for i in idx], np.int64)


def convert_triggers(
    archives: list[Path], work: Path, *, recipe: str, folder: str | None = None, **_
):
    """WatermarkNN's 100 trigger images and their secret labels (docs/watermarknn.md).

    From the repository archive, or from a `folder` holding `labels-cifar.txt` and the
    images (in `pics/`). Line i of the labels file belongs to the i-th file in
    *string-sorted* order (1, 10, 100, 11, …), the order the original loader reads.
    """
    if folder is None:
        _extract(archives[0], work)
        root = work
    else:
        root = Path(folder)
    found = sorted(root.rglob("labels-cifar.txt"))
    if not found:
        raise FileNotFoundError(f"no labels-cifar.txt under {root}")
    labels_file = found[0]
    pics = labels_file.parent / "pics"
    pics = pics if pics.is_dir() else labels_file.parent
    files = sorted(f.name for f in pics.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
    labels = np.array([int(float(v)) for v in labels_file.read_text().split()], np.int64)
    if len(labels) != len(files):
        raise ValueError(
            f"{labels_file} has {len(labels)} labels for {len(files)} images in {pics}"
        )
    images = [to_rgb32(Image.open(pics / name), recipe) for name in files]
    return _stack(images), labels


# converters that decode without torchvision; every other one imports it lazily
_WITHOUT_TORCHVISION = ("convert_cifar", "convert_npy_images", "convert_idx")


def preload(converter: Callable) -> None:
    """Import what `converter` imports lazily, so that timing it measures the conversion alone
    (the cost estimate scales that with the images; imports are start-up)."""
    if converter.__name__ not in _WITHOUT_TORCHVISION:
        import scipy.io  # noqa: F401  (torchvision's SVHN reads .mat files with it)
        import torchvision.datasets  # noqa: F401
        import torchvision.transforms  # noqa: F401


def convert(converter: Callable, archives: list[Path], **params) -> tuple[np.ndarray, np.ndarray]:
    """Run a converter in a scratch directory that is removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="oodrepro-") as work:
        return converter([Path(a) for a in archives], Path(work), **params)
