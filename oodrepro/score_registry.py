"""The post-hoc scores' registry: what the workflow needs to know of each score (`Score`), its
hyper-parameters bound once (`BoundScore`), and `register`, the decorator `oodrepro.scores`
puts every score function in with. Read it through `oodrepro.scores`, whose import fills it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .layout import CONVS, JIGSAW, PLAIN


@dataclass(frozen=True)
class Score:
    """One registered post-hoc score: how the workflow runs it, not what it computes (that is
    the score function's docstring: formula, paper, reference code).

    `score(features, state, **hp)` maps a dataset's cached features (or, with `needs="network"`,
    the model and the images) to one value per image, higher = more in-distribution;
    `fit(*train files, **hp)` returns the arrays `score` receives as `state`, fitted once per model
    on ID training data only. The config's `scores.<name>` are their keyword hyper-parameters,
    bound once (`bind`): each function receives those its signature declares.
    """

    name: str
    needs: str  # "features" or "network"
    score: Callable
    fit: Callable | None = None
    description: str = ""
    # the ID-training feature files `fit` reads, in order (keys of FIT_INPUTS)
    fit_inputs: tuple[str, ...] = ("train",)
    # which feature file of a dataset the score reads: PLAIN (logits, blocks) or CONVS
    reads: str = ""
    # its fitted state keeps rows of the training features (so its file grows with them)
    keeps_rows: bool = False

    def hyperparameters(self) -> set[str] | None:
        """The keywords the config may give it (its score's and its fit's, past their data);
        None where its fit takes any keyword and checks them itself."""
        names = set()
        for fn in filter(None, (self.score, self.fit)):
            params = list(inspect.signature(fn).parameters.values())
            if any(p.kind is p.VAR_KEYWORD for p in params):
                return None
            names |= {
                p.name for p in params if p.default is not p.empty or p.kind is p.KEYWORD_ONLY
            }
        return names - JOB_KEYWORDS

    @property
    def parallel_fit(self) -> bool:
        """Whether its fit spreads over several threads (it takes `n_jobs`)."""
        return self.fit is not None and "n_jobs" in inspect.signature(self.fit).parameters

    def bind(self, hp: dict) -> BoundScore:
        """The score with its hyper-parameters `hp` bound; a keyword it does not know is an
        error naming it."""
        known = self.hyperparameters()
        unknown = set() if known is None else set(hp) - known
        if unknown:
            raise TypeError(f"{self.name}: unknown hyper-parameters {sorted(unknown)}")
        return BoundScore(self, dict(hp))


# what a job, not the config, gives a score or a fit
JOB_KEYWORDS = {"state", "progress", "n_jobs", "augmentation", "seed"}


def _declared(fn: Callable, keywords: dict) -> dict:
    """The `keywords` that `fn` declares (all of them where it takes **kwargs)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(keywords)
    return {k: v for k, v in keywords.items() if k in params}


@dataclass(frozen=True)
class BoundScore:
    """A score with its hyper-parameters bound once, as pytorch-ood binds a Detector's: `fit` and
    the call hand each function only the keywords it declares, so neither takes ones it ignores."""

    spec: Score
    hp: dict

    def fit(self, *inputs, **job) -> dict[str, np.ndarray]:
        """The fitted state from the training inputs; `job` adds what the job gives a fit that
        declares it (`n_jobs`: the job's threads; a network fit's augmentation and seed)."""
        return self.spec.fit(*inputs, **_declared(self.spec.fit, {**self.hp, **job}))

    def __call__(self, *data, state=None, **job) -> np.ndarray:
        """One score per image of `data` (features; or the model and the images)."""
        return self.spec.score(*data, state, **_declared(self.spec.score, {**self.hp, **job}))


SCORES: dict[str, Score] = {}
# fit input name → feature-file suffix
FIT_INPUTS = {"train": PLAIN, "train_jigsaw": JIGSAW, "train_convs": CONVS}


def register(
    name: str,
    needs: str,
    fit: Callable | None = None,
    description: str = "",
    fit_inputs: tuple[str, ...] = ("train",),
    reads: str = "",
    keeps_rows: bool = False,
):
    """Decorator adding a score function to the registry under `name` (a `Score`): what it
    needs (cached "features" or the "network"), its `fit` if it has one and the training files
    that fit reads, whether the fitted state keeps training rows (the cost estimate's disk), and
    a one-line `description` for the summary's glossary. A new score is one
    decorated function (docs/extending.md); the rules (which jobs fit, dump or run the network)
    and the glossary read it from here."""
    if needs not in ("features", "network"):
        raise ValueError(f"needs must be 'features' or 'network', not {needs!r}")
    if set(fit_inputs) - set(FIT_INPUTS):
        raise ValueError(f"unknown fit inputs {fit_inputs}; known: {sorted(FIT_INPUTS)}")

    def deco(fn):
        if name in SCORES:
            raise KeyError(f"score {name!r} registered twice")
        SCORES[name] = Score(
            name, needs, fn, fit, description, tuple(fit_inputs), reads, keeps_rows
        )
        return fn

    return deco
