"""The kinds of claim: one class each says what its difference is, what it asks of the config,
which files of a run folder it reads (so the workflow declares them and the claims job never
guesses a path), and where the paper's effect comes from; the paired bootstrap of the test
images (`Draws`) they evaluate on (docs/claims.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import ClassVar

import numpy as np
import pandas as pd

from . import derive, io, laood
from .layout import RunFolder
from .uncertainty import HIGHER_IS_BETTER, resample_counts, weighted_metric

# the run's metric settings a bootstrapped metric reads, with the defaults `metrics` has
METRIC_SETTINGS = {"fpr_rule": "first_ge", "fpr_positive": "id", "aupr": "ap"}


class Draws:
    """One paired bootstrap of the test images, shared by every claim, side and seed: count
    vectors per evaluated set (index 0 of each row is the observed data, all ones), and each
    metric computed on them, kept by its scores' content: claims share sides (base/energy is
    the baseline of three), and a side's metric on the draws is the costly part."""

    def __init__(self, draws: int, seed: int):
        self.draws, self.seed, self._counts, self._metrics = draws, seed, {}, {}

    def counts(self, name: str, n: int) -> np.ndarray:
        if (name, n) not in self._counts:
            rng = np.random.default_rng([self.seed, n, *name.encode()])
            resampled = resample_counts(n, self.draws, rng)
            self._counts[name, n] = np.r_[np.ones((1, n), resampled.dtype), resampled]
        return self._counts[name, n]

    def metric(self, metric: str, s_id, s_ood, id_name: str, ood_name: str, settings: list):
        """`metric` on the observed scores and on every draw (`weighted_metric` under the run's
        `settings`), computed once per set pair, settings and scores' content."""
        digest = hashlib.sha256()
        for s in (s_id, s_ood):
            digest.update(np.ascontiguousarray(s, np.float64).tobytes())
            digest.update(b"|")
        key = (metric, id_name, ood_name, *settings, digest.hexdigest())
        if key not in self._metrics:
            self._metrics[key] = weighted_metric(
                metric,
                s_id,
                s_ood,
                self.counts(id_name, len(s_id)),
                self.counts(ood_name, len(s_ood)),
                *settings,
            )
        return self._metrics[key]


@dataclasses.dataclass(frozen=True)
class Context:
    """What a claim's evaluation needs beyond its files: the shared draws, the run's metric
    settings, the sets it averages over, WatermarkNN's owners and attacks, and the seed."""

    draws: Draws
    metrics: dict
    id_test: str
    sets: list[str]
    owners: list[str]
    attacks: list[str]
    seed: int = 0

    def metric(self, metric: str, s_id, s_ood, name: str) -> np.ndarray:
        """A metric on the observed data and on every draw, under the run's metric settings."""
        if self.metrics.get("balance") == "first_n":
            n = min(len(s_id), len(s_ood))
            s_id, s_ood = s_id[:n], s_ood[:n]
        settings = [self.metrics.get(k, d) for k, d in METRIC_SETTINGS.items()]
        return self.draws.metric(metric, s_id, s_ood, self.id_test, name, settings)

    def mean_over_sets(self, metric: str, id_scores, ood_scores: dict) -> np.ndarray:
        return np.mean(
            [self.metric(metric, id_scores, ood_scores[s], s) for s in self.sets], axis=0
        )


def _signed(metric: str, value):
    return value if HIGHER_IS_BETTER[metric] else -value


def sets_of(claim: dict, ood: list[str], groups: dict[str, list[str]]) -> list[str]:
    """The OOD sets a claim's `over` names: all of them (`mean`), a group's, or one set."""
    over = claim.get("over", "mean")
    return list(ood) if over == "mean" else list(groups.get(over, [over]))


class Kind:
    """One kind of claim, bound to one claim of the config. `evaluate` returns, for one run
    folder, the observed difference, the difference on every bootstrap draw and the sides'
    own values (`a`, `b`) for the table."""

    name: ClassVar[str]
    strict: ClassVar[bool] = False  # claimed: difference > bound; otherwise ≥

    def __init__(self, claim: dict):
        self.claim = claim

    @property
    def bound(self) -> float:
        return 0.0

    def effect(self) -> float | None:
        """The paper's effect in the difference's units: `min_effect`, else from its values."""
        if "min_effect" in self.claim:
            return float(self.claim["min_effect"])
        paper = self.claim.get("paper", {})
        return self._paper_effect(paper["a"], paper["b"]) if {"a", "b"} <= set(paper) else None

    def _paper_effect(self, a: float, b: float) -> float | None:
        return None

    def reference(self, side: str) -> dict | None:
        """The `report.reference` row a paper value of `side` must equal, as column values."""
        return None

    def compares(self) -> str:
        """What the difference is, in words: its metric and which side is subtracted."""
        raise NotImplementedError

    def detail(self, ours: dict[str, float]) -> str:
        """What else the row needs to be read (a threshold, a − b), from ours' means over seeds."""
        return ""

    def problems(self, config: dict) -> list[tuple[str, str]]:
        """What the claim names that the config does not produce: (its key, why)."""
        raise NotImplementedError

    def files(self, run: RunFolder, bench: dict) -> dict:
        """The files of one run folder (one backbone, one seed) that the claim reads."""
        raise NotImplementedError

    def evaluate(self, paths: dict, ctx: Context) -> tuple[float, np.ndarray, dict]:
        raise NotImplementedError

    def _evaluated(self, bench: dict) -> list[str]:
        """The ID test set and the OOD sets of `over`: the sets whose files the claim reads."""
        return [bench["id_test"], *sets_of(self.claim, bench["ood"], bench.get("groups", {}))]

    def _on(self) -> str:
        return f"{self.claim.get('metric')} ({self.claim.get('over', 'mean')})"


class Better(Kind):
    """`a` (model/method) beats `b` on a metric, mean over the OOD sets of `over`, by `margin`:
    difference a − b (b − a for FPR95, where lower is better), claimed > margin."""

    name, strict = "better", True

    @property
    def bound(self) -> float:
        return float(self.claim.get("margin", 0.0))

    def _paper_effect(self, a, b):
        return float(_signed(self.claim["metric"], a - b))

    def reference(self, side):
        model, _, method = self.claim[side].partition("/")
        return {
            "model": model,
            "method": method,
            "ood_set": self.claim["over"],
            "metric": self.claim["metric"],
        }

    def compares(self):
        a, b = self.claim["a"], self.claim["b"]
        if HIGHER_IS_BETTER[self.claim["metric"]]:
            return f"{self._on()}: {a} − {b}"
        return f"{self._on()}: {b} − {a} (lower is better)"

    def problems(self, config):
        out = []
        for side in ("a", "b"):
            model, _, method = self.claim[side].partition("/")
            if model not in config["variants"]:
                out.append((side, f"model {model!r} is not one of the variants"))
            elif method not in derive.scores_of(config, model):
                out.append((side, f"method {method!r} is not scored on {model!r}"))
        return out

    def files(self, run, bench):
        sets = self._evaluated(bench)
        out = {}
        for side in ("a", "b"):
            model, _, method = self.claim[side].partition("/")
            out[side] = {
                "metrics": run.metrics(model, method),
                "scores": {s: run.scores(model, method, s) for s in sets},
            }
        return out

    def evaluate(self, paths, ctx):
        metric = self.claim["metric"]
        values, seen = {}, {}
        for side in ("a", "b"):
            scores = {s: np.load(p) for s, p in paths[side]["scores"].items()}
            values[side] = ctx.mean_over_sets(metric, scores[ctx.id_test], scores)
            table = pd.read_csv(paths[side]["metrics"])
            over = self.claim.get("over", "mean")
            row = table[(table["ood_set"] == over) & (table["metric"] == metric)]
            seen[side] = float(row["value"].iloc[0]) if len(row) else float(values[side][0])
        diff = _signed(metric, values["a"] - values["b"])
        point = _signed(metric, seen["a"] - seen["b"])  # the metrics table's own values
        return point, diff[1:], seen


class Stage(Better):
    """Unleashing Mask's observation: a snapshot of the base training, pre-registered in
    `training.snapshots` (never picked by looking at OOD data), detects OOD better with `method`
    than the final model. It is `better` with a = base.<snapshot>/<method>, b = base/<method>."""

    name = "stage"

    def __init__(self, claim: dict):
        snapshot, method = claim["snapshot"], claim["method"]
        super().__init__({**claim, "a": f"base.{snapshot}/{method}", "b": f"base/{method}"})

    def compares(self):
        return f"the {self.claim['snapshot']} stage against the final model; {super().compares()}"

    def problems(self, config):
        if self.claim["snapshot"] not in derive.snapshot_names(config):
            return [("snapshot", f"{self.claim['snapshot']!r} is not in training.snapshots")]
        return super().problems(config)


class Rank(Kind):
    """A method's own choice (a block, a layer) of `model` against the alternatives."""

    method: ClassVar[str]

    def problems(self, config):
        model = self.claim["model"]
        if model not in config["variants"]:
            return [("model", f"{model!r} is not one of the variants")]
        if self.method not in derive.scores_of(config, model):
            return [("of", f"{self.method} is not scored on {model!r}")]
        return []


class FeatureNormBlock(Rank):
    """The block NormRatio chose is among the `top` blocks by the metric: difference = the
    chosen block's value − the `top`-th best block's, claimed ≥ 0."""

    name, method = "featurenorm-block", "featurenorm"

    def compares(self):
        c = self.claim
        return (
            f"{self._on()} of {c['model']}: NormRatio's block (ours a) − the block ranked "
            f"{c['top']} (ours b)"
        )

    def files(self, run, bench):
        model = self.claim["model"]
        sets = self._evaluated(bench)
        return {
            "detector": run.detector(model, "featurenorm"),
            "features": {s: run.features(model, s) for s in sets},
        }

    def evaluate(self, paths, ctx):
        chosen = int(io.load_npz(paths["detector"], ["block"])["block"])
        norms = {s: io.load_npz(p, ["featnorm"])["featnorm"] for s, p in paths["features"].items()}
        metric, blocks = self.claim["metric"], norms[ctx.id_test].shape[1]
        per_block = np.stack(
            [
                ctx.mean_over_sets(
                    metric, norms[ctx.id_test][:, j], {s: v[:, j] for s, v in norms.items()}
                )
                for j in range(blocks)
            ],
            axis=1,
        )
        signed = _signed(metric, per_block)
        kth = np.sort(signed, axis=1)[:, -min(self.claim["top"], blocks)]
        diff = signed[:, chosen] - kth
        kth_value = float(_signed(metric, kth[0]))
        return float(diff[0]), diff[1:], {"a": float(per_block[0, chosen]), "b": kth_value}


class LaoodLayer(Rank):
    """LA-OOD's max over layers beats the single layer one would pick without OOD data (the
    smallest SDS validation error): difference = combined − that layer, claimed > 0."""

    name, method, strict = "laood-layer", "laood", True

    def compares(self):
        return (
            f"{self._on()} of {self.claim['model']}: max over layers (ours a) − the layer with "
            "the lowest SDS error (ours b)"
        )

    def files(self, run, bench):
        model = self.claim["model"]
        return {
            "detector": run.detector(model, "laood"),
            "decisions": run.laood_decisions(model),
        }

    def evaluate(self, paths, ctx):
        state = io.load_npz(paths["detector"], ["error_grid", "layer_names"])
        single = int(np.argmin(np.nanmin(state["error_grid"], axis=1)))  # no OOD data used
        decisions = io.load_npz(paths["decisions"])
        metric = self.claim["metric"]

        def value(column):
            return ctx.mean_over_sets(
                metric, column(decisions[ctx.id_test]), {s: column(decisions[s]) for s in ctx.sets}
            )

        combined, alone = value(laood.score), value(lambda d: d[:, single])
        diff = _signed(metric, combined - alone)
        return float(diff[0]), diff[1:], {"a": float(combined[0]), "b": float(alone[0])}


class TriggerAccuracy(Kind):
    """Every attacked owner keeps trigger accuracy at or above the ownership threshold and every
    null model stays below it: difference = the smaller of the two margins in points, ≥ 0."""

    name = "trigger-accuracy"

    def compares(self):
        return (
            "points: the smaller of (lowest attacked owner's trigger accuracy, ours a − the "
            "threshold) and (the threshold − one trigger − the best null model, ours b)"
        )

    def detail(self, ours):
        return f"threshold {ours['threshold']:.2f}"

    def problems(self, config):
        wnn = config.get("watermarknn")
        if not wnn:
            return [("of", "trigger-accuracy needs watermarknn")]
        known = {"owners": wnn["owners"], "attacks": wnn["attacks"]["kinds"]}
        return [
            (field, f"{name!r} is not configured")
            for field, names in known.items()
            for name in self.claim.get(field, [])
            if name not in names
        ]

    def files(self, run, bench):
        return {
            "verification": run.verification(),
            "ownership": run.ownership(),
        }

    def evaluate(self, paths, ctx):
        table = pd.read_csv(paths["verification"]).set_index("network")
        rule = json.loads(open(paths["ownership"]).read())
        n, threshold = int(rule["n_triggers"]), float(rule["threshold"])
        owners = self.claim.get("owners") or ctx.owners
        attacks = self.claim.get("attacks") or ctx.attacks
        networks = [f"{o}.{a}" for o in owners for a in attacks]
        rng = np.random.default_rng([ctx.draws.seed, ctx.seed, 7])
        # the bootstrap of an accuracy over n triggers is a binomial draw at the observed rate
        acc = np.array([float(table.at[name, "trigger_accuracy"]) for name in networks])
        boot = rng.binomial(n, acc[:, None], size=(len(acc), ctx.draws.draws)) / n
        null = rng.binomial(n, float(rule["null_max"]), size=ctx.draws.draws) / n
        step = 1.0 / n  # null models must stay strictly below the threshold: one trigger under it

        def margin(lowest, null_max):
            return 100 * np.minimum(lowest - threshold, threshold - step - null_max)

        point = float(margin(acc.min(), float(rule["null_max"])))
        seen = {
            "a": 100 * float(acc.min()),
            "b": 100 * float(rule["null_max"]),
            "threshold": 100 * threshold,
        }
        return point, margin(boot.min(axis=0), null), seen


class AccuracyCost(Kind):
    """Model `a` loses at most `at_most` points of ID accuracy against `b`: difference =
    at_most − (acc_b − acc_a), claimed ≥ 0."""

    name = "accuracy-cost"

    def _paper_effect(self, a, b):
        return float(self.claim["at_most"] - (b - a))

    def reference(self, side):
        return {"model": self.claim[side], "ood_set": "-", "metric": "id_accuracy"}

    def compares(self):
        c = self.claim
        return (
            f"points: {c['at_most']:g} − (ID accuracy of {c['b']}, ours b − that of {c['a']}, "
            "ours a)"
        )

    def detail(self, ours):
        return f"a − b {ours['a'] - ours['b']:+.2f} (claimed ≥ {-self.claim['at_most']:g})"

    def problems(self, config):
        return [
            (side, f"model {self.claim[side]!r} is not one of the variants")
            for side in ("a", "b")
            if self.claim[side] not in config["variants"]
        ]

    def files(self, run, bench):
        return {side: run.features(self.claim[side], bench["id_test"]) for side in "ab"}

    def evaluate(self, paths, ctx):
        correct = {}
        for side in ("a", "b"):
            feats = io.load_npz(paths[side], ["logits", "labels"])
            correct[side] = (feats["logits"].argmax(1) == feats["labels"]).astype(np.float64)
        w = ctx.draws.counts(ctx.id_test, len(correct["a"]))
        acc = {side: 100 * (w @ c) / w.sum(axis=1) for side, c in correct.items()}
        diff = self.claim["at_most"] - (acc["b"] - acc["a"])
        return float(diff[0]), diff[1:], {side: float(v[0]) for side, v in acc.items()}


KINDS = {
    k.name: k for k in (Better, Stage, FeatureNormBlock, LaoodLayer, TriggerAccuracy, AccuracyCost)
}


def bind(claim: dict) -> Kind:
    """The claim's kind (`better`, `stage`, or the `of` of a rank or bound claim), bound to it."""
    return KINDS[claim["of"] if claim["kind"] in ("rank", "bound") else claim["kind"]](claim)
