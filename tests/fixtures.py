"""Small archives in the real release formats, and a local HTTP server that serves them.

The downloaders are tested offline against these: every archive is built here, from a
seed, with known contents, so the converted arrays can be checked value by value.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from pathlib import Path

import numpy as np
from PIL import Image


def md5(path) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def cifar(root: Path, classes: int, n_per_file: int = 6, seed: int = 0) -> dict:
    """cifar-10-python.tar.gz / cifar-100-python.tar.gz with random images; returns expected arrays."""
    rng = np.random.default_rng(seed)
    if classes == 10:
        folder, names, key = "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], "labels"
        filename = "cifar-10-python.tar.gz"
    else:
        folder, names, key = "cifar-100-python", ["train", "test"], "fine_labels"
        filename = "cifar-100-python.tar.gz"
    expected = {"train": ([], []), "test": ([], [])}
    path = root / filename
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            images = rng.integers(0, 256, (n_per_file, 32, 32, 3), dtype=np.uint8)
            labels = rng.integers(0, classes, n_per_file).tolist()
            batch = {"data": images.transpose(0, 3, 1, 2).reshape(n_per_file, -1), key: labels}
            _add_bytes(tar, f"{folder}/{name}", pickle.dumps(batch))
            split = "test" if "test" in name else "train"
            expected[split][0].append(images)
            expected[split][1].append(np.array(labels))
    return {"path": path, **{s: (np.concatenate(i), np.concatenate(l)) for s, (i, l) in expected.items()}}


def svhn(root: Path, n: int = 7, seed: int = 1) -> dict:
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(1, 11, n)  # SVHN stores digit 0 as label 10
    path = root / "test_32x32.mat"
    savemat(path, {"X": images.transpose(1, 2, 3, 0), "y": labels[:, None]})
    return {"path": path, "images": images, "labels": np.where(labels == 10, 0, labels)}


def image_folder_tar(root: Path, filename: str, top: str, sizes: list[tuple[int, int]], seed: int = 2) -> dict:
    """A tar.gz of PNG images under `top/` (two class folders), like DTD and the ODIN releases."""
    rng = np.random.default_rng(seed)
    arrays = []
    path = root / filename
    with tarfile.open(path, "w:gz") as tar:
        for i, (w, h) in enumerate(sizes):
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            arrays.append(img)
            _add_bytes(tar, f"{top}/{'ab'[i % 2]}/img_{i:03d}.png", _png(img))
    # ImageFolder order: class folder a, then b; files sorted within each
    order = [i for i in range(len(sizes)) if i % 2 == 0] + [i for i in range(len(sizes)) if i % 2 == 1]
    return {"path": path, "arrays": [arrays[i] for i in order]}


def places365(root: Path, n: int = 5, seed: int = 3) -> dict:
    """filelist_places365-standard.tar and val_256.tar with n 256×256 images."""
    rng = np.random.default_rng(seed)
    lists = root / "filelist_places365-standard.tar"
    names = [f"Places365_val_{i + 1:08d}.jpg" for i in range(n)]
    with tarfile.open(lists, "w") as tar:
        _add_bytes(tar, "categories_places365.txt", b"/a/abbey 0\n/b/beach 1\n")
        _add_bytes(tar, "places365_val.txt", "".join(f"{m} {i % 2}\n" for i, m in enumerate(names)).encode())
    images = root / "val_256.tar"
    arrays = []
    with tarfile.open(images, "w") as tar:
        for m in names:
            img = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
            arrays.append(img)
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")  # PNG bytes under a .jpg name: PIL reads by content
            _add_bytes(tar, f"val_256/{m}", buf.getvalue())
    return {"paths": [lists, images], "arrays": arrays}


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class LocalServer:
    """Serve a directory on 127.0.0.1 (a free port) for the duration of a test."""

    def __init__(self, directory: Path):
        handler = functools.partial(_Quiet, directory=str(directory))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def mnist(root: Path, n: int = 6, seed: int = 4) -> dict:
    """t10k-images/labels-idx*-ubyte.gz in the IDX format."""
    import gzip
    import struct

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    img_path, lbl_path = root / "t10k-images-idx3-ubyte.gz", root / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(img_path, "wb") as fh:
        fh.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
    with gzip.open(lbl_path, "wb") as fh:
        fh.write(struct.pack(">II", 0x801, n) + labels.tobytes())
    return {"paths": [img_path, lbl_path], "images": images, "labels": labels}


def lsun_test_lmdb(root: Path, n: int = 4, seed: int = 5) -> dict:
    """test_lmdb.zip: an LMDB of encoded images under test_lmdb/, as the LSUN release."""
    import zipfile

    import lmdb

    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8) for i in range(n)]
    db = root / "lmdb-build" / "test_lmdb"
    db.mkdir(parents=True)
    env = lmdb.open(str(db), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, a in enumerate(arrays):
            txn.put(f"{i:040x}".encode(), _png(a))
    env.close()
    path = root / "test_lmdb.zip"
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(db.iterdir()):
            z.write(f, f"test_lmdb/{f.name}")
    return {"path": path, "arrays": arrays}


def tin200(root: Path, n: int = 5, seed: int = 6) -> dict:
    """tiny-imagenet-200.zip with n 64×64 test images (and a train image that must be ignored)."""
    import zipfile

    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)]
    path = root / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i, a in enumerate(arrays):
            z.writestr(f"tiny-imagenet-200/test/images/test_{i}.JPEG", _png(a))
        z.writestr("tiny-imagenet-200/train/n01/images/n01_0.JPEG", _png(arrays[0]))
    return {"path": path, "arrays": arrays}
