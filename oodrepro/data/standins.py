"""Small stand-ins, in the real release formats, for every archive the registry names.

A rehearsal (`oodrepro.rehearsal`) downloads these through `file://` instead of the real
releases, so that each converter, checkpoint import and rule of a preset runs on data that
takes seconds; the tests build the same archives to check the converters value by value.
Every builder is seeded and returns the paths it wrote plus what the converter must read
back (`train`/`test` arrays, `images`, `arrays`).
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from . import ARCHIVES


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _balanced_labels(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    """Every class as often as n allows, in a random order (class statistics need every class)."""
    return rng.permutation(np.arange(n) % classes)


def cifar(root: Path, classes: int, n_per_file: int = 6, seed: int = 0) -> dict:
    """cifar-10-python.tar.gz / cifar-100-python.tar.gz: pickled batches of random images."""
    rng = np.random.default_rng(seed)
    if classes == 10:
        folder, names, key = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
            "labels",
        )
        filename = "cifar-10-python.tar.gz"
    else:
        folder, names, key = "cifar-100-python", ["train", "test"], "fine_labels"
        filename = "cifar-100-python.tar.gz"
    expected = {"train": ([], []), "test": ([], [])}
    path = root / filename
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            images = rng.integers(0, 256, (n_per_file, 32, 32, 3), dtype=np.uint8)
            labels = _balanced_labels(rng, n_per_file, classes).tolist()
            batch = {"data": images.transpose(0, 3, 1, 2).reshape(n_per_file, -1), key: labels}
            _add_bytes(tar, f"{folder}/{name}", pickle.dumps(batch))
            split = "test" if "test" in name else "train"
            expected[split][0].append(images)
            expected[split][1].append(np.array(labels))
    return {
        "paths": [path],
        **{s: (np.concatenate(x), np.concatenate(y)) for s, (x, y) in expected.items()},
    }


def svhn(root: Path, n: int = 7, seed: int = 1) -> dict:
    """test_32x32.mat: MATLAB arrays X (32×32×3×N) and y (N×1), digit 0 stored as label 10."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(1, 11, n)
    path = root / "test_32x32.mat"
    savemat(path, {"X": images.transpose(1, 2, 3, 0), "y": labels[:, None]})
    return {"paths": [path], "images": images, "labels": np.where(labels == 10, 0, labels)}


def image_folder_tar(
    root: Path, filename: str, top: str, sizes: list[tuple[int, int]], seed: int = 2
) -> dict:
    """A tar.gz of PNG images under `top/` (two class folders), like DTD and the ODIN releases;
    `arrays` in torchvision's ImageFolder order (folder a, then b)."""
    rng = np.random.default_rng(seed)
    arrays = []
    path = root / filename
    with tarfile.open(path, "w:gz") as tar:
        for i, (w, h) in enumerate(sizes):
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            arrays.append(img)
            _add_bytes(tar, f"{top}/{'ab'[i % 2]}/img_{i:03d}.png", _png(img))
    order = [i for i in range(len(sizes)) if i % 2 == 0] + [
        i for i in range(len(sizes)) if i % 2 == 1
    ]
    return {"paths": [path], "arrays": [arrays[i] for i in order]}


def places365(root: Path, n: int = 5, seed: int = 3) -> dict:
    """filelist_places365-standard.tar and val_256.tar with n 256×256 images."""
    rng = np.random.default_rng(seed)
    lists = root / "filelist_places365-standard.tar"
    names = [f"Places365_val_{i + 1:08d}.jpg" for i in range(n)]
    with tarfile.open(lists, "w") as tar:
        _add_bytes(tar, "categories_places365.txt", b"/a/abbey 0\n/b/beach 1\n")
        _add_bytes(
            tar,
            "places365_val.txt",
            "".join(f"{m} {i % 2}\n" for i, m in enumerate(names)).encode(),
        )
    images = root / "val_256.tar"
    arrays = []
    with tarfile.open(images, "w") as tar:
        for m in names:
            img = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
            arrays.append(img)
            _add_bytes(
                tar, f"val_256/{m}", _png(img)
            )  # PNG bytes under a .jpg name: PIL reads by content
    return {"paths": [lists, images], "arrays": arrays}


def mnist(root: Path, n: int = 6, seed: int = 4, prefix: str = "t10k") -> dict:
    """{prefix}-images/labels-idx*-ubyte.gz in the IDX format (MNIST's names; Fashion-MNIST's with
    prefix `fashion-mnist-train` or `fashion-mnist-t10k`)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    img_path, lbl_path = (
        root / f"{prefix}-images-idx3-ubyte.gz",
        root / f"{prefix}-labels-idx1-ubyte.gz",
    )
    with gzip.open(img_path, "wb") as fh:
        fh.write(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
    with gzip.open(lbl_path, "wb") as fh:
        fh.write(struct.pack(">II", 0x801, n) + labels.tobytes())
    return {"paths": [img_path, lbl_path], "images": images, "labels": labels}


def lsun_test_lmdb(root: Path, n: int = 4, seed: int = 5) -> dict:
    """test_lmdb.zip: an LMDB of encoded images under test_lmdb/, as the LSUN release."""
    import lmdb

    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (48 + 8 * (i % 4), 64, 3), dtype=np.uint8) for i in range(n)]
    db = root / "lmdb-build" / "test_lmdb"
    db.mkdir(parents=True)
    env = lmdb.open(str(db), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i, a in enumerate(arrays):
            txn.put(f"{i:040x}".encode(), _png(a))
    env.close()
    path = root / "test_lmdb.zip"
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(db.iterdir()):
            z.write(f, f"test_lmdb/{f.name}")
    return {"paths": [path], "arrays": arrays}


def tin200(root: Path, n: int = 5, seed: int = 6) -> dict:
    """tiny-imagenet-200.zip with n 64×64 test images (and a train image that must be ignored)."""
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)]
    path = root / "tiny-imagenet-200.zip"
    with zipfile.ZipFile(path, "w") as z:
        for i, a in enumerate(arrays):
            z.writestr(f"tiny-imagenet-200/test/images/test_{i}.JPEG", _png(a))
        z.writestr("tiny-imagenet-200/train/n01/images/n01_0.JPEG", _png(arrays[0]))
    return {"paths": [path], "arrays": arrays}


def random_images_npy(root: Path, n: int = 64, seed: int = 7) -> dict:
    """300K_random_images.npy: one N×32×32×3 uint8 array, as Hendrycks' release."""
    images = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    path = root / "300K_random_images.npy"
    np.save(path, images)
    return {"paths": [path], "images": images}


def watermarknn_repository(root: Path, n: int = 20, seed: int = 8) -> dict:
    """WatermarkNN-448bf51.zip: the repository archive with data/trigger_set/pics/{1..n}.jpg and
    labels-cifar.txt (one label per line, for the files in string order)."""
    rng = np.random.default_rng(seed)
    names = sorted(f"{i}.jpg" for i in range(1, n + 1))
    arrays = {
        m: rng.integers(0, 256, (48 + 4 * (i % 3), 64, 3), dtype=np.uint8)
        for i, m in enumerate(names)
    }
    labels = rng.integers(0, 10, n)
    path = root / "WatermarkNN-448bf51.zip"
    top = "WatermarkNN-448bf51/data/trigger_set"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{top}/labels-cifar.txt", "".join(f"{v}\n" for v in labels))
        for m in names:
            z.writestr(f"{top}/pics/{m}", _png(arrays[m]))
    return {"paths": [path], "arrays": [arrays[m] for m in names], "labels": labels}


def _calibrate(model, batches: int, size: int) -> None:
    """BatchNorm statistics of the model's own activations on random images (a cumulative
    average over `batches` of `size`), as a trained network's are of its data; then eval mode."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    with torch.no_grad():
        for _ in range(batches):
            model(torch.rand(size, 3, 32, 32))
    model.eval()


def to_hendrycks_wrn_keys(state: dict, per_stage: int) -> dict:
    """Our WRN names → the Hendrycks release's names (inverse of `models.hendrycks_wrn_keys`)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "blocks":
            i = int(parts[1])
            rest = ["convShortcut" if p == "shortcut" else p for p in parts[2:]]
            key = ".".join([f"block{i // per_stage + 1}", "layer", str(i % per_stage), *rest])
        elif parts[0] == "bn":
            key = ".".join(["bn1", *parts[1:]])
        out[key] = value
    return out


def hendrycks_wrn(root: Path, filename: str, classes: int, seed: int = 9) -> dict:
    """A seeded WRN-40-2 saved under the Energy-OOD release's key names (a state dict).

    Its BatchNorm statistics are those of its own activations on random images, as a trained
    network's are of its data: with the initial statistics (mean 0, variance 1) the 40 layers
    blow the logits up to ~100, where the energy watermark's exp(T·logit) overflows and no
    released checkpoint would ever be."""
    import torch

    from .. import models

    torch.manual_seed(seed)
    model = models.build(
        "wrn40_2", num_classes=classes, dropout=0.3, normalization="hendrycks-cifar"
    )
    _calibrate(model, batches=4, size=64)
    path = root / filename
    torch.save(to_hendrycks_wrn_keys(model.state_dict(), per_stage=len(model.blocks) // 3), path)
    return {"paths": [path]}


def to_unleashing_mask_keys(state: dict) -> dict:
    """Our DenseNet names → the Unleashing Mask release's, under DataParallel's `module.` prefix
    (inverse of `models.unleashing_mask_keys`)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "stages" and int(parts[1]) % 2 == 0:
            parts = [f"block{int(parts[1]) // 2 + 1}", "layer", *parts[2:]]
        elif parts[0] == "stages":
            layer = {"bn": "bn1", "conv": "conv1"}[parts[2]]
            parts = [f"trans{(int(parts[1]) + 1) // 2}", layer, *parts[3:]]
        elif parts[0] == "bn":
            parts = ["bn1", *parts[1:]]
        out["module." + ".".join(parts)] = value
    return out


def unleashing_mask_densenet(root: Path, filename: str, classes: int, seed: int = 12) -> dict:
    """A seeded DenseNet-BC-100 saved as the Unleashing Mask release is: a dict with its `arch`,
    `epoch` and training accuracy beside the state dict in the official key layout. BatchNorm
    statistics calibrated on random images, as `hendrycks_wrn`'s."""
    import torch

    from .. import models

    torch.manual_seed(seed)
    model = models.build(
        "densenet100",
        num_classes=classes,
        affine_bn=False,
        dropout=0.3,
        normalization="hendrycks-cifar",
    )
    _calibrate(model, batches=2, size=32)
    path = root / filename
    released = {"epoch": 100, "arch": "DenseNet", "best_train_acc1": 0.0, "best_train_acc5": 0.0}
    torch.save({**released, "state_dict": to_unleashing_mask_keys(model.state_dict())}, path)
    return {"paths": [path]}


def to_openood_keys(state: dict, per_stage: int) -> dict:
    """Our ResNet names → OpenOOD's ResNet18_32x32 names (inverse of `models.openood_keys`)."""
    out = {}
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "stem":
            index, _, rest = rest.partition(".")
            key = f"{'conv1' if index == '0' else 'bn1'}.{rest}"
        elif head == "blocks":
            index, _, rest = rest.partition(".")
            stage, block = divmod(int(index), per_stage)
            key = f"layer{stage + 1}.{block}.{rest}"
        out[key] = value
    return out


def openood_checkpoint(path: Path, classes: int, seed: int) -> dict:
    """A seeded ResNet-18 saved as OpenOOD v1.5 saves its checkpoints: a state dict under its
    ResNet18_32x32 key names (`best.ckpt`), BatchNorm statistics calibrated on random images."""
    import torch

    from .. import models

    torch.manual_seed(seed)
    model = models.build("resnet18", num_classes=classes, normalization=f"openood-cifar{classes}")
    _calibrate(model, batches=2, size=32)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(to_openood_keys(model.state_dict(), per_stage=2), path)
    return {"paths": [path]}


def openood_data(root: Path, imglists: list[str], n: int, classes: dict[str, int]) -> dict:
    """OpenOOD's data folder for the given lists (`<benchmark>/<file>` under benchmark_imglist/):
    each list names its own PNG files under images_classic/ (sizes vary, as the real sets' do:
    32×32, 64×64, 28×28 grey, larger photos), labelled 0.. for an ID list of a benchmark with
    `classes[benchmark]` classes (every class at least twice), −1 for an OOD list. A training list
    holds 2.5 n images, as the CIFAR stand-in's five training batches do."""
    written = {}
    for k, listed in enumerate(imglists):
        bench, filename = listed.split("/")
        split, _, source = filename.removesuffix(".txt").partition("_")
        rng = np.random.default_rng(zlib.crc32(listed.encode()))
        is_id = source == bench
        # a training list as large as the CIFAR stand-in's (KNN's k = 50 needs more than 50)
        count = max(5 * (n // 2), 2 * classes[bench]) if is_id and split == "train" else n
        labels = _balanced_labels(rng, count, classes[bench]) if is_id else np.full(count, -1)
        shape = {"tin": (64, 64, 3), "mnist": (28, 28), "texture": (48, 40, 3)}.get(
            source, (32, 32, 3)
        )
        lines = []
        for i in range(count):
            name = f"{source}/{split}/{bench}_{k}_{i:05d}.png"
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            (root / "images_classic" / name).parent.mkdir(parents=True, exist_ok=True)
            (root / "images_classic" / name).write_bytes(_png(image))
            lines.append(f"{name} {int(labels[i])}\n")
        path = root / "benchmark_imglist" / listed
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(lines))
        written[listed] = path
    return written


def _odin(filename: str, top: str, size: int) -> Callable[[Path, int], dict]:
    def build(root: Path, n: int) -> dict:
        return image_folder_tar(
            root, filename, top, [(size, size)] * n, seed=zlib.crc32(filename.encode()) % 1000
        )

    return build


# Each archive filename → a builder of its stand-in holding about `n` images (the rehearsal's size).
# Two archives written by one builder (Places365's lists and images, MNIST's images and labels)
# share an entry; `build` writes it once.
BUILDERS: dict[str, Callable[[Path, int], dict]] = {
    "cifar-10-python.tar.gz": lambda root, n: cifar(
        root, 10, n_per_file=max(2, n // 2)
    ),  # 5 training batches
    "cifar-100-python.tar.gz": lambda root, n: cifar(
        root, 100, n_per_file=max(100, 5 * n // 2), seed=10
    ),
    "test_32x32.mat": lambda root, n: svhn(root, n=n),
    "dtd-r1.0.1.tar.gz": lambda root, n: image_folder_tar(
        root,
        "dtd-r1.0.1.tar.gz",
        "dtd/images",
        [(64 + 8 * (i % 5), 48 + 8 * (i % 3)) for i in range(n)],
    ),
    "filelist_places365-standard.tar": lambda root, n: places365(root, n=n),
    "val_256.tar": lambda root, n: places365(root, n=n),
    "t10k-images-idx3-ubyte.gz": lambda root, n: mnist(root, n=n),
    "t10k-labels-idx1-ubyte.gz": lambda root, n: mnist(root, n=n),
    **{
        f"fashion-mnist-{split}-{part}": (
            lambda root, n, split=split: mnist(
                root, n=(4 if split == "train" else 1) * n, seed=11, prefix=f"fashion-mnist-{split}"
            )
        )
        for split in ("train", "t10k")
        for part in ("images-idx3-ubyte.gz", "labels-idx1-ubyte.gz")
    },
    "tiny-imagenet-200.zip": lambda root, n: tin200(root, n=n),
    "test_lmdb.zip": lambda root, n: lsun_test_lmdb(root, n=n),
    "300K_random_images.npy": lambda root, n: random_images_npy(root, n=4 * n),
    "WatermarkNN-448bf51.zip": lambda root, n: watermarknn_repository(root, n=20),
    "cifar10_wrn_pretrained_epoch_99.pt": lambda root, n: hendrycks_wrn(
        root, "cifar10_wrn_pretrained_epoch_99.pt", 10
    ),
    "cifar100_wrn_pretrained_epoch_99.pt": lambda root, n: hendrycks_wrn(
        root, "cifar100_wrn_pretrained_epoch_99.pt", 100
    ),
    **{
        f"densenet_{bench}_{stage}.state": (
            lambda root, n, name=f"densenet_{bench}_{stage}.state", k=classes, seed=seed: (
                unleashing_mask_densenet(root, name, k, seed)
            )
        )
        for bench, classes in (("cifar10", 10), ("cifar100", 100))
        for stage, seed in (("best", 12), ("last", 13))
    },
    "LSUN.tar.gz": _odin("LSUN.tar.gz", "LSUN", 36),
    "LSUN_resize.tar.gz": _odin("LSUN_resize.tar.gz", "LSUN_resize", 32),
    "iSUN.tar.gz": _odin("iSUN.tar.gz", "iSUN", 32),
    "Imagenet.tar.gz": _odin("Imagenet.tar.gz", "Imagenet", 36),
    "Imagenet_resize.tar.gz": _odin("Imagenet_resize.tar.gz", "Imagenet_resize", 32),
}
assert set(BUILDERS) == set(ARCHIVES), "every registered archive needs a stand-in builder"


def build(filenames, root: Path, n: int) -> dict[str, Path]:
    """Write the stand-ins of `filenames` into `root` (about `n` images each); filename → path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for name in filenames:
        if name not in written:
            for path in BUILDERS[name](root, n)["paths"]:
                written[path.name] = path
    return {name: written[name] for name in filenames}
