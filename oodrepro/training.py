"""Supervised training of a backbone: SGD, step or cosine schedule, crop+flip augmentation.

The training set lives as one uint8 tensor on the device and is augmented in whole
batches there (no per-image Python, no DataLoader workers). Every random choice of
epoch e is drawn from a generator seeded by (seed, e), and the learning rate is a
pure function of the epoch, so a run resumed from its per-epoch state file gives
exactly the weights an uninterrupted run gives.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import models
from .io import load_torch, save_csv, save_torch


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def lr_at(epoch: int, recipe: dict) -> float:
    """Learning rate of epoch `epoch` (0-based) under the recipe's schedule."""
    base, sched = recipe["lr"], recipe.get("schedule", {"kind": "constant"})
    kind = sched["kind"]
    if kind == "constant":
        return base
    if kind == "step":
        return base * sched.get("gamma", 0.1) ** sum(epoch >= m for m in sched["milestones"])
    if kind == "cosine":
        return base * 0.5 * (1 + math.cos(math.pi * epoch / recipe["epochs"]))
    raise ValueError(f"unknown schedule {kind!r}")


def to_tensor(images: np.ndarray, device) -> torch.Tensor:
    """uint8 N×H×W×C array → uint8 N×C×H×W tensor on `device` (converted to float per batch)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)


def image_batches(model, images: np.ndarray, batch_size: int, desc: str | None = None, progress: bool = False):
    """Yield (rows, float batch in [0,1]) over uint8 N×H×W×C images, on the model's device."""
    x_all = to_tensor(images, next(model.parameters()).device)
    for i in tqdm(range(0, len(x_all), batch_size), desc=desc, disable=not progress):
        rows = slice(i, min(i + batch_size, len(x_all)))
        yield rows, x_all[rows].float() / 255.0


def augment(batch: torch.Tensor, padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, for a whole float batch at once."""
    n, _, h, w = batch.shape
    if padding:
        padded = F.pad(batch, (padding,) * 4)
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(batch.device)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(batch.device)
        rows = (oy[:, None] + torch.arange(h, device=batch.device))[:, :, None]  # n×h×1
        cols = (ox[:, None] + torch.arange(w, device=batch.device))[:, None, :]  # n×1×w
        batch = padded[torch.arange(n, device=batch.device)[:, None, None], :, rows, cols]  # n×h×w×c
        batch = batch.permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=gen) < 0.5).to(batch.device)
        batch = torch.where(mask[:, None, None, None], batch.flip(3), batch)
    return batch.contiguous()


def _kept(state_path: Path, name: str) -> Path:
    return state_path.with_name(f"{state_path.stem}.{name}.pt")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train_backbone(
    spec: dict,
    images: np.ndarray,
    labels: np.ndarray,
    recipe: dict,
    out: str | Path,
    state_path: str | Path,
    log_csv: str | Path,
    keep: dict[str, tuple[int, str | Path]] | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    test: tuple[np.ndarray, np.ndarray] | None = None,
) -> models.Backbone:
    """Train `models.build(**spec)` and save its checkpoint to `out`.

    The checkpoint is the last epoch's, or with `recipe["checkpoint"] == "best_test"` the
    epoch (after the first) with the best accuracy on `test`, as LA-OOD's original code
    keeps. `keep` names extra checkpoints: {name: (epoch, path)} saves the weights after
    that (1-based) epoch. `state_path` holds the full training state after every epoch;
    when it exists the run continues from it, and it is removed once `out` is written.
    """
    best_test = recipe.get("checkpoint", "last") == "best_test"
    if best_test and test is None:
        raise ValueError("checkpoint: best_test needs the test set")
    dev = pick_device(device)
    keep = keep or {}
    torch.manual_seed(seed)
    model = models.build(**spec).to(dev)
    opt = torch.optim.SGD(
        model.parameters(), lr=recipe["lr"], momentum=recipe.get("momentum", 0.9),
        weight_decay=recipe.get("weight_decay", 5e-4), nesterov=recipe.get("nesterov", False),
    )
    history: list[dict] = []
    start = 0
    state_path = Path(state_path)
    if state_path.exists():
        state = load_torch(state_path, map_location=dev)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history, start = state["history"], state["epoch"]

    x_all, y_all = to_tensor(images, dev), torch.from_numpy(np.asarray(labels, np.int64)).to(dev)
    n, bs = len(y_all), recipe["batch_size"]
    aug = recipe.get("augment", {})
    epochs = recipe["epochs"]
    bar = tqdm(range(start, epochs), initial=start, total=epochs, desc="train", unit="epoch", disable=not progress)
    for epoch in bar:
        t0 = time.time()
        gen = epoch_generator(seed, epoch)
        torch.manual_seed(seed * 1_000_003 + epoch)  # dropout draws
        lr = lr_at(epoch, recipe)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        perm = torch.randperm(n, generator=gen).to(dev)
        total_loss, correct, seen = 0.0, 0, 0
        for i in range(0, n, bs):
            idx = perm[i : i + bs]
            if len(idx) < 2:  # BatchNorm cannot train on one image
                continue
            x = augment(x_all[idx].float() / 255.0, aug.get("crop_padding", 4), aug.get("flip", True), gen)
            y = y_all[idx]
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(idx)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(idx)
        history.append({"epoch": epoch + 1, "lr": lr, "loss": total_loss / seen, "accuracy": correct / seen,
                        "seconds": time.time() - t0})
        if best_test:
            history[-1]["test_accuracy"] = accuracy(model, *test)
            earlier = [h["test_accuracy"] for h in history[1:-1]]
            if epoch > 0 and history[-1]["test_accuracy"] > max(earlier, default=-1.0):
                models.save_model(_kept(state_path, "best"), model, spec, epoch=epoch + 1)
        bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", acc=f"{history[-1]['accuracy']:.3f}")
        for name, (at, _) in keep.items():
            if at == epoch + 1:  # kept beside the state until the run ends, so a kill cannot lose it
                models.save_model(_kept(state_path, name), model, spec, epoch=epoch + 1)
        save_torch(state_path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                "history": history, "epoch": epoch + 1})
        save_csv(log_csv, pd.DataFrame(history))
    for name, (at, path) in keep.items():
        if not 1 <= at <= epochs:
            raise ValueError(f"checkpoint {name!r} asks for epoch {at} of a {epochs}-epoch run")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        os.replace(_kept(state_path, name), path)
    if best_test and _kept(state_path, "best").exists():
        os.replace(_kept(state_path, "best"), out)
        model = models.load_model(out, dev)
    else:
        models.save_model(out, model, spec, epoch=epochs)
    save_csv(log_csv, pd.DataFrame(history))
    state_path.unlink(missing_ok=True)
    return model.eval()


@torch.inference_mode()
def accuracy(model: models.Backbone, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy of uint8 images, in eval mode (training mode is restored)."""
    was_training = model.training
    model.eval()
    labels = np.asarray(labels)
    correct = 0
    for rows, x in image_batches(model, images, batch_size):
        correct += int((model(x).argmax(1).cpu().numpy() == labels[rows]).sum())
    model.train(was_training)
    return correct / len(images)
