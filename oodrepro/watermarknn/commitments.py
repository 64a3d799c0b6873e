"""The owner's commitments to the trigger set: salted SHA-256 hashes made at embedding,
opened before any model is queried, so a tampered key or trigger set is refused."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import numpy as np

from ..io import load_npz


class VerificationError(RuntimeError):
    """The marking key does not open the published commitments."""


def _image_bytes(image: np.ndarray) -> bytes:
    return repr(image.shape).encode() + np.ascontiguousarray(image, np.uint8).tobytes()


def _label_bytes(label) -> bytes:
    return str(int(label)).encode()


def commit(payload: bytes, nonce: bytes) -> str:
    """Com(x; r) = SHA-256(r ‖ x): hiding by the 32-byte random nonce r, binding by SHA-256."""
    return hashlib.sha256(nonce + payload).hexdigest()


def make_keys(
    images: np.ndarray, labels: np.ndarray, nonce_seed: int | None = None
) -> tuple[dict, dict]:
    """(marking key, verification key) for a trigger set.

    The marking key (secret) holds the images, labels and every nonce; the verification key
    (published) holds one commitment per image and per label. `nonce_seed` makes the nonces
    reproducible for a research run; None draws them from the OS (a real ownership claim).
    """
    n = len(images)
    if nonce_seed is None:
        nonces = np.frombuffer(secrets.token_bytes(64 * n), np.uint8).reshape(2, n, 32)
    else:
        nonces = np.random.default_rng(nonce_seed).integers(0, 256, (2, n, 32), dtype=np.uint8)
    marking = {
        "images": np.asarray(images, np.uint8),
        "labels": np.asarray(labels, np.int64),
        "image_nonces": nonces[0],
        "label_nonces": nonces[1],
    }
    verification = {
        "scheme": "sha256(nonce || payload)",
        "n": n,
        "images": [commit(_image_bytes(images[i]), nonces[0, i].tobytes()) for i in range(n)],
        "labels": [commit(_label_bytes(labels[i]), nonces[1, i].tobytes()) for i in range(n)],
    }
    return marking, verification


def open_commitments(marking: dict, verification: dict) -> None:
    """Raise VerificationError unless every image and label opens its commitment."""
    n = len(marking["images"])
    if (
        verification.get("n") != n
        or len(verification["images"]) != n
        or len(verification["labels"]) != n
    ):
        raise VerificationError(
            f"the verification key commits to {verification.get('n')} triggers, "
            f"the marking key holds {n}"
        )
    bad_images = [
        i
        for i in range(n)
        if commit(_image_bytes(marking["images"][i]), marking["image_nonces"][i].tobytes())
        != verification["images"][i]
    ]
    bad_labels = [
        i
        for i in range(n)
        if commit(_label_bytes(marking["labels"][i]), marking["label_nonces"][i].tobytes())
        != verification["labels"][i]
    ]
    if bad_images or bad_labels:
        raise VerificationError(
            f"commitments do not open: images {bad_images[:10]}, labels {bad_labels[:10]}"
            f" ({len(bad_images)} + {len(bad_labels)} of {n}); refusing to verify"
        )


def load_keys(marking_path, verification_path) -> tuple[dict, dict]:
    return load_npz(marking_path), json.loads(Path(verification_path).read_text())
