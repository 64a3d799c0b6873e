"""Running a trained network over uint8 images: batches on its device, predictions, accuracy."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import models
from .progress import tenths

# Passes without gradients run in batches of FORWARD_BATCH images in channels-last layout on every
# device. oneDNN's channels-last fault on narrow networks (devices.py) is in the convolution's
# backward; forward passes ran on it without fault on every CPU ISA tried, and for the default
# model on one core they are 1.3-1.9x faster than contiguous batches of 1,000, which spill the
# cache (bench/performance.py, "inference"). Passes that take gradients (ODIN, the Mahalanobis
# ensemble's input pre-processing, training) keep the model's own layout.
FORWARD_BATCH = 256
FORWARD_LAYOUT = torch.channels_last


def to_tensor(images: np.ndarray, device) -> torch.Tensor:
    """N×H×W×C array → N×C×H×W tensor on `device` (uint8 stays uint8: converted per batch)."""
    return (
        torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)
    )


def image_batches(
    model,
    images: np.ndarray,
    batch_size: int,
    desc: str | None = None,
    progress: bool = False,
    layout: torch.memory_format = torch.contiguous_format,
):
    """Yield (rows, float batch in [0,1]) over N×H×W×C images, on the model's device: uint8
    images, or float images already in [0,1] (e.g. adversarial copies, kept unrounded);
    `layout` FORWARD_LAYOUT for passes without gradients."""
    x_all = to_tensor(images, next(model.parameters()).device)
    scale = 255.0 if x_all.dtype == torch.uint8 else 1.0
    for i in tenths(range(0, len(x_all), batch_size), desc=desc, unit="batches", show=progress):
        rows = slice(i, min(i + batch_size, len(x_all)))
        yield rows, (x_all[rows].float() / scale).contiguous(memory_format=layout)


@torch.inference_mode()
def predict(
    model: models.Backbone,
    images: np.ndarray,
    head: dict | None = None,
    batch_size: int = FORWARD_BATCH,
) -> np.ndarray:
    """Top-1 predictions of uint8 images in eval mode (training mode is restored); `head`
    ({weight, bias}) replaces the model's output layer on its penultimate features."""
    was_training = model.training
    model.eval()
    out = []
    for _, x in image_batches(model, images, batch_size, layout=FORWARD_LAYOUT):
        if head is None:
            logits = model(x)
        else:
            logits = F.linear(
                model(x, return_blocks=True).penultimate, head["weight"], head["bias"]
            )
        out.append(logits.argmax(1).cpu().numpy())
    model.train(was_training)
    return np.concatenate(out)


def accuracy_fraction(
    model: models.Backbone, images: np.ndarray, labels: np.ndarray, batch_size: int = FORWARD_BATCH
) -> float:
    """Top-1 accuracy of uint8 images as a fraction, in eval mode (training mode is restored)."""
    return float((predict(model, images, batch_size=batch_size) == np.asarray(labels)).mean())
