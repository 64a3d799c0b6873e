"""What every backbone shares: normalisation inside the model and per-block outputs.

Inputs are always images in [0,1]; the backbone normalises them itself, so datasets stay
uint8 and every input-space operation (ODIN's perturbation, an input watermark) is
defined in a known space. `forward_normalized` is the entry point after normalisation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

# the input normalisations the reproduced papers use
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "hendrycks-cifar": (
        (125.3 / 255, 123.0 / 255, 113.9 / 255),
        (63.0 / 255, 62.1 / 255, 66.7 / 255),
    ),
    "wrong-std-cifar": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    # OpenOOD v1.5's test preprocessing of its CIFAR benchmarks (its released checkpoints')
    "openood-cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "openood-cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


class BlockOutputs(NamedTuple):
    logits: torch.Tensor
    penultimate: torch.Tensor  # the vector the classifier head reads
    blocks: list[torch.Tensor]  # every block's output map, in depth order


def scaled(channels: int, width: float) -> int:
    """Channel count scaled by the width multiplier (at least 1)."""
    return max(1, int(round(channels * width)))


class Backbone(nn.Module):
    """Subclasses implement `body(z) -> BlockOutputs` on normalised inputs and set `block_names`."""

    block_names: list[str]
    arch: str = ""  # the registry name, set by models.build
    laood_logits: bool = True  # LA-OOD uses the logits as a last layer (not for VGG16)
    cotrain_layers: int | None = 10  # LA-OOD co-training: layers per step (co_train.py, ResNet-34)

    def __init__(self, normalization: str):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise KeyError(
                f"unknown normalization {normalization!r}; known: {sorted(NORMALIZATIONS)}"
            )
        mean, std = NORMALIZATIONS[normalization]
        self.normalization = normalization
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def body(self, z: torch.Tensor) -> BlockOutputs:
        raise NotImplementedError

    def attach_watermark(self, w: torch.Tensor) -> None:
        """Add `w` (1×3×32×32) to every input in normalised space from now on (watermarking)."""
        self.register_buffer("watermark", w.reshape(1, 3, 32, 32).clone())

    def forward_normalized(self, z: torch.Tensor, return_blocks: bool = False):
        """The network on normalised inputs (plus the watermark, when the model carries one)."""
        if getattr(self, "watermark", None) is not None:
            z = z + self.watermark
        out = self.body(z)
        return out if return_blocks else out.logits

    def forward(self, x: torch.Tensor, return_blocks: bool = False):
        """x: images in [0,1]. Returns logits, or BlockOutputs when `return_blocks`."""
        return self.forward_normalized(self.normalize(x), return_blocks)


def pool(t: torch.Tensor) -> torch.Tensor:
    return torch.flatten(nn.functional.adaptive_avg_pool2d(t, 1), 1)


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal (fan_out) convolutions, BatchNorm at identity, zero linear biases."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def run_blocks(h: torch.Tensor, blocks) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Apply blocks in order, keeping every block's output."""
    outs = []
    for block in blocks:
        h = block(h)
        outs.append(h)
    return h, outs


def resnet_stages(
    block, layers, chans: list[int], cin: int
) -> tuple[nn.ModuleList, list[str], int]:
    """ResNet-style stages: `layers[s]` blocks of `chans[s]` channels, stride 2 entering stages
    2.., named layer{stage}.{i}; returns the blocks, their names and the output channels."""
    blocks, names = [], []
    for stage, (n, cout) in enumerate(zip(layers, chans, strict=True), start=1):
        for i in range(n):
            blocks.append(block(cin, cout, 2 if (i == 0 and stage > 1) else 1))
            names.append(f"layer{stage}.{i}")
            cin = cout
    return nn.ModuleList(blocks), names, cin
