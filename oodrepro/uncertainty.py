"""How much a metric moves with the test images: a paired bootstrap over them (docs/conventions.md,
"Uncertainty of a claim"); `decision` turns the draws and the seeds into an interval and a verdict.

A bootstrap draw resamples the ID test images and each OOD set with replacement. Drawing an
image k times is the same as giving it weight k, so every metric here is computed from weights
(B draws at once, one row each) instead of from copied arrays; with all weights 1 the values
equal `metrics.ood_metrics` exactly (tested). Both sides of a difference, and every seed, get
the same draw: the test set is one sample that all of them share.
"""

from __future__ import annotations

import numpy as np

HIGHER_IS_BETTER = {"auroc": True, "aupr_in": True, "aupr_out": True, "fpr95": False}
CHUNK = 64  # draws computed together: memory CHUNK × (N_ID + N_OOD) floats


def resample_counts(n: int, draws: int, rng: np.random.Generator) -> np.ndarray:
    """draws × n counts: how often each of n items appears in each bootstrap resample of n
    (int32: a row sums to n, and half the bytes of int64 halve the curves' memory traffic)."""
    idx = rng.integers(0, n, size=(draws, n)) + n * np.arange(draws)[:, None]
    return np.bincount(idx.ravel(), minlength=draws * n).reshape(draws, n).astype(np.int32)


def _weighted_curve(pos, neg, w_pos, w_neg):
    """(false positives, true positives) per draw at each distinct score, highest first — the
    weighted form of `metrics.binary_curve`. One sort serves every draw; each side's weights are
    summed cumulatively in that order on their own (integer counts, exact) and read at the
    position each threshold has reached on that side."""
    s = np.concatenate([pos, neg])
    order = np.argsort(s, kind="stable")[::-1]
    is_pos = order < len(pos)
    last = np.r_[np.flatnonzero(np.diff(s[order])), len(s) - 1]
    n_pos_seen = np.cumsum(is_pos)[last]
    n_neg_seen = last + 1 - n_pos_seen

    def cumulative(w, idx, seen):
        cum = np.zeros((len(w), len(idx) + 1), w.dtype)  # counts: exact in their own type
        np.cumsum(w[:, idx], axis=1, out=cum[:, 1:])
        return cum[:, seen].astype(np.float64)

    tps = cumulative(w_pos, order[is_pos], n_pos_seen)
    fps = cumulative(w_neg, order[~is_pos] - len(pos), n_neg_seen)
    return fps, tps


def _auroc(fps, tps):
    fpr = np.c_[np.zeros(len(fps)), fps / fps[:, -1:]]
    tpr = np.c_[np.zeros(len(tps)), tps / tps[:, -1:]]
    return np.sum(np.diff(fpr, axis=1) * (tpr[:, 1:] + tpr[:, :-1]) / 2, axis=1)


def _fpr(fps, tps, rule: str, tpr: float = 0.95):
    """FPR at the given TPR under `rule` (as `metrics._FPR`), per draw; weights are counts."""
    total_pos, total_neg = tps[:, -1], fps[:, -1]
    pct = round(tpr * 100)
    if rule == "first_ge":  # first threshold (highest first) whose TP count reaches ⌈tpr·P⌉
        k = (pct * np.rint(total_pos).astype(np.int64) + 99) // 100
        i = np.argmax(tps >= k[:, None], axis=1)
    elif rule == "closest":  # |recall − tpr| smallest, a tie to the lowest threshold
        gap = np.abs(100 * tps - pct * total_pos[:, None])
        i = gap.shape[1] - 1 - np.argmin(gap[:, ::-1], axis=1)
    elif rule == "interp":
        fpr = np.c_[np.zeros(len(fps)), fps / total_neg[:, None]]
        tprs = np.c_[np.zeros(len(tps)), tps / total_pos[:, None]]
        return np.array([np.interp(tpr, t, f) for t, f in zip(tprs, fpr, strict=True)])
    else:
        raise ValueError(f"unknown FPR rule {rule!r}")
    return fps[np.arange(len(fps)), i] / total_neg


def _aupr(fps, tps, mode: str):
    seen = tps + fps
    precision = np.divide(tps, seen, out=np.ones_like(tps), where=seen > 0)
    recall = np.c_[np.zeros(len(tps)), tps / tps[:, -1:]]
    if mode == "ap":
        return np.sum(np.diff(recall, axis=1) * precision, axis=1)
    precision = np.c_[np.ones(len(tps)), precision]
    return np.sum(np.diff(recall, axis=1) * (precision[:, 1:] + precision[:, :-1]) / 2, axis=1)


def weighted_metric(
    metric: str,
    s_id: np.ndarray,
    s_ood: np.ndarray,
    w_id: np.ndarray,
    w_ood: np.ndarray,
    fpr_rule: str = "first_ge",
    fpr_positive: str = "id",
    aupr: str = "ap",
) -> np.ndarray:
    """One metric (percent) for each row of weights: w_id is draws × N_ID, w_ood draws × N_OOD."""
    s_id, s_ood = np.asarray(s_id, np.float64), np.asarray(s_ood, np.float64)
    out = []
    for c in range(0, len(w_id), CHUNK):
        wi, wo = w_id[c : c + CHUNK], w_ood[c : c + CHUNK]
        if metric == "auroc":
            value = _auroc(*_weighted_curve(s_id, s_ood, wi, wo))
        elif metric == "aupr_in":
            value = _aupr(*_weighted_curve(s_id, s_ood, wi, wo), aupr)
        elif metric == "aupr_out":
            value = _aupr(*_weighted_curve(-s_ood, -s_id, wo, wi), aupr)
        elif metric == "fpr95" and fpr_positive == "id":
            value = _fpr(*_weighted_curve(s_id, s_ood, wi, wo), fpr_rule)
        elif metric == "fpr95" and fpr_positive == "ood":
            value = _fpr(*_weighted_curve(-s_ood, -s_id, wo, wi), fpr_rule)
        else:
            raise ValueError(f"no bootstrap for metric {metric!r} (positive {fpr_positive!r})")
        out.append(100 * value)
    return np.concatenate(out)
