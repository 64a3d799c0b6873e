"""OOD metrics with ID as the positive class by default, and the evaluation protocol that
turns one score's files into a metrics table (docs/conventions.md).

Scores are oriented higher = more ID. FPR95 offers the three threshold rules
(`first_ge` default, `closest`, `interp`) and either positive class; AUPR offers
average precision (default) or the trapezoidal area. `metrics_table` applies them per OOD
set under the balanced or subsampled protocols and adds the group means and ID accuracy.

The curves are computed here in numpy, as scikit-learn's `roc_curve`, `roc_auc_score`,
`average_precision_score` and `precision_recall_curve` + `auc` compute them (one point per
distinct score; tests compare value for value): importing `sklearn.metrics` costs a job that
only reads a few thousand scores about 1.5 s, most of its run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

FPR_RULES = ("first_ge", "closest", "interp")
POSITIVES = ("id", "ood")
AUPR_MODES = ("ap", "trapezoid")


def binary_curve(pos: np.ndarray, neg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positives, true positives, threshold) at each distinct score, highest score first:
    what a threshold at that score accepts."""
    s = np.concatenate([pos, neg])
    order = np.argsort(s, kind="stable")[::-1]
    s = s[order]
    is_pos = (order < len(pos)).astype(np.int64)
    last = np.r_[
        np.flatnonzero(np.diff(s)), len(s) - 1
    ]  # the last index of each run of equal scores
    tps = np.cumsum(is_pos)[last]
    return 1 + last - tps, tps, s[last]


def roc_curve(pos, neg) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) from (0, 0) through every distinct threshold to (1, 1)."""
    fps, tps, _ = binary_curve(np.asarray(pos, np.float64), np.asarray(neg, np.float64))
    return np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2))


def auroc(pos, neg) -> float:
    """Area under the ROC curve (ties count one half), a fraction."""
    fpr, tpr = roc_curve(pos, neg)
    return _trapezoid(fpr, tpr)


def _fpr_first_ge(pos: np.ndarray, neg: np.ndarray, tpr: float) -> float:
    """Negatives accepted at the k-th largest positive score, k = ⌈tpr·N⌉ in integer arithmetic."""
    pct = round(tpr * 100)
    k = (pct * len(pos) + 99) // 100
    t = np.sort(pos)[::-1][k - 1]
    return float(np.mean(neg >= t))


def _fpr_closest(pos: np.ndarray, neg: np.ndarray, tpr: float) -> float:
    """Hendrycks-style: the distinct threshold whose recall is closest to `tpr`.

    The gap |recall − tpr| is compared in integer arithmetic so that exact ties are
    ties; a tie goes to the lowest threshold, i.e. the higher recall.
    """
    thresholds = np.unique(np.concatenate([pos, neg]))  # ascending
    tp = len(pos) - np.searchsorted(np.sort(pos), thresholds, side="left")
    fp = len(neg) - np.searchsorted(np.sort(neg), thresholds, side="left")
    gap = np.abs(100 * tp - round(tpr * 100) * len(pos))
    i = int(np.argmin(gap))  # first minimum = lowest threshold among ties
    return float(fp[i] / len(neg))


def _fpr_interp(pos: np.ndarray, neg: np.ndarray, tpr: float) -> float:
    """FPR linearly interpolated at `tpr` on the full ROC curve (LA-OOD)."""
    fpr, tpr_curve = roc_curve(pos, neg)
    return float(np.interp(tpr, tpr_curve, fpr))


_FPR = {"first_ge": _fpr_first_ge, "closest": _fpr_closest, "interp": _fpr_interp}


def fpr_at_tpr(
    s_id, s_ood, rule: str = "first_ge", positive: str = "id", tpr: float = 0.95
) -> float:
    s_id, s_ood = np.asarray(s_id, np.float64), np.asarray(s_ood, np.float64)
    if rule not in _FPR:
        raise ValueError(f"unknown FPR rule {rule!r}; one of {FPR_RULES}")
    if positive == "id":
        return _FPR[rule](s_id, s_ood, tpr)
    if positive == "ood":
        return _FPR[rule](-s_ood, -s_id, tpr)
    raise ValueError(f"positive must be one of {POSITIVES}")


def pr_area(pos, neg, mode: str = "ap") -> float:
    """Area under the precision-recall curve of `pos` as the positive class, a fraction:
    `ap` Σ (R_k − R_{k−1}) · P_k over the distinct thresholds, `trapezoid` the trapezoidal
    area from (recall 0, precision 1)."""
    if mode not in AUPR_MODES:
        raise ValueError(f"unknown AUPR mode {mode!r}; one of {AUPR_MODES}")
    fps, tps, _ = binary_curve(np.asarray(pos, np.float64), np.asarray(neg, np.float64))
    precision, recall = tps / (tps + fps), tps / tps[-1]
    if mode == "ap":
        return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    return _trapezoid(np.r_[0.0, recall], np.r_[1.0, precision])


def ood_metrics(s_id, s_ood, fpr_rule="first_ge", fpr_positive="id", aupr="ap") -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out and FPR95, in percent."""
    s_id, s_ood = np.asarray(s_id, np.float64), np.asarray(s_ood, np.float64)
    if not (np.all(np.isfinite(s_id)) and np.all(np.isfinite(s_ood))):
        raise ValueError("scores contain NaN or infinity")
    if not (len(s_id) and len(s_ood)):
        raise ValueError("need at least one ID and one OOD score")
    return {
        "auroc": 100 * auroc(s_id, s_ood),
        "aupr_in": 100 * pr_area(s_id, s_ood, aupr),
        "aupr_out": 100 * pr_area(-s_ood, -s_id, aupr),
        "fpr95": 100 * fpr_at_tpr(s_id, s_ood, fpr_rule, fpr_positive),
    }


def accuracy_percent(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent, as the metrics tables report it."""
    return 100 * float(np.mean(np.asarray(logits).argmax(1) == np.asarray(labels)))


# the columns that identify a row of every metrics table
KEYS = ["benchmark", "arch", "seed", "model", "method"]


def _one_set(a, b, index: int, subsample: dict | None, settings) -> tuple[dict, int]:
    """Every metric of the ID scores `a` against one OOD set's `b` (the `index`-th), or with
    `subsample` their mean over seeded random subsets of b; and how many OOD images each
    comparison held."""
    if not subsample:
        return ood_metrics(a, b, *settings), len(b)
    rng = np.random.default_rng([subsample.get("seed", 0), index])
    k = min(subsample["n"], len(b))
    draws = [
        ood_metrics(a, b[rng.choice(len(b), size=k, replace=False)], *settings)
        for _ in range(subsample.get("draws", 5))
    ]
    return {m: float(np.mean([d[m] for d in draws])) for m in draws[0]}, k


def metrics_table(
    s_id: np.ndarray,
    s_ood: dict[str, np.ndarray],
    id_accuracy: float,
    context: dict,
    *,
    groups: dict[str, list[str]] | None = None,
    fpr_rule: str = "first_ge",
    fpr_positive: str = "id",
    aupr: str = "ap",
    balance: str = "none",
    subsample: dict | None = None,
) -> pd.DataFrame:
    """Tidy rows for one (model, method): every metric per OOD set, the mean over each group
    of sets (`groups`, e.g. near/far) and over all sets, and ID accuracy.

    `balance="first_n"` evaluates each OOD set against the first n = min(N_ID, N_OOD) rows
    of both (LA-OOD's protocol); the default uses every image of both. `subsample`
    ({n, draws, seed}) instead scores each OOD set on `draws` seeded random subsets of n
    images against the whole ID set and reports the mean (the Energy / Watermarking protocol).
    """
    import pandas as pd  # here: the other metrics serve jobs that never build a table

    if balance not in ("none", "first_n"):
        raise ValueError(f"balance must be 'none' or 'first_n', not {balance!r}")
    rows, per_set = [], {}
    for name, s in s_ood.items():
        n = min(len(s_id), len(s)) if balance == "first_n" else None
        a, b = (s_id[:n], s[:n]) if n else (s_id, s)
        settings = (fpr_rule, fpr_positive, aupr)
        per_set[name], n_ood = _one_set(a, b, len(per_set), subsample, settings)
        rows += [
            {"ood_set": name, "metric": metric, "value": value, "n_id": len(a), "n_ood": n_ood}
            for metric, value in per_set[name].items()
        ]
    counts = {r["ood_set"]: (r["n_id"], r["n_ood"]) for r in rows}
    for group, members in {**(groups or {}), "mean": list(s_ood)}.items():
        for metric in next(iter(per_set.values())):
            value = float(np.mean([per_set[m][metric] for m in members]))
            rows.append(
                {
                    "ood_set": group,
                    "metric": metric,
                    "value": value,
                    "n_id": max(counts[m][0] for m in members),
                    "n_ood": sum(counts[m][1] for m in members),
                }
            )
    rows.append(
        {
            "ood_set": "-",
            "metric": "id_accuracy",
            "value": id_accuracy,
            "n_id": len(s_id),
            "n_ood": 0,
        }
    )
    frame = pd.DataFrame(rows)
    for k, v in context.items():
        frame[k] = v
    frame["fpr_rule"], frame["fpr_positive"] = fpr_rule, fpr_positive
    frame["aupr_mode"], frame["balance"] = aupr, balance
    settings = ["fpr_rule", "fpr_positive", "aupr_mode", "balance"]
    return frame[KEYS + ["ood_set", "metric", "value", "n_id", "n_ood", *settings]]
