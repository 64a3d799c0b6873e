"""The tidy metrics table, group means, the seed summary and the paper comparison."""

import numpy as np
import pandas as pd
import pytest

from oodrepro import metrics, report

CTX = {"benchmark": "b", "arch": "a", "seed": 0, "model": "base", "method": "msp"}


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    s_id = rng.normal(2, 1, 50)
    s_ood = {"x": rng.normal(0, 1, 30), "y": rng.normal(1, 1, 20), "z": rng.normal(-1, 1, 10)}
    return s_id, s_ood, report.metrics_table(s_id, s_ood, 97.5, CTX, groups={"near": ["y"], "far": ["x", "z"]})


def test_rows_per_set_group_mean_and_accuracy(table):
    s_id, s_ood, t = table
    assert set(t["ood_set"]) == {"x", "y", "z", "near", "far", "mean", "-"}
    auroc = t[t["metric"] == "auroc"].set_index("ood_set")["value"]
    for name, s in s_ood.items():
        assert auroc[name] == pytest.approx(metrics.ood_metrics(s_id, s)["auroc"])
    assert auroc["far"] == pytest.approx((auroc["x"] + auroc["z"]) / 2)
    assert auroc["near"] == pytest.approx(auroc["y"])
    assert auroc["mean"] == pytest.approx(auroc[["x", "y", "z"]].mean())
    assert t[t["metric"] == "id_accuracy"]["value"].item() == 97.5
    assert (t["n_id"] == 50).all() and t.set_index(["ood_set", "metric"]).loc[("far", "auroc"), "n_ood"] == 40


def test_summary_over_seeds_and_comparison(table):
    _, _, t0 = table
    t1 = t0.copy()
    t1["seed"] = 1
    t1["value"] = t1["value"] + 2.0
    summary = report.summarize(pd.concat([t0, t1]))
    row = summary[(summary["ood_set"] == "mean") & (summary["metric"] == "auroc")].iloc[0]
    assert row["seeds"] == 2 and row["std"] == pytest.approx(np.std([0, 2], ddof=1))
    ref = {"rows": [{"method": "msp", "ood_set": "far", "metric": "auroc", "value": 90.0},
                    {"method": "odin", "ood_set": "far", "metric": "auroc", "value": 80.0}]}
    comp = report.comparison_table(summary, ref)
    ours = summary[(summary["ood_set"] == "far") & (summary["metric"] == "auroc")]["mean"].item()
    assert comp.loc[0, "ours"] == pytest.approx(ours) and comp.loc[0, "difference"] == pytest.approx(ours - 90)
    assert np.isnan(comp.loc[1, "ours"])  # a method we did not run stays visibly empty
    md = report.markdown_summary(summary, comp, "T")
    assert "± " in md and "Paper vs ours" in md and "| base | msp |" in md
    assert "<table" in report.html_summary(summary, comp, "T")


def test_balanced_protocol_uses_the_first_n_rows():
    s_id = np.arange(10.0)
    s_ood = {"small": np.array([0.5, 20.0, 1.5])}
    t = report.metrics_table(s_id, s_ood, 90.0, CTX, balance="first_n").set_index(["ood_set", "metric"])
    assert t.loc[("small", "auroc"), "n_id"] == 3 and t.loc[("small", "auroc"), "n_ood"] == 3
    assert t.loc[("small", "auroc"), "value"] == pytest.approx(metrics.ood_metrics(s_id[:3], s_ood["small"])["auroc"])
    full = report.metrics_table(s_id, s_ood, 90.0, CTX).set_index(["ood_set", "metric"])
    assert full.loc[("small", "auroc"), "n_id"] == 10


def test_subsampled_protocol_averages_seeded_draws():
    rng = np.random.default_rng(3)
    s_id, s_ood = rng.normal(1, 1, 100), {"a": rng.normal(0, 1, 500)}
    sub = {"n": 50, "draws": 4, "seed": 7}
    t1 = report.metrics_table(s_id, s_ood, 90.0, CTX, subsample=sub).set_index(["ood_set", "metric"])
    t2 = report.metrics_table(s_id, s_ood, 90.0, CTX, subsample=sub).set_index(["ood_set", "metric"])
    assert t1.loc[("a", "auroc"), "value"] == t2.loc[("a", "auroc"), "value"]  # seeded
    draws_rng = np.random.default_rng([7, 0])
    expected = np.mean([metrics.ood_metrics(s_id, s_ood["a"][draws_rng.choice(500, 50, replace=False)])["auroc"]
                        for _ in range(4)])
    assert t1.loc[("a", "auroc"), "value"] == pytest.approx(expected)
    assert t1.loc[("a", "auroc"), "n_ood"] == 50
