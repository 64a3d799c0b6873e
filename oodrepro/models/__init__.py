"""The backbone registry: CIFAR-style models by name, built from a config dict.

A checkpoint stores the state dict beside the arguments that built the model, so
loading needs no other source of truth; loads use `weights_only=True`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..io import load_torch, save_torch
from .base import NORMALIZATIONS, Backbone, BlockOutputs
from .densenet import densenet100
from .preact import preact_resnet18_hybrid
from .resnet import resnet18, resnet34
from .vgg import vgg16_bn
from .wrn import wrn28_10, wrn40_2

MODELS: dict[str, Callable[..., Backbone]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "preact_resnet18_hybrid": preact_resnet18_hybrid,
    "wrn40_2": wrn40_2,
    "wrn28_10": wrn28_10,
    "densenet100": densenet100,
    "vgg16_bn": vgg16_bn,
}

__all__ = [
    "MODELS",
    "NORMALIZATIONS",
    "Backbone",
    "BlockOutputs",
    "CheckpointMismatch",
    "build",
    "check_spec",
    "load_checkpoint",
    "load_model",
    "save_model",
]


class CheckpointMismatch(ValueError):
    """A checkpoint on disk is not the model the config describes."""


def build(arch: str, **kwargs) -> Backbone:
    if arch not in MODELS:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(MODELS)}")
    watermark = kwargs.pop("watermark", False)
    model = MODELS[arch](**kwargs)
    model.arch = arch
    if watermark:
        model.attach_watermark(torch.zeros(1, 3, 32, 32))
    return model


def save_model(path, model: Backbone, spec: dict, **extra) -> None:
    """Save weights with the spec (`arch` + constructor kwargs) that rebuilds the model."""
    save_torch(path, {"spec": dict(spec), "state_dict": model.state_dict(), **extra})


def _describe(spec: dict) -> str:
    rest = ", ".join(f"{k}={spec[k]!r}" for k in sorted(spec) if k != "arch")
    return f"{spec.get('arch', '?')} ({rest})"


def check_spec(found: dict, expected: dict, path) -> None:
    """Refuse a checkpoint whose spec (arch, width, classes, normalisation, stem, watermark…)
    is not the one the config asks for, naming both."""
    if dict(found) != dict(expected):
        differ = sorted(k for k in set(found) | set(expected) if found.get(k) != expected.get(k))
        raise CheckpointMismatch(
            f"{path} holds a {_describe(found)}, but the config asks for a {_describe(expected)} "
            f"(differs in: {', '.join(differ)}). Delete the file so the workflow makes it again, "
            "or fix the config."
        )


def load_checkpoint(path, device="cpu", *, spec: dict | None) -> tuple[Backbone, dict]:
    """The model in eval mode and the whole checkpoint (spec and what a trainer kept beside
    the weights), from one read of the file. `spec` is the model the caller's config names
    (see `check_spec`); None only for a file the same job has just written."""
    ckpt = load_torch(path, map_location=device)
    if spec is not None:
        check_spec(ckpt["spec"], spec, path)
    arch_spec = dict(ckpt["spec"])
    model = build(arch_spec.pop("arch"), **arch_spec)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), ckpt


def load_model(path, device="cpu", *, spec: dict | None) -> Backbone:
    return load_checkpoint(path, device, spec=spec)[0]


def hendrycks_wrn_keys(state_dict: dict) -> dict:
    """Rename a Hendrycks / Energy-OOD WideResNet state dict to this package's WRN names.

    Theirs: conv1, block{s}.layer.{i}.{bn1,conv1,bn2,conv2,convShortcut}, bn1, fc.
    Ours:   conv1, blocks.{(s−1)·n + i}.{bn1,conv1,bn2,conv2,shortcut}, bn, fc.
    """
    per_stage = 1 + max(int(k.split(".")[2]) for k in state_dict if k.startswith("block1.layer."))
    out = {}
    for key, value in state_dict.items():
        parts = key.split(".")
        if parts[0].startswith("block") and parts[1] == "layer":
            index = (int(parts[0][5:]) - 1) * per_stage + int(parts[2])
            rest = ["shortcut" if p == "convShortcut" else p for p in parts[3:]]
            key = ".".join(["blocks", str(index), *rest])
        elif parts[0] == "bn1":
            key = ".".join(["bn", *parts[1:]])
        out[key] = value
    return out


def openood_keys(state_dict: dict) -> dict:
    """Rename an OpenOOD v1.5 ResNet18_32x32 state dict to this package's ResNet names.

    Theirs: conv1, bn1, layer{s}.{i}.{conv1,bn1,conv2,bn2,shortcut.0,shortcut.1}, fc.
    Ours:   stem.0, stem.1, blocks.{blocks before stage s + i}.(same), fc.
    """
    per_stage: dict[int, int] = {}
    for key in state_dict:
        if key.startswith("layer"):
            stage, block = key.split(".")[:2]
            per_stage[int(stage[5:])] = max(per_stage.get(int(stage[5:]), 0), int(block) + 1)
    out = {}
    for key, value in state_dict.items():
        head, _, rest = key.partition(".")
        if head in ("conv1", "bn1"):
            key = f"stem.{0 if head == 'conv1' else 1}.{rest}"
        elif head.startswith("layer"):
            stage = int(head[5:])
            block, _, rest = rest.partition(".")
            index = sum(per_stage.get(s, 0) for s in range(1, stage)) + int(block)
            key = f"blocks.{index}.{rest}"
        out[key] = value
    return out


def unleashing_mask_keys(state_dict: dict) -> dict:
    """Rename an Unleashing Mask DenseNet-BC state dict (the official `models/densenet.py`, saved
    through DataParallel) to this package's DenseNet names; the `module.` prefix is stripped.

    Theirs: module.conv1, module.block{s}.layer.{i}.{bn1,conv1,bn2,conv2},
            module.trans{t}.{bn1,conv1}, module.bn1, module.fc.
    Ours:   conv1, stages.{2(s−1)}.{i}.(same), stages.{2t−1}.{bn,conv}, bn, fc.
    """
    out = {}
    for key, value in state_dict.items():
        parts = key.removeprefix("module.").split(".")
        if parts[0].startswith("block") and parts[1] == "layer":
            parts = ["stages", str(2 * (int(parts[0][5:]) - 1)), *parts[2:]]
        elif parts[0].startswith("trans"):
            layer = {"bn1": "bn", "conv1": "conv"}.get(parts[1], parts[1])
            parts = ["stages", str(2 * int(parts[0][5:]) - 1), layer, *parts[2:]]
        elif parts[0] == "bn1":
            parts = ["bn", *parts[1:]]
        out[".".join(parts)] = value
    return out


@dataclass(frozen=True)
class PretrainedFormat:
    """A released checkpoint layout: how its keys map to ours, and the fields beside the weights
    that must hold (`expected`) or are kept with the imported model (`recorded`)."""

    keys: Callable[[dict], dict]
    expected: dict = field(default_factory=dict)
    recorded: tuple[str, ...] = ()


PRETRAINED_FORMATS = {
    "hendrycks-wrn": PretrainedFormat(hendrycks_wrn_keys),
    "openood": PretrainedFormat(openood_keys),
    "unleashing-mask": PretrainedFormat(
        unleashing_mask_keys,
        expected={"arch": "DenseNet"},
        recorded=("arch", "epoch", "best_train_acc1", "best_train_acc5"),
    ),
}


def import_pretrained(weights_path, out, spec: dict, key_format: str) -> Backbone:
    """Load released weights strictly into `build(**spec)` and save them as our checkpoint: a key
    the model lacks or a key of the model the file lacks is an error naming them, and so is a
    field of the format's `expected` that differs; its `recorded` fields go with the model."""
    model = build(**spec)
    released = load_torch(weights_path)
    form = PRETRAINED_FORMATS[key_format]
    found = {k: released.get(k) for k in {*form.expected, *form.recorded}}
    wrong = {k: v for k, v in form.expected.items() if found[k] != v}
    if wrong:
        raise KeyError(
            f"{weights_path} is not a {key_format!r} checkpoint: "
            + ", ".join(f"{k} is {found[k]!r}, expected {v!r}" for k, v in wrong.items())
        )
    state = released.get("state_dict", released) if isinstance(released, dict) else released
    mapped = form.keys(dict(state))
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - set(mapped)), sorted(set(mapped) - expected)
    if missing or unexpected:
        raise KeyError(
            f"{weights_path} does not hold a {spec['arch']} in the {key_format!r} format: "
            f"{len(missing)} of the model's weights missing {missing[:5]}, {len(unexpected)} "
            f"unexpected {unexpected[:5]} (names after mapping to this package's)"
        )
    model.load_state_dict(mapped, strict=True)
    kept = {k: found[k] for k in form.recorded}
    save_model(
        out, model, spec, pretrained=str(weights_path), **({"released": kept} if kept else {})
    )
    return model.eval()
