"""The training recipe: its keys, the one home of their defaults, and its learning-rate schedule.

A config gives recipes as mappings, often partial (`training`, a backbone's or a fine-tune's
overrides). `Recipe.of` completes one with the defaults below; the config module's accessors
hand rules the complete mapping (`Recipe.as_dict`), since Snakemake compares only built-in
params between runs, and the library reads the fields (`recipe.momentum`). Torch-free: the
config module imports it before any job starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Augment:
    """Random crop after `crop_padding` pixels of zero padding (0: none) and horizontal flip,
    drawn per batch (`augmentation.augment`)."""

    crop_padding: int = 4
    flip: bool = True

    @classmethod
    def of(cls, augment: Mapping | Augment) -> Augment:
        return augment if isinstance(augment, Augment) else cls(**augment)


@dataclass(frozen=True)
class Schedule:
    """How the learning rate changes over epochs: constant, step (× `gamma` at each milestone
    epoch) or cosine (to 0 at the run's last epoch)."""

    kind: str = "constant"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def __post_init__(self):
        object.__setattr__(self, "milestones", tuple(self.milestones))


@dataclass(frozen=True)
class Recipe:
    """One SGD run: `epochs` over the training set in batches of `batch_size`, learning rate `lr`
    at epoch 0 scaled by `schedule`; `checkpoint` last or best_test (the epoch after the first
    with the best ID test accuracy, LA-OOD's code); `snapshots` names extra checkpoints at
    fractions of the run; `bf16` autocast (auto: on CUDA only) and `compile` (torch.compile)."""

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: Schedule = field(default_factory=Schedule)
    augment: Augment = field(default_factory=Augment)
    bf16: str | bool = "auto"
    compile: bool = False
    checkpoint: str = "last"
    snapshots: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, recipe: Mapping | Recipe) -> Recipe:
        """`recipe` completed with the defaults; an unknown key is an error naming it."""
        if isinstance(recipe, Recipe):
            return recipe
        unknown = set(recipe) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown recipe keys: {', '.join(sorted(unknown))}")
        given = dict(recipe)
        if "schedule" in given:
            given["schedule"] = Schedule(**given["schedule"])
        if "augment" in given:
            given["augment"] = Augment.of(given["augment"])
        return cls(**given)

    def as_dict(self) -> dict:
        """The complete recipe as plain YAML types (milestones as a list)."""
        out = dataclasses.asdict(self)
        out["schedule"]["milestones"] = list(self.schedule.milestones)
        out["snapshots"] = dict(self.snapshots)
        return out

    def lr_at(self, epoch: int) -> float:
        """The learning rate of `epoch` (0-based; a continuation counts from its first)."""
        sched = self.schedule
        if sched.kind == "constant":
            return self.lr
        if sched.kind == "step":
            return self.lr * sched.gamma ** sum(epoch >= m for m in sched.milestones)
        if sched.kind == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * epoch / self.epochs))
        raise ValueError(f"unknown schedule {sched.kind!r}")

    def kept_epochs(self) -> dict[str, int]:
        """Named checkpoints' epochs: a fraction of the run, rounded, at least epoch 1."""
        return {name: max(1, round(frac * self.epochs)) for name, frac in self.snapshots.items()}
