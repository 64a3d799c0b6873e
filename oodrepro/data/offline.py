"""The offline benchmark: data that ships inside our dependencies, plus generated data.

ID is scikit-learn's bundled handwritten digits, upsampled to 32×32 RGB. The OOD sets
run from far (noise, flat colours) to near (letters drawn in the digits' own 8×8,
17-grey-level style). Every builder is deterministic given its seed and returns
uint8 images of shape N×32×32×3 and int64 labels (-1 for unlabelled OOD images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 32

# Letters that do not look like a digit (no B/D/G/I/L/O/Q/S/T/Z), for the near-OOD set.
GLYPH_LETTERS = "ACEFHJKMNPRUVWXY"


def _rng(seed: int, stream: str) -> np.random.Generator:
    """One independent random stream per (seed, dataset), so sets never share draws."""
    return np.random.default_rng(
        [seed, int.from_bytes(stream.encode()[:8].ljust(8, b"\0"), "little")]
    )


def _upsample_grey8(images8: np.ndarray) -> np.ndarray:
    """8×8 images with values 0..16 → 32×32×3 uint8, bilinear, as the ID digits are made."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(images8.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    return x.repeat(1, 3, 1, 1).permute(0, 2, 3, 1).contiguous().numpy()


def digits_split(seed: int, test_fraction: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The fixed, class-stratified train/test split of scikit-learn's digits (1,797 images)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    idx = np.arange(len(digits.target))
    train_idx, test_idx = train_test_split(
        idx, test_size=test_fraction, random_state=seed, stratify=digits.target
    )
    images = _upsample_grey8(digits.images)
    labels = digits.target.astype(np.int64)
    return {
        "train": (images[np.sort(train_idx)], labels[np.sort(train_idx)]),
        "test": (images[np.sort(test_idx)], labels[np.sort(test_idx)]),
    }


def photo_sources() -> dict[str, np.ndarray]:
    """The photographs bundled with scikit-learn and matplotlib, as H×W×3 uint8 arrays."""
    import matplotlib.cbook
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    photos = {
        Path(name).stem: img for name, img in zip(sample.filenames, sample.images, strict=True)
    }
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as fh:
        photos["grace_hopper"] = np.asarray(Image.open(fh).convert("RGB"))
    return photos


def photo_patches(n: int, seed: int, half: str, stream: str) -> tuple[np.ndarray, np.ndarray]:
    """Random square patches (side 32..96 px, resized to 32) from one half of each photo.

    Test patches come from the left half and auxiliary outliers from the right half, so
    no pixel of a test image is ever seen as an outlier. Returns the images and the crop
    boxes (photo index, x0, y0, side) so that disjointness can be checked.
    """
    if half not in ("left", "right"):
        raise ValueError(f"half must be 'left' or 'right', not {half!r}")
    rng = _rng(seed, stream)
    photos = list(photo_sources().values())
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    boxes = np.empty((n, 4), np.int64)
    for i in range(n):
        p = int(rng.integers(len(photos)))
        img = photos[p]
        h, w = img.shape[:2]
        lo, hi = (0, w // 2) if half == "left" else (w // 2, w)
        side = int(rng.integers(SIZE, min(96, hi - lo, h) + 1))
        x0 = int(rng.integers(lo, hi - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        patch = Image.fromarray(img[y0 : y0 + side, x0 : x0 + side])
        out[i] = np.asarray(patch.resize((SIZE, SIZE), Image.BILINEAR))
        boxes[i] = (p, x0, y0, side)
    return out, boxes


def gaussian_noise(n: int, seed: int) -> np.ndarray:
    rng = _rng(seed, "gaussian")
    return np.clip(rng.normal(127.5, 50.0, (n, SIZE, SIZE, 3)), 0, 255).round().astype(np.uint8)


def uniform_noise(n: int, seed: int) -> np.ndarray:
    rng = _rng(seed, "uniform")
    return rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def solid_colour(n: int, seed: int) -> np.ndarray:
    rng = _rng(seed, "colour")
    colours = rng.integers(0, 256, (n, 1, 1, 3), dtype=np.uint8)
    return np.broadcast_to(colours, (n, SIZE, SIZE, 3)).copy()


def _two_colour(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map a field t in [0,1] (H×W) to an image blending two random colours."""
    a, b = rng.integers(0, 256, (2, 3)).astype(np.float32)
    return t[..., None] * a + (1 - t[..., None]) * b


def procedural_textures(n: int, seed: int) -> np.ndarray:
    """Gratings, checkerboards, stripes and smoothed-noise 'plasma', in turn, random colours."""
    from scipy.ndimage import gaussian_filter

    rng = _rng(seed, "textures")
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        kind = i % 4
        theta = rng.uniform(0, np.pi)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        v = -xx * np.sin(theta) + yy * np.cos(theta)
        if kind == 0:  # sinusoidal grating
            t = 0.5 + 0.5 * np.sin(2 * np.pi * u / rng.uniform(3, 12) + rng.uniform(0, 2 * np.pi))
        elif kind == 1:  # rotated checkerboard
            cell = rng.uniform(2, 8)
            t = ((np.floor(u / cell) + np.floor(v / cell)) % 2).astype(np.float32)
        elif kind == 2:  # hard stripes of random duty cycle
            t = ((u / rng.uniform(3, 10)) % 1.0 < rng.uniform(0.2, 0.8)).astype(np.float32)
        else:  # plasma: smoothed noise, rescaled to [0,1]
            f = gaussian_filter(
                rng.normal(size=(SIZE, SIZE)), sigma=rng.uniform(1.5, 4), mode="wrap"
            )
            t = (f - f.min()) / (np.ptp(f) + 1e-8)
        out[i] = np.clip(_two_colour(t, rng), 0, 255).round().astype(np.uint8)
    return out


def glyphs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Near-OOD: capital letters rendered the way the digits were digitised.

    Each letter is drawn in matplotlib's bundled DejaVu font at a random size, slant
    and offset, averaged down to 8×8, quantised to the digits' 17 grey levels (0..16)
    and upsampled exactly like the ID images. Only letters that do not resemble a
    digit are used. Labels are the letter indices into GLYPH_LETTERS.
    """
    from matplotlib import font_manager

    rng = _rng(seed, "glyphs")
    fonts = [
        font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans", weight=w))
        for w in ("normal", "bold")
    ]
    big = 64
    images8 = np.empty((n, 8, 8), np.float32)
    labels = rng.integers(len(GLYPH_LETTERS), size=n)
    for i in range(n):
        font = ImageFont.truetype(fonts[int(rng.integers(2))], int(rng.integers(58, 76)))
        canvas = Image.new("L", (big, big), 0)
        draw = ImageDraw.Draw(canvas)
        letter = GLYPH_LETTERS[labels[i]]
        left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
        x = (big - (right - left)) / 2 - left + rng.uniform(-3, 3)
        y = (big - (bottom - top)) / 2 - top + rng.uniform(-3, 3)
        draw.text((x, y), letter, fill=255, font=font)
        shear = rng.uniform(-0.25, 0.25)
        canvas = canvas.transform(
            (big, big), Image.AFFINE, (1, shear, -shear * big / 2, 0, 1, 0), Image.BILINEAR
        )
        small = np.asarray(canvas, np.float32).reshape(8, 8, 8, 8).mean(axis=(1, 3)) / 255.0
        images8[i] = np.round(small / max(small.max(), 1e-6) * 16)
    return _upsample_grey8(images8), labels.astype(np.int64)


def _shapes(n: int, seed: int) -> np.ndarray:
    """Random filled ellipses and polygons on a random background (auxiliary outliers only)."""
    rng = _rng(seed, "shapes")
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        img = Image.new("RGB", (SIZE, SIZE), tuple(int(c) for c in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 5))):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            pts = [
                tuple(float(c) for c in p)
                for p in rng.uniform(-4, SIZE + 4, (int(rng.integers(3, 6)), 2))
            ]
            if rng.random() < 0.5:
                x0, y0 = rng.uniform(-4, SIZE - 8, 2)
                w, h = rng.uniform(6, 24, 2)
                draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
            else:
                draw.polygon(pts, fill=colour)
        out[i] = np.asarray(img)
    return out


def auxiliary_outliers(n: int, seed: int) -> np.ndarray:
    """Outlier-exposure set: right-half photo patches and random shapes, half each.

    Disjoint from every test set by construction: photo patches come from the other
    half of the photographs, and no test set is made of shapes.
    """
    n_photo = n // 2
    photos, _ = photo_patches(n_photo, seed, half="right", stream="aux-photos")
    images = np.concatenate([photos, _shapes(n - n_photo, seed)])
    return images[_rng(seed, "aux-order").permutation(n)]


def abstract_triggers(n: int, seed: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """WatermarkNN-style trigger images: abstract colour fields with random labels.

    Each image is three independently smoothed noise fields (one per channel, random
    scale) with a few random strokes on top, so no two look alike and none resembles a
    digit or any test set; labels are drawn uniformly from `classes`.
    """
    from scipy.ndimage import gaussian_filter

    rng = _rng(seed, "triggers")
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        sigma = rng.uniform(1.0, 5.0)
        field = np.stack(
            [gaussian_filter(rng.normal(size=(SIZE, SIZE)), sigma, mode="wrap") for _ in range(3)],
            -1,
        )
        field = (field - field.min()) / (np.ptp(field) + 1e-8) * 255
        img = Image.fromarray(field.round().astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(1, 4))):
            pts = [
                tuple(float(c) for c in p)
                for p in rng.uniform(0, SIZE, (int(rng.integers(2, 5)), 2))
            ]
            draw.line(
                pts,
                fill=tuple(int(c) for c in rng.integers(0, 256, 3)),
                width=int(rng.integers(1, 4)),
            )
        out[i] = np.asarray(img)
    return out, rng.integers(0, classes, n).astype(np.int64)
