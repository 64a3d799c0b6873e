"""Metrics against hand-computed small cases (conventions: docs/README.md)."""

import numpy as np
import pytest

from oodrepro import metrics


def test_auroc_with_ties_counts_half():
    # pairs: (3>1),(3>2),(2>1),(2=2) → (3 + 0.5)/4
    assert metrics.ood_metrics([3, 2], [1, 2])["auroc"] == pytest.approx(87.5)


def test_perfect_and_reversed_separation():
    m = metrics.ood_metrics([5, 6, 7], [1, 2])
    assert m["auroc"] == 100 and m["fpr95"] == 0 and m["aupr_in"] == 100 and m["aupr_out"] == 100
    assert metrics.ood_metrics([1, 2], [5, 6, 7])["auroc"] == 0


def test_fpr95_first_ge_id_positive():
    s_id = np.arange(1, 21)  # 20 ID scores; k = ceil(0.95·20) = 19 → t* = 2
    s_ood = np.array([0, 1, 2, 3, 10])  # accepted: ≥ 2 → 3 of 5
    assert metrics.fpr_at_tpr(s_id, s_ood) == pytest.approx(0.6)


def test_fpr95_first_ge_uses_integer_ceiling():
    s_id = np.arange(1, 101)  # k = 95 exactly, t* = 6
    assert metrics.fpr_at_tpr(s_id, np.array([5, 6])) == pytest.approx(0.5)
    s_id = np.arange(1, 102)  # 101 → k = 96 (95.95 rounded up), t* = 6
    assert metrics.fpr_at_tpr(s_id, np.array([5, 6])) == pytest.approx(0.5)
    s_id = np.arange(1, 22)  # 21 → k = 20 (19.95 up), t* = 2
    assert metrics.fpr_at_tpr(s_id, np.array([1, 2])) == pytest.approx(0.5)


def test_fpr95_closest_may_sit_below_95():
    # 10 ID: recall 0.9 at t=2 and t=1.5, 1.0 at t=1; |0.9−.95| = |1.0−.95| exactly: tie → lowest t
    # (=1)
    s_id = np.arange(1, 11)
    s_ood = np.array([1, 1.5, 20])
    assert metrics.fpr_at_tpr(s_id, s_ood, rule="closest") == pytest.approx(1.0)
    # 40 ID: recall 39/40 = .975 at t=2 vs 38/40 = .95 at t=3 → t=3 exactly
    s_id = np.arange(1, 41)
    s_ood = np.array([2, 3, 4, 0])
    assert metrics.fpr_at_tpr(s_id, s_ood, rule="closest") == pytest.approx(0.5)
    # first_ge agrees here: k = 38 → t* = 3
    assert metrics.fpr_at_tpr(s_id, s_ood) == pytest.approx(0.5)


def test_fpr95_ood_positive_is_a_different_quantity():
    s_id = np.array([0.9, 0.8, 0.7, 0.2])
    s_ood = np.array([0.1] * 19 + [0.75])
    # OOD positive: k = 19 of 20 OOD (scores −s): t* = −0.1 → ID flagged where −s ≥ −0.1: none
    assert metrics.fpr_at_tpr(s_id, s_ood, positive="ood") == 0.0
    # ID positive: k = 4 → t* = 0.2 → OOD accepted: 0.75 → 1/20
    assert metrics.fpr_at_tpr(s_id, s_ood, positive="id") == pytest.approx(0.05)


def test_fpr95_interp():
    s_id = np.array([4.0, 3.0])
    s_ood = np.array([3.5, 1.0])
    # ROC points (fpr, tpr): (0,0),(0,.5),(.5,.5),(.5,1),(1,1) → np.interp(.95) on tpr → fpr .5
    assert metrics.fpr_at_tpr(s_id, s_ood, rule="interp") == pytest.approx(0.5)


def test_aupr_modes_by_hand():
    s_id, s_ood = [3.0, 1.0], [2.0]
    # AP, ID positive: ranks 3(+) 2(−) 1(+): P@R.5 = 1, P@R1 = 2/3 → .5·1 + .5·2/3
    m = metrics.ood_metrics(s_id, s_ood, aupr="ap")
    assert m["aupr_in"] == pytest.approx(100 * (0.5 + 1 / 3))
    # AUPR-Out: OOD positive on −s: −1(ID), −2(OOD), −3(ID) → the OOD comes 2nd: AP = 1/2
    assert m["aupr_out"] == pytest.approx(50.0)
    trap = metrics.ood_metrics(s_id, s_ood, aupr="trapezoid")
    # PR points (recall, precision): (1, 2/3), (.5, .5), (.5, 1), (0, 1) → trapezoids .5·(2/3+.5)/2
    # + 0 + .5·1
    assert trap["aupr_in"] == pytest.approx(100 * (0.5 * (2 / 3 + 0.5) / 2 + 0.5))


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        metrics.ood_metrics([1, np.nan], [0])
    with pytest.raises(ValueError, match="rule"):
        metrics.fpr_at_tpr([1], [0], rule="nope")


def test_accuracy():
    assert metrics.accuracy_percent(
        np.array([[1, 0], [0, 1], [1, 0]]), np.array([0, 1, 1])
    ) == pytest.approx(200 / 3)


@pytest.mark.parametrize("kind", ["continuous", "tied", "separable", "tiny"])
def test_curves_match_scikit_learn_value_for_value(kind):
    """metrics computes the curves in numpy (no sklearn import in a metrics job); they must be
    scikit-learn's, ties included."""
    from sklearn.metrics import (
        auc,
        average_precision_score,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    rng = np.random.default_rng(["continuous", "tied", "separable", "tiny"].index(kind))
    s_id, s_ood = {
        "continuous": lambda: (rng.normal(1, 1, 700), rng.normal(0, 1.5, 300)),
        "tied": lambda: (
            rng.integers(0, 6, 500).astype(float),
            rng.integers(0, 4, 900).astype(float),
        ),
        "separable": lambda: (rng.uniform(2, 3, 40), rng.uniform(0, 1, 60)),
        "tiny": lambda: (np.array([1.0]), np.array([1.0, 0.0])),
    }[kind]()
    y = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
    s = np.r_[s_id, s_ood]
    assert metrics.auroc(s_id, s_ood) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert metrics.pr_area(s_id, s_ood, "ap") == pytest.approx(
        average_precision_score(y, s), abs=1e-12
    )
    assert metrics.pr_area(-s_ood, -s_id, "ap") == pytest.approx(
        average_precision_score(1 - y, -s), abs=1e-12
    )
    precision, recall, _ = precision_recall_curve(y, s)
    assert metrics.pr_area(s_id, s_ood, "trapezoid") == pytest.approx(
        auc(recall, precision), abs=1e-12
    )
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    ours = metrics.roc_curve(s_id, s_ood)
    np.testing.assert_allclose(ours[0], fpr, atol=1e-15)
    np.testing.assert_allclose(ours[1], tpr, atol=1e-15)
