"""The papers' headline claims as checked statements (docs/claims.md).

A claim is one difference whose sign is what the paper says, measured per seed on the run's
files, with paired bootstrap draws over the test images; `decision` turns the seeds and draws
into an interval and a verdict under the seed schedule. One class per kind of claim says what
its difference is, what it asks of the config, which files of a run it reads (so the workflow
declares them and the claims job never guesses a path), and where the paper's effect comes from.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
from typing import ClassVar

import numpy as np
import pandas as pd

from . import derive, io, laood, regime
from .decision import NO_VERDICT, OUT_OF_REGIME, Schedule, sigma_upper
from .layout import RunFolder
from .scores import scores_of
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


# --------------------------------------------------------------------------- the kinds
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
            elif method not in scores_of(config, model):
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
        if self.method not in scores_of(config, model):
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


def files(claim: dict, run: str, bench: dict, config: dict) -> dict:
    """Every file one run folder gives the claim: its kind's, and under `requires` those of its
    preconditions (`regime`), keyed by their position."""
    folder = RunFolder(run)
    kept = regime.files(claim, folder, bench, config)
    return {
        **bind(claim).files(folder, bench),
        "requires": {str(i): f for i, f in enumerate(kept)},
    }


def flat(tree) -> list[str]:
    """Every path in a nested `files` mapping."""
    if isinstance(tree, dict):
        return [p for v in tree.values() for p in flat(v)]
    return [tree]


# --------------------------------------------------------------------------- validation
def problems(config: dict) -> list[str]:
    """What a config's claims name that the config does not produce, each naming its key."""
    out, seen = [], set()
    bench = config["benchmark"]
    overs = {"mean", *bench["ood"], *bench.get("groups", {})}
    reference = config["report"].get("reference", {}).get("rows", [])
    for i, claim in enumerate(config.get("claims", [])):
        key, kind = f"claims[{i}] ({claim['id']})", bind(claim)
        if claim["id"] in seen:
            out.append(f"{key}.id: used by an earlier claim")
        seen.add(claim["id"])
        if claim.get("over", "mean") not in overs:
            out.append(f"{key}.over: {claim['over']!r} is not 'mean', a group or an OOD set")
        out += [f"{key}.{field}: {message}" for field, message in kind.problems(config)]
        out += [f"{key}.{message}" for message in regime.problems(claim, config)]
        for side, value in claim.get("paper", {}).items():
            where = kind.reference(side)
            rows = [
                r["value"]
                for r in reference
                if where
                and all(r.get(k, "base" if k == "model" else None) == v for k, v in where.items())
            ]
            if rows and value not in rows:
                out.append(
                    f"{key}.paper.{side}: {value} differs from report.reference's {rows[0]} for "
                    + ", ".join(f"{k} {v}" for k, v in where.items())
                )
    return out


# --------------------------------------------------------------------------- across seeds
MORE_SEEDS = "make run SEEDS={seeds} [CONFIG=<preset>]"  # a row's advice
_SHARED = "every seed starts from the one released model: the seeds vary what is trained on it"


def _ours(values: list[float]) -> str:
    if not values:
        return ""
    mean = float(np.mean(values))
    return f"{mean:.2f} ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else f"{mean:.2f}"


def evaluate(
    claims: list[dict],
    runs: dict[str, dict[int, dict]],
    bench: dict,
    metrics_settings: dict,
    uncertainty: dict,
    watermarknn: dict | None = None,
    shared_backbones: tuple[str, ...] = (),
    more_seeds: str = MORE_SEEDS,
) -> pd.DataFrame:
    """One row per claim and backbone (`runs[arch][seed][claim id]` are the claim's files in that
    run folder, seeds in the config's order): the paper's values, ours, the difference, its
    interval, the verdict under the schedule and the seeds to decide. `shared_backbones` are
    those whose seeds all start from one released model; `more_seeds` is the command that adds
    seeds, with `{seeds}` for their number."""
    draws = Draws(uncertainty["draws"], uncertainty["seed"])
    schedule = Schedule.of(uncertainty)
    wnn = watermarknn or {}
    rows = []
    for claim in claims:
        kind = bind(claim)
        for arch, seeds in runs.items():
            ctx = Context(
                draws,
                metrics_settings,
                bench["id_test"],
                sets_of(claim, bench["ood"], bench.get("groups", {})),
                list(wnn.get("owners", {})),
                list(wnn.get("attacks", {}).get("kinds", [])),
            )
            points, boots, sides = [], [], collections.defaultdict(list)
            unmet = []
            for seed, paths in seeds.items():
                kept = paths[claim["id"]].get("requires", {})
                unmet += regime.failures(claim, list(kept.values()), seed)
                point, boot, seen = kind.evaluate(
                    paths[claim["id"]], dataclasses.replace(ctx, seed=seed)
                )
                points.append(point)
                boots.append(boot)
                for side, v in seen.items():
                    sides[side].append(v)
            row = _row(kind, schedule, np.array(points), np.stack(boots), more_seeds)
            if unmet:  # judged or not, the claim was not run in its paper's regime
                row["verdict"], row["seeds to decide"] = OUT_OF_REGIME, "—"
                said = f"out of regime: {'; '.join(unmet)}"
                row["note"] = "; ".join(filter(None, [said, row["note"]]))
            if arch in shared_backbones:
                row["note"] = "; ".join(filter(None, [row["note"], _SHARED]))
            paper = claim.get("paper", {})
            rows.append(
                {
                    "claim": claim["id"],
                    "kind": kind.name,
                    "arch": arch,
                    "statement": claim["statement"],
                    "source": claim["source"],
                    "compares": kind.compares(),
                    "paper a": paper.get("a", np.nan),
                    "paper b": paper.get("b", np.nan),
                    "ours a": _ours(sides["a"]),
                    "ours b": _ours(sides["b"]),
                    "detail": kind.detail({k: float(np.mean(v)) for k, v in sides.items()}),
                    **row,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def _row(kind: Kind, schedule: Schedule, points, draws, more_seeds: str) -> dict:
    """The columns that come from the seeds and draws (docs/claims.md, "Reading a row")."""
    bound, effect = kind.bound, kind.effect()
    judged = schedule.judge(points, draws, bound, kind.strict, effect)
    ci, seeds = judged.interval, len(points)
    claimed_side = points > bound if kind.strict else points >= bound
    notes = []
    if judged.verdict == NO_VERDICT:
        first = schedule.looks[0]
        notes.append(
            f"{seeds} seed{'s' * (seeds > 1)}: training variance unknown; the first look needs "
            f"{first}: {more_seeds.format(seeds=first)}"
        )
    elif judged.decided_at is not None and judged.look != seeds:
        notes.append(
            f"decided at {judged.look} seeds ({100 * judged.decided_at:g} %); "
            f"the interval shown is on all {seeds}"
        )
    elif judged.decided_at is None:
        later = [look for look in schedule.looks if look > seeds]
        if later:
            notes.append(f"next look: {more_seeds.format(seeds=later[0])}")
        elif seeds > schedule.looks[-1]:
            notes.append(f"past the schedule: judged on the first {schedule.looks[-1]} seeds")
    to_decide = (
        "—" if judged.decided_at is not None else schedule.seeds_to_decide(ci, bound, effect)
    )
    power_s = power_upper = "—"
    if effect is not None and seeds > 1:
        power_s = schedule.seeds_for_power(effect - bound, ci.std)
        upper = sigma_upper(ci.std, seeds)
        power_upper = f"{schedule.seeds_for_power(effect - bound, upper)} (σ ≤ {upper:.2f})"
    return {
        "paper effect": np.nan if effect is None else effect,
        "difference": ci.mean,
        "ci low": ci.low,
        "ci high": ci.high,
        "level": ci.level,
        "seed half-width": ci.seed_half,
        "test half-width": ci.test_half,
        "shared test share": ci.shared_share,
        "std over seeds": ci.std if seeds > 1 else np.nan,  # undefined for one seed
        "claimed": f"{'>' if kind.strict else '≥'} {bound:g}",
        "seeds": seeds,
        "on claimed side": f"{int(claimed_side.sum())} of {seeds}",
        "look": "" if judged.look is None else judged.look,
        "verdict": judged.verdict,
        "seeds to decide": to_decide,
        "seeds for 80 % power": power_s,
        "seeds for 80 % power (σ upper 95 %)": power_upper,
        "note": "; ".join(notes),
    }


COLUMNS = [
    "claim",
    "kind",
    "arch",
    "statement",
    "source",
    "compares",
    "paper a",
    "paper b",
    "paper effect",
    "ours a",
    "ours b",
    "detail",
    "difference",
    "ci low",
    "ci high",
    "level",
    "seed half-width",
    "test half-width",
    "shared test share",
    "std over seeds",
    "claimed",
    "seeds",
    "on claimed side",
    "look",
    "verdict",
    "seeds to decide",
    "seeds for 80 % power",
    "seeds for 80 % power (σ upper 95 %)",
    "note",
]
