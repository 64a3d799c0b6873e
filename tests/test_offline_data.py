"""The offline benchmark: shapes, determinism, and disjointness of its sets."""

import hashlib

import numpy as np
import pytest

from oodrepro import data
from oodrepro.data import offline

PARAMS = {
    "seed": 0,
    "n_ood": 40,
    "n_outliers": 60,
    "digits_test_fraction": 0.3,
    "n_triggers": 30,
    "trigger_classes": 10,
}
OFFLINE = [n for n, s in data.DATASETS.items() if s.offline is not None]


def build(name, **over):
    return data.get(name)[0].offline({**PARAMS, **over})


@pytest.mark.parametrize("name", OFFLINE)
def test_shapes_and_types(name):
    images, labels = build(name)
    assert images.dtype == np.uint8 and images.ndim == 4 and images.shape[1:] == (32, 32, 3)
    assert labels.dtype == np.int64 and len(labels) == len(images)
    if name.startswith("digits"):
        assert set(np.unique(labels)) == set(range(10))
    elif name == "abstract-triggers":  # secret random labels
        assert len(images) == 30 and labels.min() >= 0 and labels.max() < 10
    elif name == "mnist-5k":  # real digits keep their labels (unused as OOD); n_ood of them
        assert set(np.unique(labels)) <= set(range(10)) and len(images) == PARAMS["n_ood"]
    else:
        assert (labels == -1).all()
        assert len(images) == (PARAMS["n_outliers"] if name == "outliers-aux" else PARAMS["n_ood"])


@pytest.mark.parametrize("name", OFFLINE)
def test_deterministic_from_seed(name):
    a, la = build(name)
    b, lb = build(name)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    if not name.startswith("digits"):
        c, _ = build(name, seed=1)
        assert not np.array_equal(a, c)


def test_digits_split_is_a_stratified_partition():
    train, ltrain = build("digits-train")
    test, ltest = build("digits-test")
    assert len(train) + len(test) == 1797
    assert abs(len(test) / 1797 - 0.3) < 0.01
    hashes = lambda x: {hashlib.sha1(i.tobytes()).hexdigest() for i in x}  # noqa: E731
    # a few digits images are exact duplicates in scikit-learn's data; the split is by index
    assert len(hashes(train) & hashes(test)) <= 5
    counts = np.bincount(ltest) / np.bincount(ltrain)
    assert counts.min() > 0.38 and counts.max() < 0.48


def test_digits_are_grey_upsampled_8x8():
    images, _ = build("digits-test")
    assert (images[..., 0] == images[..., 1]).all() and (images[..., 1] == images[..., 2]).all()


def test_auxiliary_outliers_disjoint_from_every_test_set():
    aux, _ = build("outliers-aux", n_outliers=400)
    aux_hashes = {hashlib.sha1(i.tobytes()).hexdigest() for i in aux}
    for name in OFFLINE:
        if name == "outliers-aux":
            continue
        images, _ = build(name, n_ood=400)
        assert not aux_hashes & {hashlib.sha1(i.tobytes()).hexdigest() for i in images}, name


def test_photo_patches_come_from_disjoint_halves():
    widths = {i: img.shape[1] for i, img in enumerate(offline.photo_sources().values())}
    _, left = offline.photo_patches(300, 0, "left", "photos")
    _, right = offline.photo_patches(300, 0, "right", "aux-photos")
    for p, x0, _, side in left:
        assert x0 + side <= widths[p] // 2
    for p, x0, _, _ in right:
        assert x0 >= widths[p] // 2
    assert len(set(left[:, 0])) == 3  # all three bundled photographs are used


def test_far_sets_have_their_defining_property():
    colour, _ = build("solid-colour")
    assert (colour == colour[:, :1, :1, :]).all()
    uniform, _ = build("uniform-noise", n_ood=200)
    assert abs(uniform.mean() - 127.5) < 2 and uniform.min() == 0 and uniform.max() == 255


def test_glyphs_use_the_digits_grey_levels():
    glyphs, _ = build("glyphs")
    digits, _ = build("digits-test")
    # same pipeline: 8×8 at 17 levels, bilinear ×4 → identical set of corner-pixel values
    levels = set(np.unique(digits[:, 0, 0, 0])) | set(np.unique(glyphs[:, 0, 0, 0]))
    assert levels <= {round(v / 16 * 255) for v in range(17)}


def test_save_dataset_rejects_wrong_shapes(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        data.save_dataset(tmp_path / "x.npz", np.zeros((2, 28, 28, 3), np.uint8), np.zeros(2))
    with pytest.raises(ValueError, match="labels"):
        data.save_dataset(tmp_path / "x.npz", np.zeros((2, 32, 32, 3), np.uint8), np.zeros(3))
