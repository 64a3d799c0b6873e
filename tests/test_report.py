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
    return (
        s_id,
        s_ood,
        metrics.metrics_table(s_id, s_ood, 97.5, CTX, groups={"near": ["y"], "far": ["x", "z"]}),
    )


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
    assert (t["n_id"] == 50).all() and t.set_index(["ood_set", "metric"]).loc[
        ("far", "auroc"), "n_ood"
    ] == 40


def test_summary_over_seeds_and_comparison(table):
    _, _, t0 = table
    t1 = t0.copy()
    t1["seed"] = 1
    t1["value"] = t1["value"] + 2.0
    summary = report.summarize(pd.concat([t0, t1]))
    row = summary[(summary["ood_set"] == "mean") & (summary["metric"] == "auroc")].iloc[0]
    assert row["seeds"] == 2 and row["std"] == pytest.approx(np.std([0, 2], ddof=1))
    ref = {
        "rows": [
            {"method": "msp", "ood_set": "far", "metric": "auroc", "value": 90.0},
            {"method": "odin", "ood_set": "far", "metric": "auroc", "value": 80.0},
        ]
    }
    comp = report.comparison_table(summary, ref)
    ours = summary[(summary["ood_set"] == "far") & (summary["metric"] == "auroc")]["mean"].item()
    assert comp.loc[0, "ours"] == pytest.approx(ours) and comp.loc[
        0, "difference"
    ] == pytest.approx(ours - 90)
    assert np.isnan(comp.loc[1, "ours"])  # a method we did not run stays visibly empty
    md = report.markdown_summary(summary, comp, "T")
    assert "± " in md and "Paper vs ours" in md and "| base | msp |" in md
    assert "<table" in report.html_summary(summary, comp, "T")


def test_balanced_protocol_uses_the_first_n_rows():
    s_id = np.arange(10.0)
    s_ood = {"small": np.array([0.5, 20.0, 1.5])}
    t = metrics.metrics_table(s_id, s_ood, 90.0, CTX, balance="first_n").set_index(
        ["ood_set", "metric"]
    )
    assert t.loc[("small", "auroc"), "n_id"] == 3 and t.loc[("small", "auroc"), "n_ood"] == 3
    assert t.loc[("small", "auroc"), "value"] == pytest.approx(
        metrics.ood_metrics(s_id[:3], s_ood["small"])["auroc"]
    )
    full = metrics.metrics_table(s_id, s_ood, 90.0, CTX).set_index(["ood_set", "metric"])
    assert full.loc[("small", "auroc"), "n_id"] == 10


def test_subsampled_protocol_averages_seeded_draws():
    rng = np.random.default_rng(3)
    s_id, s_ood = rng.normal(1, 1, 100), {"a": rng.normal(0, 1, 500)}
    sub = {"n": 50, "draws": 4, "seed": 7}
    t1 = metrics.metrics_table(s_id, s_ood, 90.0, CTX, subsample=sub).set_index(
        ["ood_set", "metric"]
    )
    t2 = metrics.metrics_table(s_id, s_ood, 90.0, CTX, subsample=sub).set_index(
        ["ood_set", "metric"]
    )
    assert t1.loc[("a", "auroc"), "value"] == t2.loc[("a", "auroc"), "value"]  # seeded
    draws_rng = np.random.default_rng([7, 0])
    expected = np.mean(
        [
            metrics.ood_metrics(s_id, s_ood["a"][draws_rng.choice(500, 50, replace=False)])["auroc"]
            for _ in range(4)
        ]
    )
    assert t1.loc[("a", "auroc"), "value"] == pytest.approx(expected)
    assert t1.loc[("a", "auroc"), "n_ood"] == 50


def test_an_empty_comparison_still_has_its_header(table):
    comp = report.comparison_table(report.summarize(table[2]), {})
    assert comp.empty and list(comp.columns) == [
        "arch",
        "model",
        "method",
        "ood_set",
        "metric",
        "paper",
        "ours",
        "ours std",
        "seeds",
        "difference",
    ]


def _tidy(model: str, method: str, below: bool, accuracy: float) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    s_id = rng.normal(2, 1, 40)
    noise = rng.normal(
        4 if below else -1, 1, 25
    )  # scored as more ID than the ID images: AUROC < 50
    return metrics.metrics_table(
        s_id,
        {"noise": noise, "photos": rng.normal(0, 1, 15)},
        accuracy,
        {**CTX, "model": model, "method": method},
    )


def test_notes_explain_what_the_tables_show():
    tidy = pd.concat([_tidy("base", "msp", True, 98.0), _tidy("um", "msp", False, 97.25)])
    summary = report.summarize(tidy)
    blocks = pd.DataFrame(
        {
            "block": ["b0", "b1", "b2"],
            "normratio": [1.0, 1.4, 1.2],
            "selected": [False, True, False],
            "auroc mean": [90.0, 80.0, 70.0],
            "auroc rank": [1, 2, 3],
            "benchmark": "b",
            "arch": "a",
            "seed": 0,
            "model": "base",
        }
    )
    rule = {
        "rule": "null-models",
        "threshold": 0.6,
        "threshold_count": 12,
        "n_triggers": 20,
        "null_models": 2,
        "null_mean": 0.1,
        "null_max": 0.15,
        "chance_rate": 0.237,
        "false_claim_probability": 5.5e-4,
    }
    said = report.notes(tidy, summary, [blocks], [({"arch": "a", "seed": 0}, rule)])
    text = "\n".join(said)
    assert (
        "rule `first_ge`, ID as the positive class" in said[0] and "noise 25, photos 15" in said[0]
    )
    assert "ID test images: 40" in said[0] and "mean over OOD sets" not in said[0]
    assert (
        "noise for base / msp" in text
        and "photos for" not in text.split("AUROC below 50")[1].split("\n")[0]
    )
    assert "um 97.25 (-0.75)" in text
    assert (
        "NormRatio chose block b1, ranked 2 of 3 blocks by mean AUROC (80.0; the best, b0, reaches "
        "90.0)" in text
    )
    assert "≥ 60 % (12 of 20 triggers)" in text and "5.5e-04" in text
    assert "Reading these tables" in report.markdown_summary(summary, None, "T", notes=said)


def test_the_watermark_effect_table_is_per_model_and_rounded():
    tidy = pd.concat([_tidy("base", "msp", False, 98.0), _tidy("base+wm", "msp", False, 97.5)])
    effect = report.watermark_effect(report.summarize(tidy), {"wm": "msp"})
    assert "seed" not in effect.columns and effect.loc[0, "watermarked model"] == "base+wm"
    value = effect.loc[0, "AUROC ↑ with"]
    assert value == round(value, 2)


def test_notes_count_the_ood_sets_not_the_groups_that_average_them(table):
    _, _, t = table
    said = report.notes(t, report.summarize(t), groups=["near", "far"])[0]
    assert "over the 3 OOD sets" in said and "near" not in said
