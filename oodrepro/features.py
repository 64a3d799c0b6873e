"""Dumping what every feature-based score reads: logits, penultimate vector, pooled blocks.

One pass of the network per (model, dataset); the result is cached as an array file and
reused by every score that needs nothing else.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from .io import load_npz, save_npz
from .models import Backbone
from .models.base import pool
from .training import to_tensor


@torch.inference_mode()
def extract(model: Backbone, images: np.ndarray, batch_size: int = 512, progress: bool = False) -> dict[str, np.ndarray]:
    """Logits, penultimate features and globally pooled block outputs of uint8 images."""
    model.eval()
    device = next(model.parameters()).device
    x_all = to_tensor(images, device)
    parts: dict[str, list[torch.Tensor]] = {}
    for i in tqdm(range(0, len(x_all), batch_size), desc="features", disable=not progress):
        out = model(x_all[i : i + batch_size].float() / 255.0, return_blocks=True)
        items = {"logits": out.logits, "penultimate": out.penultimate}
        items.update({f"block_{j}": pool(b) for j, b in enumerate(out.blocks)})
        for k, v in items.items():
            parts.setdefault(k, []).append(v.float().cpu())
    if not parts:
        raise ValueError("cannot extract features of an empty dataset")
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def dump(model: Backbone, images: np.ndarray, labels: np.ndarray, out, batch_size: int = 512, progress=True) -> None:
    feats = extract(model, images, batch_size, progress)
    save_npz(out, labels=np.asarray(labels, np.int64), block_names=np.array(model.block_names), **feats)


def load(path) -> dict[str, np.ndarray]:
    return load_npz(path)
