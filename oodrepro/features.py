"""Dumping what every feature-based score reads: logits, penultimate vector, pooled blocks.

One pass of the network per (model, dataset); the result is cached as an array file and
reused by every score that needs nothing else.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .featurenorm import feature_norm
from .inference import FORWARD_LAYOUT, image_batches
from .io import save_npz
from .models import Backbone
from .models.base import pool

Transform = Callable[[torch.Tensor, slice], torch.Tensor]


@torch.inference_mode()
def extract(
    model: Backbone,
    images: np.ndarray,
    batch_size: int = 512,
    progress: bool = False,
    transform: Transform | None = None,
) -> dict[str, np.ndarray]:
    """Logits, penultimate features, pooled block outputs and per-block FeatureNorm of uint8 images.

    `transform(z, rows)` optionally rewrites each batch in the network's normalised input
    space (rows: the batch's slice of the dataset), e.g. NormRatio's jigsaw puzzles.
    """
    model.eval()
    parts: dict[str, list[torch.Tensor]] = {}
    for rows, x in image_batches(model, images, batch_size, "features", progress, FORWARD_LAYOUT):
        z = model.normalize(x)
        if transform is not None:
            z = transform(z, rows)
        out = model.forward_normalized(z, return_blocks=True)
        items = {
            "logits": out.logits,
            "penultimate": out.penultimate,
            "featnorm": torch.stack([feature_norm(b) for b in out.blocks], dim=1),
        }
        items.update({f"block_{j}": pool(b) for j, b in enumerate(out.blocks)})
        for k, v in items.items():
            parts.setdefault(k, []).append(v.float().cpu())
    if not parts:
        raise ValueError("cannot extract features of an empty dataset")
    return {k: torch.cat(v).numpy() for k, v in parts.items()}


def dump(
    model: Backbone,
    images: np.ndarray,
    labels: np.ndarray,
    out,
    batch_size: int = 512,
    progress=True,
    transform: Transform | None = None,
) -> None:
    """Write `extract`'s arrays with the labels, block names and the classifier head (W, b:
    ReAct, DICE, ASH and ViM recompute logits from reshaped penultimate vectors)."""
    feats = extract(model, images, batch_size, progress, transform)
    head = {
        "fc_weight": model.fc.weight.detach().float().cpu().numpy(),
        "fc_bias": model.fc.bias.detach().float().cpu().numpy(),
    }
    save_npz(
        out,
        labels=np.asarray(labels, np.int64),
        block_names=np.array(model.block_names),
        arch=np.array(model.arch),
        **head,
        **feats,
    )


def conv_layers(model: Backbone) -> list[tuple[str, torch.nn.Module]]:
    """Every convolution in forward order but 1×1 shortcuts (LA-OOD's layer set)."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d) and "shortcut" not in name
    ]


@torch.inference_mode()
def extract_convs(
    model: Backbone,
    images: np.ndarray,
    batch_size: int = 512,
    progress: bool = False,
    logits: bool | None = None,
) -> dict[str, np.ndarray]:
    """The spatial mean of every convolution's raw output (before BatchNorm), plus the logits
    as one more layer where LA-OOD uses them (`logits=None`: the backbone's own default)."""
    model.eval()
    layers = conv_layers(model)
    use_logits = model.laood_logits if logits is None else logits
    pooled: list[list[torch.Tensor]] = [[] for _ in layers]
    hooks = [
        m.register_forward_hook(
            lambda _m, _i, out, j=j: pooled[j].append(out.float().mean((2, 3)).cpu())
        )
        for j, (_, m) in enumerate(layers)
    ]
    out_logits = []
    try:
        for _, x in image_batches(
            model, images, batch_size, "conv features", progress, FORWARD_LAYOUT
        ):
            out_logits.append(model(x).float().cpu())
    finally:
        for h in hooks:
            h.remove()
    arrays = [torch.cat(p).numpy() for p in pooled]
    names = [name for name, _ in layers]
    if use_logits:
        arrays.append(torch.cat(out_logits).numpy())
        names.append("logits")
    return {"layer_names": np.array(names), **{f"layer_{j}": a for j, a in enumerate(arrays)}}


def dump_convs(
    model: Backbone,
    images: np.ndarray,
    labels: np.ndarray,
    out,
    batch_size: int = 512,
    progress=True,
) -> None:
    save_npz(
        out,
        labels=np.asarray(labels, np.int64),
        arch=np.array(model.arch),
        **extract_convs(model, images, batch_size, progress),
    )
