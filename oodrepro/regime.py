"""A claim's preconditions: the paper's regime as conditions on quantities a run logs.

A claim may list `requires: [{quantity, of, at_least | at_most}]` (docs/claims.md,
"Preconditions"). Each condition is checked on every seed; one that fails makes the claim's
verdict `out of regime`, and its row names the quantity, the value and the condition, so that
"the method does not do this" is never mixed with "the method was not run as its paper runs
it". One class per quantity says what it measures, what in the config produces it
(validation names the key otherwise) and which file of a run folder holds it.
"""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pandas as pd

from . import io
from .layout import RunFolder
from .metrics import accuracy_percent


class Quantity:
    """One logged quantity of a model (`of`) in one run folder, in the units its condition uses."""

    name: ClassVar[str]
    what: ClassVar[str]
    default_of: ClassVar[str | None] = "base"

    def problem(self, config: dict, of: str) -> str | None:
        """Why the config does not produce this quantity of `of`, or None."""
        return None

    def file(self, run: RunFolder, bench: dict, of: str, config: dict) -> str:
        raise NotImplementedError

    def value(self, path: str, of: str) -> float:
        raise NotImplementedError


def um_level(path) -> float:
    """The loss constraint UM that `unleashing_mask.estimate_constraint` wrote to `path`: the one
    reader of that file (fine-tunes flood at it, plots draw it, preconditions check it)."""
    return float(json.loads(open(path).read())["level"])


def _last_epoch(path: str) -> pd.Series:
    return pd.read_csv(path).iloc[-1]


class _TrainingLog(Quantity):
    """A column of the base training's last epoch (not produced for an imported base)."""

    column: ClassVar[str]
    scale: ClassVar[float]

    def problem(self, config, of):
        if of != "base":
            return f"{self.name} is logged for the trained base only, not {of!r}"
        imported = [n for n, b in config["backbones"].items() if "pretrained" in b]
        return f"backbones {imported} are imported: no training log" if imported else None

    def file(self, run, bench, of, config):
        return run.train_log()

    def value(self, path, of):
        return self.scale * float(_last_epoch(path)[self.column])


class TrainAccuracy(_TrainingLog):
    name, what, column, scale = (
        "train_accuracy",
        "training accuracy of the last epoch, %",
        "accuracy",
        100.0,
    )


class TrainLoss(_TrainingLog):
    name, what, column, scale = "train_loss", "training loss of the last epoch", "loss", 1.0


class TestAccuracy(Quantity):
    """A model's top-1 accuracy on the ID test set, in percent."""

    name, what = "test_accuracy", "ID test accuracy, %"

    def problem(self, config, of):
        return None if of in config["variants"] else f"{of!r} is not one of the variants"

    def file(self, run, bench, of, config):
        return run.features(of, bench["id_test"])

    def value(self, path, of):
        return accuracy_percent(**io.load_npz(path, ["logits", "labels"]))


class UMLevel(Quantity):
    """The loss constraint UM estimated on a checkpoint (Unleashing Mask's step A)."""

    name, what = "um_level", "the estimated loss constraint UM"

    def problem(self, config, of):
        if config["unleashing_mask"].get("level") is not None:
            return "unleashing_mask.level pins UM: nothing is estimated"
        floods = [n for n, ft in config["finetunes"].items() if ft["flooding"] and ft["from"] == of]
        return None if floods else f"no fine-tune floods from {of!r}"

    def file(self, run, bench, of, config):
        return run.um_level(of)

    def value(self, path, of):
        return um_level(path)


class LossChange(Quantity):
    """How much a fine-tune's or a watermark's loss moved in its last epoch, in percent of the
    one before (near 0: it has converged)."""

    name, what, default_of = "last_epoch_loss_change", "loss change of the last epoch, %", None

    def problem(self, config, of):
        model, _, watermark = (of or "").rpartition("+")
        if of in config["finetunes"] or (model and watermark in config["watermarks"]):
            return None
        return f"{of!r} is neither a fine-tune nor a '<model>+<watermark>'"

    def file(self, run, bench, of, config):
        return run.finetune_log(of) if of in config["finetunes"] else run.watermark_log(of)

    def value(self, path, of):
        loss = pd.read_csv(path)["loss"].to_numpy()
        return float(100 * (loss[-1] - loss[-2]) / abs(loss[-2])) if len(loss) > 1 else np.nan


class OwnerTriggerAccuracy(Quantity):
    """The lowest trigger accuracy of the WatermarkNN owners before any attack, in percent."""

    name, what, default_of = (
        "owner_trigger_accuracy",
        "owners' trigger accuracy before attacks, %",
        None,
    )

    def problem(self, config, of):
        wnn = config.get("watermarknn")
        if not wnn:
            return "needs watermarknn"
        return None if of is None or of in wnn["owners"] else f"{of!r} is not an owner"

    def file(self, run, bench, of, config):
        return run.verification()

    def value(self, path, of):
        table = pd.read_csv(path).set_index("network")
        # the rows: the clean base, each owner, and each attack on it as <owner>.<attack>
        owners = [of] if of else [n for n in table.index if "." not in n and n != "base"]
        return 100 * float(table.loc[owners, "trigger_accuracy"].min())


class NullTriggerAccuracy(Quantity):
    """The best trigger accuracy of the clean null models (chance level: near 1/classes)."""

    name, what, default_of = "null_trigger_accuracy", "best null model's trigger accuracy, %", None

    def problem(self, config, of):
        wnn = config.get("watermarknn")
        if not wnn:
            return "needs watermarknn"
        return (
            None
            if wnn["ownership"]["rule"] == "null-models"
            else "needs ownership.rule: null-models"
        )

    def file(self, run, bench, of, config):
        return run.ownership()

    def value(self, path, of):
        return 100 * float(json.loads(open(path).read())["null_max"])


QUANTITIES = {
    q.name: q()
    for q in (
        TrainAccuracy,
        TrainLoss,
        TestAccuracy,
        UMLevel,
        LossChange,
        OwnerTriggerAccuracy,
        NullTriggerAccuracy,
    )
}


class Condition:
    """One `requires:` entry bound to a claim: its quantity of `of`, and its bound."""

    def __init__(self, spec: dict):
        self.quantity = QUANTITIES[spec["quantity"]]
        self.of = spec.get("of", self.quantity.default_of)
        self.at_least, self.at_most = spec.get("at_least"), spec.get("at_most")

    def __str__(self) -> str:
        bounds = [
            f"{sign} {bound:g}"
            for sign, bound in (("≥", self.at_least), ("≤", self.at_most))
            if bound is not None
        ]
        return f"{self.quantity.name}{f' of {self.of}' if self.of else ''} {' and '.join(bounds)}"

    def met(self, value: float) -> bool:
        low = self.at_least is None or value >= self.at_least
        return bool(low and (self.at_most is None or value <= self.at_most))


def conditions(claim: dict) -> list[Condition]:
    return [Condition(spec) for spec in claim.get("requires", [])]


def files(claim: dict, run: RunFolder, bench: dict, config: dict) -> list[str]:
    """The file each of the claim's conditions reads in one run folder, in their order."""
    return [c.quantity.file(run, bench, c.of, config) for c in conditions(claim)]


def problems(claim: dict, config: dict) -> list[str]:
    """What a claim's conditions ask that the config does not produce, by quantity."""
    out = []
    for i, c in enumerate(conditions(claim)):
        why = c.quantity.problem(config, c.of)
        if why:
            out.append(f"requires[{i}] ({c.quantity.name}): {why}")
    return out


def failures(claim: dict, paths: list[str], seed: int) -> list[str]:
    """The claim's conditions that one seed's run does not meet, each with its value."""
    out = []
    for c, path in zip(conditions(claim), paths, strict=True):
        value = c.quantity.value(path, c.of)
        if not c.met(value):
            out.append(f"{c} required, seed {seed} has {value:.2f}")
    return out
