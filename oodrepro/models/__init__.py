"""The backbone registry: CIFAR-style models by name, built from a config dict.

A checkpoint stores the state dict beside the arguments that built the model, so
loading needs no other source of truth; loads use `weights_only=True`.
"""

from __future__ import annotations

from typing import Callable

from ..io import load_torch, save_torch
from .base import NORMALIZATIONS, Backbone, BlockOutputs
from .densenet import densenet100
from .resnet import resnet18, resnet34
from .vgg import vgg16_bn
from .wrn import wrn28_10, wrn40_2

MODELS: dict[str, Callable[..., Backbone]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "wrn40_2": wrn40_2,
    "wrn28_10": wrn28_10,
    "densenet100": densenet100,
    "vgg16_bn": vgg16_bn,
}

__all__ = ["MODELS", "NORMALIZATIONS", "Backbone", "BlockOutputs", "build", "load_model", "save_model"]


def build(arch: str, **kwargs) -> Backbone:
    if arch not in MODELS:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(MODELS)}")
    model = MODELS[arch](**kwargs)
    model.arch = arch
    return model


def save_model(path, model: Backbone, spec: dict, **extra) -> None:
    """Save weights with the spec (`arch` + constructor kwargs) that rebuilds the model."""
    save_torch(path, {"spec": dict(spec), "state_dict": model.state_dict(), **extra})


def load_model(path, device="cpu") -> Backbone:
    ckpt = load_torch(path, map_location=device)
    spec = dict(ckpt["spec"])
    model = build(spec.pop("arch"), **spec)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval()
