"""Unleashing Mask (Zhu et al., ICML 2023): estimate a loss constraint, then fine-tune with
the flooding loss |β·CE − UM| + UM (UM) or learn a pruning mask under it (UMAP).

The constraint UM is the training cross-entropy of the trained model with a random 3.5 %
of every layer's weights masked; flooding keeps the training loss from going below it,
which makes the model forget the atypical samples it memorised late in training. UMAP's
learned mask is baked into plain weights when it is saved, so the result is an ordinary
checkpoint that every feature and scoring rule reads as it reads any other. `finetune` runs
every `finetunes:` entry, outlier exposure and LA-OOD's co-training (`cotrain`) included. Spec:
docs/unleashing-mask.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from . import cotrain as co_training
from . import models, outlier_exposure, training
from .augmentation import augment
from .devices import pick_device
from .inference import to_tensor
from .recipe import Augment, Recipe
from .regime import um_level

OOD_FACTOR = 1.0  # outliers selected per ID training image where an exposure leaves it out


def flooding(ce: torch.Tensor, level: float, beta: float = 1.0) -> torch.Tensor:
    """|β·CE − UM| + UM on the mini-batch mean: descent above the level, ascent below it."""
    return (beta * ce - level).abs() + level


def prunable(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every conv and linear layer: the layers UM masks and UMAP prunes."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def n_pruned(numel: int, keep: float) -> int:
    """Weights zeroed per layer: ⌊(1 − k)·numel⌋ (the edge-popup convention)."""
    return int(math.floor((1 - keep) * numel + 1e-9))


# --------------------------------------------------------------------------- step A
@torch.no_grad()
def random_mask(model: nn.Module, keep: float, gen: torch.Generator) -> nn.Module:
    """Zero a uniformly random ⌊(1 − keep)·numel⌋ weights of every conv and linear layer."""
    for _, module in prunable(model):
        w = module.weight
        drop = torch.randperm(w.numel(), generator=gen)[: n_pruned(w.numel(), keep)].to(w.device)
        w.view(-1)[drop] = 0
    return model


@torch.no_grad()
def estimate_constraint(
    checkpoint,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    keep: float = 0.965,
    draws: int = 5,
    batch_size: int = 512,
    augmentation: dict | None = None,
    seed: int = 0,
    device: str = "auto",
    spec: dict | None,
) -> dict:
    """The loss constraint UM: the sample-weighted mean training CE of the randomly masked
    model in eval mode, over the augmented training set; the mean of `draws` seeded draws.
    `spec`: the model the config names (checked against the checkpoint's)."""
    dev = pick_device(device)
    aug = Augment.of(augmentation or {})
    x_all, y_all = to_tensor(images, dev), torch.from_numpy(np.asarray(labels, np.int64)).to(dev)
    values = []
    for d in range(draws):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + d)
        model = random_mask(models.load_model(checkpoint, dev, spec=spec), keep, gen).eval()
        total = 0.0
        perm = torch.randperm(len(y_all), generator=gen).to(dev)
        for i in range(0, len(y_all), batch_size):
            idx = perm[i : i + batch_size]
            x = augment(x_all[idx].float() / 255.0, aug.crop_padding, aug.flip, gen)
            total += F.cross_entropy(model(x), y_all[idx], reduction="sum").item()
        values.append(total / len(y_all))
    return {
        "level": float(np.mean(values)),
        "draws": values,
        "keep": keep,
        "checkpoint": str(checkpoint),
    }


# --------------------------------------------------------------------------- step C (UMAP)
class _TopK(torch.autograd.Function):
    """Binary mask keeping the largest entries; straight-through backward."""

    @staticmethod
    def forward(ctx, magnitude: torch.Tensor, keep: float) -> torch.Tensor:
        flat = magnitude.flatten()
        n_keep = flat.numel() - n_pruned(flat.numel(), keep)
        mask = torch.zeros_like(flat)
        mask[flat.topk(n_keep, sorted=False).indices] = 1  # exactly n_keep ones, even with ties
        return mask.view_as(magnitude)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class ScoreMask(nn.Module):
    """A parametrisation W ↦ W ⊙ TopK_keep(|S|) with learnable scores S (edge-popup).

    S starts Kaiming-uniform (a = √5, i.e. U(±1/√fan_in)), so training starts from a random
    pruning; the mask's gradient ∂L/∂(W⊙m) ⊙ W reaches S through |·| as ⊙ sign(S). The draw
    comes from `generator`: a seeded one makes the fine-tune repeatable, and its resume state
    recognisable (the state's fingerprint covers the starting scores).
    """

    def __init__(self, weight: torch.Tensor, keep: float, generator: torch.Generator | None = None):
        super().__init__()
        self.keep = keep
        scores = torch.empty(
            weight.shape, dtype=weight.dtype
        )  # drawn on the CPU, where the generator is
        nn.init.kaiming_uniform_(scores, a=math.sqrt(5), generator=generator)
        self.scores = nn.Parameter(scores.to(weight.device))

    def mask(self) -> torch.Tensor:
        return _TopK.apply(self.scores.abs(), self.keep)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask()


def attach_score_masks(
    model: nn.Module, keep: float, train_weights: bool = False, seed: int = 0
) -> list[nn.Parameter]:
    """Put a ScoreMask on every conv and linear weight, its scores drawn from `seed`; returns the
    parameters to train (the scores, and every other parameter too when `train_weights`)."""
    generator = torch.Generator().manual_seed(seed)
    for _, module in prunable(model):
        parametrize.register_parametrization(
            module, "weight", ScoreMask(module.weight, keep, generator)
        )
    scores = [m.parametrizations.weight[0].scores for _, m in prunable(model)]
    score_ids = {id(s) for s in scores}
    others = [p for p in model.parameters() if id(p) not in score_ids]
    for p in others:
        p.requires_grad_(train_weights)
    return scores + (others if train_weights else [])


def bake_masks(model: nn.Module) -> dict[str, float]:
    """Replace each ScoreMask by the masked weight it yields; returns each layer's kept share."""
    kept = {}
    for name, module in prunable(model):
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            kept[name] = float((module.weight != 0).float().mean())
    for p in model.parameters():
        p.requires_grad_(True)
    return kept


# --------------------------------------------------------------------------- fine-tuning
class IdLoss(training.Trainer):
    """Training on the ID term alone: plain CE, or the flooding objective."""

    def __init__(self, id_loss):
        self.id_loss = id_loss

    def loss(self, model, batch):
        logits = model(batch.x)
        return self.id_loss(logits, batch.y), logits


def flooding_level(flooding: bool, configured: float | None, constraint) -> float | None:
    """The level a fine-tune floods at: none without flooding, else the configured level, else
    the one `estimate_constraint` wrote to the `constraint` file."""
    if not flooding:
        return None
    if configured is not None:
        return configured
    return um_level(constraint)


def _objective(
    model,
    images,
    labels,
    recipe: Recipe,
    *,
    level,
    beta,
    exposure,
    outliers,
    cotrain,
    detector,
    spec: dict,
    seed: int,
    device,
) -> training.Trainer:
    """The fine-tune's trainer: the ID term (CE, flooded at `level` when given), plus outlier
    exposure on `outliers` or LA-OOD's co-training loss under `detector` (`finetune`)."""

    def id_loss(logits, y):
        ce = F.cross_entropy(logits, y)
        return ce if level is None else flooding(ce, level, beta)

    if exposure is not None:
        return outlier_exposure.make(
            exposure["method"],
            outliers,
            model=model,
            id_loss=id_loss,
            n_select=round(exposure.get("ood_factor", OOD_FACTOR) * len(labels)),
            params=exposure,
            spec=spec,
            crop_padding=recipe.augment.crop_padding,
            flip=recipe.augment.flip,
            seed=seed,
            device=device,
        )
    if cotrain is not None:
        return co_training.CoTraining(
            model,
            detector,
            images,
            weight=cotrain["weight"],
            layers=cotrain.get("layers"),
            batch_size=recipe.batch_size,
        )
    return IdLoss(id_loss)


def finetune(
    checkpoint,
    images: np.ndarray,
    labels: np.ndarray,
    recipe: dict,
    out,
    state_path,
    log_csv,
    *,
    level: float | None,
    beta: float = 1.0,
    mask_keep: float | None = None,
    train_weights: bool = False,
    exposure: dict | None = None,
    outliers: np.ndarray | None = None,
    cotrain: dict | None = None,
    detector: dict | None = None,
    test=None,
    seed: int = 0,
    device: str = "auto",
    spec: dict | None,
    progress: bool = True,
) -> nn.Module:
    """Fine-tune `checkpoint` (which must exist: never a random init).

    `level` None trains the ID term with plain CE; a number applies flooding at that level.
    `mask_keep` learns a UMAP mask over frozen weights (or joint with `train_weights`).
    `exposure` ({method, weight, ood_factor, method options}) adds that outlier-exposure term
    on `outliers`, with as many selected outliers as ood_factor × the ID training set.
    `cotrain` ({weight, layers}) trains with LA-OOD's co-training loss under the `detector`
    arrays fitted on `checkpoint` (cotrain.CoTraining).
    Saves an ordinary checkpoint; the UM level, mask and method are kept beside the weights.
    `spec`: the model the config names (checked against the checkpoint's).
    """
    dev = pick_device(device)
    model, ckpt = models.load_checkpoint(checkpoint, dev, spec=spec)
    spec = dict(ckpt["spec"])
    params = list(model.parameters())
    if mask_keep is not None:
        params = attach_score_masks(model, mask_keep, train_weights, seed=seed)

    method = dict(level=level, beta=beta, exposure=exposure, outliers=outliers)
    method.update(cotrain=cotrain, detector=detector)
    trainer = _objective(
        model, images, labels, Recipe.of(recipe), **method, spec=spec, seed=seed, device=dev
    )
    identity = {"spec": spec, "mask_keep": mask_keep, "train_weights": train_weights, "test": test}
    identity.update(method)
    training.Run(
        model,
        params,
        images,
        labels,
        recipe,
        state_path,
        log_csv,
        seed=seed,
        trainer=trainer,
        test=test,
        identity=identity,
        desc="fine-tune",
        progress=progress,
    ).fit()
    if cotrain is not None:
        trainer.close()
    info = {"um_level": level, "beta": beta, "from": str(checkpoint)}
    if mask_keep is not None:
        info["kept_fraction"] = bake_masks(model)
    if exposure is not None:
        info["exposure"] = exposure["method"]
    if cotrain is not None:
        info["cotrain"] = cotrain
    models.save_model(out, model, spec, finetune=info)
    Path(state_path).unlink(missing_ok=True)
    return model.eval()
