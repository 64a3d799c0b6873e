"""The papers' headline claims as checked statements (docs/claims.md).

A claim is one difference whose sign is what the paper says, measured per seed and given a
95 % interval (`uncertainty.interval`: seeds plus a paired bootstrap over the test images):

- `better`: model/method `a` beats `b` on a metric, mean over a set of OOD sets, by `margin`;
  difference = a − b (b − a for FPR95, lower is better), claimed > margin.
- `rank` `featurenorm-block`: the block NormRatio chose is among the `top` blocks by the metric;
  difference = the chosen block's value − the `top`-th best block's, claimed ≥ 0.
- `rank` `laood-layer`: LA-OOD's max over layers beats the single layer one would pick without
  OOD data (the smallest SDS validation error); difference = combined − that layer, claimed > 0.
- `bound` `trigger-accuracy`: every attacked owner keeps trigger accuracy at or above the
  ownership threshold and every null model stays below it; difference = the smaller of the two
  margins in points, claimed ≥ 0.
- `bound` `accuracy-cost`: model `a` loses at most `at_most` points of ID accuracy against `b`;
  difference = at_most − (acc_b − acc_a), claimed ≥ 0.

Each kind says which files of a run it reads (`files`), so the workflow can declare them and
the claims job never guesses a path.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from . import io, laood
from .uncertainty import HIGHER_IS_BETTER, interval, resample_counts, verdict, weighted_metric


def label(claim: dict) -> str:
    return claim["kind"] if claim["kind"] == "better" else claim["of"]


def sets_of(claim: dict, ood: list[str], groups: dict[str, list[str]]) -> list[str]:
    """The OOD sets a claim's `over` names: all of them (`mean`), a group's, or one set."""
    over = claim.get("over", "mean")
    return list(ood) if over == "mean" else list(groups.get(over, [over]))


def problems(config: dict) -> list[str]:
    """What a config's claims name that the config does not produce, each naming its key."""
    from .config import scores_of

    out, seen = [], set()
    bench, variants = config["benchmark"], config["variants"]
    overs = {"mean", *bench["ood"], *bench.get("groups", {})}
    wnn = config.get("watermarknn", {})
    for i, claim in enumerate(config.get("claims", [])):
        key = f"claims[{i}] ({claim['id']})"
        if claim["id"] in seen:
            out.append(f"{key}.id: used by an earlier claim")
        seen.add(claim["id"])
        what = label(claim)
        if claim.get("over", "mean") not in overs:
            out.append(f"{key}.over: {claim['over']!r} is not 'mean', a group or an OOD set")
        if what == "better":
            for side in ("a", "b"):
                model, _, method = claim[side].partition("/")
                if model not in variants:
                    out.append(f"{key}.{side}: model {model!r} is not one of the variants")
                elif method not in scores_of(config, model):
                    out.append(f"{key}.{side}: method {method!r} is not scored on {model!r}")
        elif what in ("featurenorm-block", "laood-layer"):
            method = what.partition("-")[0]
            if claim["model"] not in variants:
                out.append(f"{key}.model: {claim['model']!r} is not one of the variants")
            elif method not in scores_of(config, claim["model"]):
                out.append(f"{key}.of: {method} is not scored on {claim['model']!r}")
        elif what == "trigger-accuracy":
            if not wnn:
                out.append(f"{key}.of: trigger-accuracy needs watermarknn")
                continue
            for field, known in (("owners", wnn["owners"]), ("attacks", wnn["attacks"]["kinds"])):
                for name in claim.get(field, []):
                    if name not in known:
                        out.append(f"{key}.{field}: {name!r} is not configured")
        elif what == "accuracy-cost":
            for side in ("a", "b"):
                if claim[side] not in variants:
                    out.append(f"{key}.{side}: model {claim[side]!r} is not one of the variants")
        out += _paper_disagreements(key, claim, config["report"].get("reference", {}))
    return out


def _paper_disagreements(key: str, claim: dict, reference: dict) -> list[str]:
    """A claim's paper values must equal the reference rows printed in comparison.csv."""
    out = []
    for side, value in claim.get("paper", {}).items():
        if label(claim) == "better":
            model, _, method = claim[side].partition("/")
            where = {"model": model, "method": method, "ood_set": claim["over"]}
            where["metric"] = claim["metric"]
        elif label(claim) == "accuracy-cost":
            where = {"model": claim[side], "ood_set": "-", "metric": "id_accuracy"}
        else:
            continue
        rows = [
            r["value"]
            for r in reference.get("rows", [])
            if all(r.get(k, "base" if k == "model" else None) == v for k, v in where.items())
        ]
        if rows and value not in rows:
            out.append(
                f"{key}.paper.{side}: {value} differs from report.reference's {rows[0]} for "
                + ", ".join(f"{k} {v}" for k, v in where.items())
            )
    return out


def files(claim: dict, run: str, bench: dict) -> dict:
    """The files of one run folder (one backbone, one seed) that a claim reads."""
    what, id_test = label(claim), bench["id_test"]
    sets = [id_test, *sets_of(claim, bench["ood"], bench.get("groups", {}))]
    if what == "better":
        return {
            side: {
                "metrics": f"{run}/metrics/{model}/{method}.csv",
                "scores": {s: f"{run}/scores/{model}/{method}/{s}.npy" for s in sets},
            }
            for side, (model, _, method) in (
                (side, claim[side].partition("/")) for side in ("a", "b")
            )
        }
    if what == "featurenorm-block":
        return {
            "detector": f"{run}/detectors/{claim['model']}/featurenorm.npz",
            "features": {s: f"{run}/features/{claim['model']}/{s}.npz" for s in sets},
        }
    if what == "laood-layer":
        return {
            "detector": f"{run}/detectors/{claim['model']}/laood.npz",
            "decisions": f"{run}/laood/{claim['model']}/decisions.npz",
        }
    if what == "trigger-accuracy":
        return {
            "verification": f"{run}/watermarknn/verification.csv",
            "ownership": f"{run}/watermarknn/ownership.json",
        }
    return {side: f"{run}/features/{claim[side]}/{id_test}.npz" for side in ("a", "b")}


def flat(tree) -> list[str]:
    """Every path in a nested `files` mapping."""
    if isinstance(tree, dict):
        return [p for v in tree.values() for p in flat(v)]
    return [tree]


# --------------------------------------------------------------------------- per seed
class Draws:
    """One paired bootstrap of the test images, shared by every claim, side and seed: count
    vectors per evaluated set (index 0 of each row is the observed data, all ones)."""

    def __init__(self, draws: int, seed: int):
        self.draws, self.seed, self._counts = draws, seed, {}

    def counts(self, name: str, n: int) -> np.ndarray:
        if (name, n) not in self._counts:
            rng = np.random.default_rng([self.seed, n, *name.encode()])
            resampled = resample_counts(n, self.draws, rng)
            self._counts[name, n] = np.r_[np.ones((1, n), np.int64), resampled]
        return self._counts[name, n]


def _set_metric(metric, s_id, s_ood, name, id_name, draws, settings):
    """A metric on the observed data and on every draw, under the run's metric settings."""
    if settings.get("balance") == "first_n":
        n = min(len(s_id), len(s_ood))
        s_id, s_ood = s_id[:n], s_ood[:n]
    w_id = draws.counts(id_name, len(s_id))
    w_ood = draws.counts(name, len(s_ood))
    return weighted_metric(
        metric,
        s_id,
        s_ood,
        w_id,
        w_ood,
        settings.get("fpr_rule", "first_ge"),
        settings.get("fpr_positive", "id"),
        settings.get("aupr", "ap"),
    )


def _signed(metric: str, value):
    return value if HIGHER_IS_BETTER[metric] else -value


def _better(claim, paths, ctx):
    metric, sets, id_name = claim["metric"], ctx["sets"], ctx["id_test"]
    values, seen = {}, {}
    for side in ("a", "b"):
        scores = {s: np.load(p) for s, p in paths[side]["scores"].items()}
        per_set = [
            _set_metric(
                metric, scores[id_name], scores[s], s, id_name, ctx["draws"], ctx["metrics"]
            )
            for s in sets
        ]
        values[side] = np.mean(per_set, axis=0)
        table = pd.read_csv(paths[side]["metrics"])
        row = table[(table["ood_set"] == claim.get("over", "mean")) & (table["metric"] == metric)]
        seen[side] = float(row["value"].iloc[0]) if len(row) else float(values[side][0])
    diff = _signed(metric, values["a"] - values["b"])
    point = _signed(metric, seen["a"] - seen["b"])  # the metrics table's own values
    return point, diff[1:], seen


def _featurenorm_block(claim, paths, ctx):
    chosen = int(io.load_npz(paths["detector"], ["block"])["block"])
    norms = {s: io.load_npz(p, ["featnorm"])["featnorm"] for s, p in paths["features"].items()}
    id_name, metric = ctx["id_test"], claim["metric"]
    blocks = norms[id_name].shape[1]
    per_block = np.stack(
        [
            np.mean(
                [
                    _set_metric(
                        metric,
                        norms[id_name][:, j],
                        norms[s][:, j],
                        s,
                        id_name,
                        ctx["draws"],
                        ctx["metrics"],
                    )
                    for s in ctx["sets"]
                ],
                axis=0,
            )
            for j in range(blocks)
        ],
        axis=1,
    )
    signed = _signed(metric, per_block)
    kth = np.sort(signed, axis=1)[:, -min(claim["top"], blocks)]
    diff = signed[:, chosen] - kth
    return float(diff[0]), diff[1:], {"a": float(per_block[0, chosen])}


def _laood_layer(claim, paths, ctx):
    state = io.load_npz(paths["detector"], ["error_grid", "layer_names"])
    single = int(np.argmin(np.nanmin(state["error_grid"], axis=1)))  # no OOD data used
    decisions = io.load_npz(paths["decisions"])
    id_name, metric = ctx["id_test"], claim["metric"]

    def value(column):
        return np.mean(
            [
                _set_metric(
                    metric,
                    column(decisions[id_name]),
                    column(decisions[s]),
                    s,
                    id_name,
                    ctx["draws"],
                    ctx["metrics"],
                )
                for s in ctx["sets"]
            ],
            axis=0,
        )

    combined, alone = value(laood.score), value(lambda d: d[:, single])
    diff = _signed(metric, combined - alone)
    return float(diff[0]), diff[1:], {"a": float(combined[0]), "b": float(alone[0])}


def _trigger_accuracy(claim, paths, ctx):
    table = pd.read_csv(paths["verification"]).set_index("network")
    rule = json.loads(open(paths["ownership"]).read())
    n, threshold = int(rule["n_triggers"]), float(rule["threshold"])
    owners = claim.get("owners") or ctx["owners"]
    attacks = claim.get("attacks") or ctx["attacks"]
    networks = [f"{o}.{a}" for o in owners for a in attacks]
    rng = np.random.default_rng([ctx["draws"].seed, ctx["seed"], 7])
    # the bootstrap of an accuracy over n triggers is a binomial draw at the observed rate
    acc = np.array([float(table.at[name, "trigger_accuracy"]) for name in networks])
    boot = rng.binomial(n, acc[:, None], size=(len(acc), ctx["draws"].draws)) / n
    null = rng.binomial(n, float(rule["null_max"]), size=ctx["draws"].draws) / n
    step = 1.0 / n  # null models must stay strictly below the threshold: one trigger under it

    def margin(lowest, null_max):
        return 100 * np.minimum(lowest - threshold, threshold - step - null_max)

    point = float(margin(acc.min(), float(rule["null_max"])))
    return point, margin(boot.min(axis=0), null), {"a": 100 * float(acc.min())}


def _accuracy_cost(claim, paths, ctx):
    correct = {}
    for side in ("a", "b"):
        feats = io.load_npz(paths[side], ["logits", "labels"])
        correct[side] = (feats["logits"].argmax(1) == feats["labels"]).astype(np.float64)
    w = ctx["draws"].counts(ctx["id_test"], len(correct["a"]))
    acc = {side: 100 * (w @ c) / w.sum(axis=1) for side, c in correct.items()}
    diff = claim["at_most"] - (acc["b"] - acc["a"])
    return float(diff[0]), diff[1:], {side: float(v[0]) for side, v in acc.items()}


EVALUATE = {
    "better": _better,
    "featurenorm-block": _featurenorm_block,
    "laood-layer": _laood_layer,
    "trigger-accuracy": _trigger_accuracy,
    "accuracy-cost": _accuracy_cost,
}
STRICT = {"better": True, "laood-layer": True}  # the others claim ≥


def bound_of(claim: dict) -> float:
    return float(claim.get("margin", 0.0)) if claim["kind"] == "better" else 0.0


# --------------------------------------------------------------------------- across seeds
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
) -> pd.DataFrame:
    """One row per claim and backbone: the paper's values, ours (mean ± std over seeds), the
    difference, its interval and the verdict. `runs[arch][seed][claim id]` are the claim's
    `files` in that run folder."""
    draws = Draws(uncertainty.get("draws", 1000), uncertainty.get("seed", 0))
    wnn = watermarknn or {}
    rows = []
    for claim in claims:
        what = label(claim)
        for arch, seeds in runs.items():
            ctx = {
                "draws": draws,
                "metrics": metrics_settings,
                "id_test": bench["id_test"],
                "sets": sets_of(claim, bench["ood"], bench.get("groups", {})),
                "owners": list(wnn.get("owners", {})),
                "attacks": list(wnn.get("attacks", {}).get("kinds", [])),
            }
            points, boots, sides = [], [], {"a": [], "b": []}
            for seed, paths in seeds.items():
                point, boot, seen = EVALUATE[what](claim, paths[claim["id"]], {**ctx, "seed": seed})
                points.append(point)
                boots.append(boot)
                for side, v in seen.items():
                    sides[side].append(v)
            ci = interval(np.array(points), np.stack(boots), uncertainty.get("level", 0.95))
            bound = bound_of(claim)
            paper = claim.get("paper", {})
            rows.append(
                {
                    "claim": claim["id"],
                    "kind": what,
                    "arch": arch,
                    "statement": claim["statement"],
                    "source": claim["source"],
                    "compares": _compares(claim),
                    "paper a": paper.get("a", np.nan),
                    "paper b": paper.get("b", np.nan),
                    "ours a": _ours(sides["a"]),
                    "ours b": _ours(sides["b"]),
                    "difference": ci["mean"],
                    "std over seeds": ci["std"],
                    "ci low": ci["low"],
                    "ci high": ci["high"],
                    "claimed": f"{'>' if STRICT.get(what) else '≥'} {bound:g}",
                    "seeds": ci["seeds"],
                    "verdict": verdict(ci["low"], ci["high"], bound, STRICT.get(what, False)),
                    "note": "" if ci["seeds"] >= 3 else _FEW_SEEDS,
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


_FEW_SEEDS = "under 3 seeds: the interval holds test-set sampling only, no training variance"
COLUMNS = [
    "claim",
    "kind",
    "arch",
    "statement",
    "source",
    "compares",
    "paper a",
    "paper b",
    "ours a",
    "ours b",
    "difference",
    "std over seeds",
    "ci low",
    "ci high",
    "claimed",
    "seeds",
    "verdict",
    "note",
]


def _compares(claim: dict) -> str:
    what, on = label(claim), f"{claim.get('metric')} ({claim.get('over', 'mean')})"
    if what == "better":
        return f"{claim['a']} vs {claim['b']}, {on}"
    if what == "featurenorm-block":
        return f"{claim['model']}: NormRatio's block vs the top {claim['top']} blocks, {on}"
    if what == "laood-layer":
        return f"{claim['model']}: max over layers vs the lowest-SDS-error layer, {on}"
    if what == "trigger-accuracy":
        return "attacked owners' trigger accuracy − threshold; threshold − null models (points)"
    return f"{claim['a']} vs {claim['b']}: ID accuracy lost ≤ {claim['at_most']:g} points"
