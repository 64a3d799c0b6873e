"""Removal attacks: fine-tuning without triggers (FTLL, FTAL, RTLL, RTAL) and pruning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import models, training
from ..devices import pick_device
from ..inference import accuracy_fraction
from ..sampling import sample_indices
from .verification import trigger_accuracy

ATTACKS = {
    # name: (re-initialise the output layer, train every layer)
    "ftll": (False, False),
    "ftal": (False, True),
    "rtll": (True, False),
    "rtal": (True, True),
}


class Attacker(training.Trainer):
    """The fine-tuning attack's objective: plain cross-entropy without triggers, logging the
    trigger accuracy every epoch — with the owner's `original_head` where the attack replaced
    it (RT*), and with the attacker's own head. `frozen_eval` puts the layers that do not train
    in eval mode (their BatchNorm statistics then stay)."""

    def __init__(self, triggers, *, original_head: dict | None, frozen_eval: bool):
        self.triggers, self.original_head, self.frozen_eval = triggers, original_head, frozen_eval

    def train_mode(self, model) -> None:
        if self.frozen_eval:
            for module in model.modules():
                module.train(False)
            model.fc.train(True)

    def evaluate(self, model) -> dict:
        own = trigger_accuracy(model, *self.triggers)
        judged = (
            own
            if self.original_head is None
            else trigger_accuracy(model, *self.triggers, self.original_head)
        )
        return {"trigger_accuracy": judged, "trigger_accuracy_own_head": own}


def attack(
    owner_path,
    kind: str,
    images,
    labels,
    *,
    recipe: dict,
    out,
    state_path,
    log_csv,
    triggers,
    test,
    frozen: str = "train",
    seed: int = 0,
    device: str = "auto",
    spec: dict | None,
    progress: bool = True,
) -> models.Backbone:
    """Fine-tune the watermarked model without triggers (docs/watermarknn.md).

    FT*: keep the head; RT*: a fresh `Linear` (PyTorch default init). *LL trains only the
    output layer, *AL everything. "Frozen" layers stay in train mode (`frozen: train`, the
    code's behaviour: BatchNorm statistics drift) or are put in eval mode (`frozen: eval`).
    Every epoch logs test accuracy, trigger accuracy with the spec's head, and with the
    attacker's own head; the attacked checkpoint keeps the owner's head for verification.
    `spec`: the model the config names (checked against the owner checkpoint's).
    """
    reinit, all_layers = ATTACKS[kind]
    dev = pick_device(device)
    model, owner = models.load_checkpoint(owner_path, dev, spec=spec)
    spec = dict(owner["spec"])
    head0 = {"weight": model.fc.weight.detach().clone(), "bias": model.fc.bias.detach().clone()}
    if reinit:
        torch.manual_seed(seed)
        model.fc = torch.nn.Linear(model.fc.in_features, model.fc.out_features).to(dev)
    for p in model.parameters():
        p.requires_grad_(all_layers)
    for p in model.fc.parameters():
        p.requires_grad_(True)

    training.Run(
        model,
        [p for p in model.parameters() if p.requires_grad],
        images,
        labels,
        recipe,
        state_path,
        log_csv,
        seed=seed,
        trainer=Attacker(
            triggers,
            original_head=head0 if reinit else None,
            frozen_eval=frozen == "eval" and not all_layers,
        ),
        test=test,
        desc=kind,
        progress=progress,
        identity={
            "spec": spec,
            "attack": kind,
            "frozen": frozen,
            "triggers": triggers,
            "test": test,
        },
    ).fit()
    extra = (
        {"attack": kind, "original_head": {k: v.cpu() for k, v in head0.items()}}
        if reinit
        else {"attack": kind}
    )
    models.save_model(out, model, spec, **extra)
    Path(state_path).unlink(missing_ok=True)
    return model.eval()


def attacker_share(n: int, fraction: float, seed: int) -> np.ndarray:
    """Indices of the attacker's part of the training set (all of it at fraction 1)."""

    return sample_indices(n, None if fraction >= 1 else max(2, round(fraction * n)), seed)


def prune(model: models.Backbone, rate: float) -> models.Backbone:
    """Zero the `rate` fraction of smallest-magnitude weights in every conv and linear layer."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and rate > 0:
                w = module.weight
                k = int(round(rate * w.numel()))
                if k:
                    cut = w.abs().flatten().kthvalue(k).values
                    w.mul_((w.abs() > cut).to(w.dtype))
    return model


def pruning_curve(
    owner_path, rates: list[float], triggers, test, device: str = "auto", *, spec: dict | None
) -> pd.DataFrame:
    """Test and trigger accuracy of the watermarked model (carrying `spec`) pruned at each rate."""
    dev = pick_device(device)
    rows = []
    for rate in [0.0, *rates]:
        model = prune(models.load_model(owner_path, dev, spec=spec), rate)
        rows.append(
            {
                "prune_rate": rate,
                "test_accuracy": accuracy_fraction(model, *test),
                "trigger_accuracy": trigger_accuracy(model, *triggers),
            }
        )
    return pd.DataFrame(rows)
