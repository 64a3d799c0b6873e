"""Supervised training of a backbone: SGD, step or cosine schedule, crop+flip augmentation.

The training set lives as one uint8 tensor on the device and is augmented in whole
batches there (no per-image Python, no DataLoader workers). Every random choice of
epoch e is drawn from a generator seeded by (seed, e), and the learning rate is a
pure function of the epoch, so a run resumed from its per-epoch state file gives
exactly the weights an uninterrupted run gives.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import models, resume
from .augmentation import augment, epoch_generator
from .devices import bf16_autocast, pick_device, place_for_training
from .inference import accuracy_fraction, to_tensor
from .optimizer import SGD
from .recipe import Recipe


def lr_at(epoch: int, recipe: Recipe | dict) -> float:
    """Learning rate of epoch `epoch` (0-based) under the recipe's schedule."""
    return Recipe.of(recipe).lr_at(epoch)


def _kept(state_path: Path, name: str) -> Path:
    return state_path.with_name(f"{state_path.stem}.{name}.pt")


@dataclass
class Batch:
    """One training batch as the loop hands it to a trainer: the augmented images `x`, their
    labels `y`, the batch's `index` in the epoch and the epoch's generator `gen` (a trainer's
    own draws come from it, so a resumed run draws the same)."""

    x: torch.Tensor
    y: torch.Tensor
    index: int
    gen: torch.Generator


class Trainer:
    """The objective `Run` trains with; this one is plain cross-entropy.

    A method overrides what differs: `loss(model, batch) -> (loss, logits of batch.x)` (it may
    add inputs of its own, e.g. trigger images); `step` for the whole update (outlier exposure
    adds its batch, DOE takes two optimiser steps); `epoch_start(epoch, gen)` for per-epoch
    draws; `train_mode(model)` for module modes after `model.train()`; `evaluate(model) -> dict`
    for extra log columns; `state_dict` / `load_state_dict` for what a resumed run must
    remember (saved and restored with the model, e.g. POEM's memory).
    """

    def loss(self, model, batch: Batch):
        logits = model(batch.x)
        return F.cross_entropy(logits.float(), batch.y), logits

    def step(self, model, batch: Batch, opt, autocast):
        """One update on the batch under the `autocast` context; returns (loss, logits of x)."""
        with autocast:
            loss, logits = self.loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss, logits

    def epoch_start(self, epoch: int, gen: torch.Generator) -> None:
        pass

    def train_mode(self, model) -> None:
        pass

    def evaluate(self, model) -> dict:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _fingerprint(model, params, images, labels, recipe, seed, first_epoch, identity) -> str:
    """What a saved state must match to be resumed: the recipe, seed, starting weights, which
    parameters train, the data and `identity` (whatever else the trainer depends on)."""
    trained = {id(p) for p in params}
    return resume.fingerprint(
        recipe=recipe,
        seed=seed,
        first_epoch=first_epoch,
        identity=identity,
        model={
            "class": type(model).__name__,
            "arch": model.arch,
            "normalization": model.normalization,
        },
        start=model.state_dict(),
        trained=[n for n, p in model.named_parameters() if id(p) in trained],
        images=np.asarray(images),
        labels=np.asarray(labels, np.int64),
    )


class Run:
    """One resumable SGD run, the loop every trainer here shares; iterate it to train.

    `params` are the trainable parameters, `trainer` the objective (default: cross-entropy);
    with `test` its accuracy is logged every epoch, before the trainer's own columns. The
    learning rate of epoch e is `lr_at(first_epoch + e)`: a continuation can resume an earlier
    run's schedule. The full state (model, optimiser, history, the trainer's state) is saved
    after every epoch and resumed from, but only by the same job (`_fingerprint`); a state that
    does not match is discarded (see `resume`).

    Iterating runs the epochs still to run and yields each (0-based) once its row is in
    `history` and before its state is saved: what the caller saves then (kept checkpoints) is
    on disk before the state that skips the epoch is.
    """

    def __init__(
        self,
        model: models.Backbone,
        params,
        images: np.ndarray,
        labels: np.ndarray,
        recipe: Recipe | dict,
        state_path: str | Path,
        log_csv: str | Path,
        *,
        seed: int = 0,
        trainer: Trainer | None = None,
        test: tuple[np.ndarray, np.ndarray] | None = None,
        first_epoch: int = 0,
        identity: dict | None = None,
        desc: str = "train",
        progress: bool = True,
    ):
        recipe = Recipe.of(recipe)
        self.model, self.recipe, self.seed, self.test = model, recipe, seed, test
        self.trainer, self.first_epoch = trainer or Trainer(), first_epoch
        params = list(params)
        dev = next(model.parameters()).device
        self.opt = SGD(
            params,
            lr=recipe.lr,
            momentum=recipe.momentum,
            weight_decay=recipe.weight_decay,
            nesterov=recipe.nesterov,
        )
        job = _fingerprint(
            model, params, images, labels, recipe.as_dict(), seed, first_epoch, identity or {}
        )
        self.loop = resume.Epochs(
            state_path,
            job,
            recipe.epochs,
            log_csv,
            map_location=dev,
            desc=desc,
            progress=progress,
            shown=("loss", "accuracy"),
        )
        if self.loop.state is not None:
            model.load_state_dict(self.loop.state["model"])
            self.opt.load_state_dict(self.loop.state["optimizer"])
            self.trainer.load_state_dict(self.loop.state["extra"])
        self.history = self.loop.history
        self.images = to_tensor(images, dev)
        self.labels = torch.from_numpy(np.asarray(labels, np.int64)).to(dev)
        # Channels-last layout where it is fast and safe; bf16 autocast on CUDA (`use_bf16`);
        # `compile: true` runs the forward through torch.compile.
        self.layout = place_for_training(model, dev)
        self.net = torch.compile(model) if recipe.compile else model
        self.autocast = bf16_autocast(recipe.bf16, dev)

    def __iter__(self) -> Iterator[int]:
        for epoch in self.loop:
            self.history.append(self._train_epoch(epoch))
            if self.test is not None:
                self.history[-1]["test_accuracy"] = accuracy_fraction(self.model, *self.test)
            self.history[-1].update(self.trainer.evaluate(self.model))
            yield epoch
            self.loop.end_epoch(
                {
                    "model": self.model.state_dict(),
                    "optimizer": self.opt.state_dict(),
                    "extra": self.trainer.state_dict(),
                }
            )

    def fit(self) -> list[dict]:
        """Run every epoch still to run; returns the per-epoch history."""
        for _ in self:
            pass
        return self.history

    def _train_epoch(self, epoch: int) -> dict:
        """One pass over the training set in the epoch's seeded order; returns its log row."""
        t0 = time.time()
        gen = epoch_generator(self.seed, epoch)
        torch.manual_seed(self.seed * 1_000_003 + epoch)  # dropout draws
        lr = lr_at(self.first_epoch + epoch, self.recipe)
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.trainer.epoch_start(epoch, gen)
        self.model.train()
        self.trainer.train_mode(self.model)
        n, bs = len(self.labels), self.recipe.batch_size
        aug = self.recipe.augment
        perm = torch.randperm(n, generator=gen).to(self.labels.device)
        total_loss = torch.zeros((), device=self.labels.device)  # no host sync per batch
        correct = torch.zeros((), device=self.labels.device, dtype=torch.long)
        seen = 0
        for b, i in enumerate(range(0, n, bs)):
            idx = perm[i : i + bs]
            if len(idx) < 2:  # BatchNorm cannot train on one image
                continue
            x = augment(
                self.images[idx].float() / 255.0,
                aug.crop_padding,
                aug.flip,
                gen,
            )
            batch = Batch(x.contiguous(memory_format=self.layout), self.labels[idx], b, gen)
            loss, logits = self.trainer.step(self.net, batch, self.opt, self.autocast)
            total_loss += loss.detach().float() * len(idx)
            correct += (logits.argmax(1) == batch.y).sum()
            seen += len(idx)
        return {
            "epoch": epoch + 1,
            "lr": lr,
            "loss": total_loss.item() / seen,
            "accuracy": correct.item() / seen,
            "seconds": time.time() - t0,
        }


def _check_checkpoints(recipe: Recipe, keep: dict, test) -> None:
    """The best-on-test checkpoint needs the test set; a kept one, an epoch of the run."""
    if recipe.checkpoint == "best_test" and test is None:
        raise ValueError("checkpoint: best_test needs the test set")
    for name, (at, _) in keep.items():
        if not 1 <= at <= recipe.epochs:
            raise ValueError(
                f"checkpoint {name!r} asks for epoch {at} of a {recipe.epochs}-epoch run"
            )


def train_backbone(
    spec: dict,
    images: np.ndarray,
    labels: np.ndarray,
    recipe: Recipe | dict,
    out: str | Path,
    state_path: str | Path,
    log_csv: str | Path,
    *,
    keep: dict[str, tuple[int, str | Path]] | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    test: tuple[np.ndarray, np.ndarray] | None = None,
    init: str | Path | None = None,
    first_epoch: int = 0,
    trainer: Trainer | None = None,
    identity: dict | None = None,
) -> models.Backbone:
    """Train `models.build(**spec)` (or continue the checkpoint `init`) and save it to `out`.

    The checkpoint is the last epoch's, or with `recipe.checkpoint == "best_test"` the
    epoch (after the first) with the best accuracy on `test`, as LA-OOD's original code
    keeps; with `test` given its accuracy is logged every epoch. `keep` names extra
    checkpoints: {name: (epoch, path)} saves the weights after that (1-based) epoch.
    `state_path` holds the full training state after every epoch; when it exists the run
    continues from it, and it is removed once `out` is written. `first_epoch`, `trainer` and
    `identity` are `Run`'s.
    """
    recipe, keep = Recipe.of(recipe), keep or {}
    best_test = recipe.checkpoint == "best_test"
    _check_checkpoints(recipe, keep, test)
    dev = pick_device(device)
    torch.manual_seed(seed)
    model = models.build(**spec).to(dev)
    if init is not None:
        model.load_state_dict(models.load_checkpoint(init, dev, spec=spec)[1]["state_dict"])
    state_path = Path(state_path)

    run = Run(
        model,
        model.parameters(),
        images,
        labels,
        recipe,
        state_path,
        log_csv,
        seed=seed,
        trainer=trainer,
        test=test,
        first_epoch=first_epoch,
        progress=progress,
        identity={
            "spec": spec,
            "keep": {n: at for n, (at, _) in keep.items()},
            "test": test,
            **(identity or {}),
        },
    )
    for epoch in run:  # kept beside the state until the run ends, so a kill cannot lose them
        if best_test and epoch > 0:
            earlier = [h["test_accuracy"] for h in run.history[1:-1]]
            if run.history[-1]["test_accuracy"] > max(earlier, default=-1.0):
                models.save_model(_kept(state_path, "best"), model, spec, epoch=epoch + 1)
        for name, (at, _) in keep.items():
            if at == epoch + 1:
                models.save_model(_kept(state_path, name), model, spec, epoch=epoch + 1)
    for name, (_, path) in keep.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        os.replace(_kept(state_path, name), path)
    if best_test and _kept(state_path, "best").exists():
        os.replace(_kept(state_path, "best"), out)
        model = models.load_model(out, dev, spec=spec)
    else:
        models.save_model(out, model, spec, epoch=recipe.epochs)
    state_path.unlink(missing_ok=True)
    return model.eval()
