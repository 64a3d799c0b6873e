"""OOD metrics with ID as the positive class by default (docs/README.md, conventions).

Scores are oriented higher = more ID. FPR95 offers the three threshold rules
(`first_ge` default, `closest`, `interp`) and either positive class; AUPR offers
average precision (default) or the trapezoidal area.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

FPR_RULES = ("first_ge", "closest", "interp")
POSITIVES = ("id", "ood")
AUPR_MODES = ("ap", "trapezoid")


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
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    fpr, tpr_curve, _ = roc_curve(y, np.concatenate([pos, neg]), drop_intermediate=False)
    return float(np.interp(tpr, tpr_curve, fpr))


_FPR = {"first_ge": _fpr_first_ge, "closest": _fpr_closest, "interp": _fpr_interp}


def fpr_at_tpr(s_id, s_ood, rule: str = "first_ge", positive: str = "id", tpr: float = 0.95) -> float:
    s_id, s_ood = np.asarray(s_id, np.float64), np.asarray(s_ood, np.float64)
    if rule not in _FPR:
        raise ValueError(f"unknown FPR rule {rule!r}; one of {FPR_RULES}")
    if positive == "id":
        return _FPR[rule](s_id, s_ood, tpr)
    if positive == "ood":
        return _FPR[rule](-s_ood, -s_id, tpr)
    raise ValueError(f"positive must be one of {POSITIVES}")


def _aupr(y: np.ndarray, s: np.ndarray, mode: str) -> float:
    if mode == "ap":
        return float(average_precision_score(y, s))
    if mode == "trapezoid":
        precision, recall, _ = precision_recall_curve(y, s)
        return float(auc(recall, precision))
    raise ValueError(f"unknown AUPR mode {mode!r}; one of {AUPR_MODES}")


def ood_metrics(s_id, s_ood, fpr_rule="first_ge", fpr_positive="id", aupr="ap") -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out and FPR95, in percent."""
    s_id, s_ood = np.asarray(s_id, np.float64), np.asarray(s_ood, np.float64)
    if not (np.all(np.isfinite(s_id)) and np.all(np.isfinite(s_ood))):
        raise ValueError("scores contain NaN or infinity")
    y = np.concatenate([np.ones(len(s_id)), np.zeros(len(s_ood))])
    s = np.concatenate([s_id, s_ood])
    return {
        "auroc": 100 * float(roc_auc_score(y, s)),
        "aupr_in": 100 * _aupr(y, s, aupr),
        "aupr_out": 100 * _aupr(1 - y, -s, aupr),
        "fpr95": 100 * fpr_at_tpr(s_id, s_ood, fpr_rule, fpr_positive),
    }


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return 100 * float(np.mean(np.asarray(logits).argmax(1) == np.asarray(labels)))
