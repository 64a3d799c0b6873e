"""Claims: the bootstrap's metrics against the project's metrics, the interval against a direct
computation and by its coverage, the verdicts, the evaluation on synthetic run folders, and the
config errors a claim can make."""

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from oodrepro import claims, io, metrics
from oodrepro import config as cfg
from oodrepro import uncertainty as u

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("rule", ["first_ge", "closest", "interp"])
@pytest.mark.parametrize("positive", ["id", "ood"])
@pytest.mark.parametrize("aupr", ["ap", "trapezoid"])
def test_weighted_metrics_equal_the_metrics_of_the_resampled_images(rule, positive, aupr):
    """A resample that draws image i k_i times is the array with image i repeated k_i times."""
    rng = np.random.default_rng(0)
    for _ in range(8):
        m, n = rng.integers(5, 60, 2)
        s_id, s_ood = np.round(rng.normal(1, 1, m), 1), np.round(rng.normal(0, 1, n), 1)  # ties
        w_id, w_ood = rng.integers(0, 3, (4, m)), rng.integers(0, 3, (4, n))
        w_id[:, 0] += 1
        w_ood[:, 0] += 1
        w_id[0], w_ood[0] = 1, 1  # row 0: the observed images
        for metric in ("auroc", "fpr95", "aupr_in", "aupr_out"):
            got = u.weighted_metric(metric, s_id, s_ood, w_id, w_ood, rule, positive, aupr)
            for k in range(4):
                expected = metrics.ood_metrics(
                    np.repeat(s_id, w_id[k]), np.repeat(s_ood, w_ood[k]), rule, positive, aupr
                )[metric]
                assert got[k] == pytest.approx(expected, abs=1e-9), (metric, k)


def test_resample_counts_draw_n_with_replacement():
    counts = u.resample_counts(50, 400, np.random.default_rng(1))
    assert counts.shape == (400, 50) and (counts.sum(axis=1) == 50).all()
    assert counts.mean() == pytest.approx(1.0) and counts.var() == pytest.approx(
        1 - 1 / 50, rel=0.1
    )


def test_interval_against_a_direct_computation():
    points = np.array([2.0, 3.5, 1.0])
    draws = np.random.default_rng(2).normal(0, 0.8, (3, 500)) + points[:, None]
    ci = u.interval(points, draws, 0.95)
    seed_half = stats.t.ppf(0.975, 2) * np.std(points, ddof=1) / math.sqrt(3)
    test_half = stats.norm.ppf(0.975) * np.std(draws.mean(axis=0), ddof=1)
    half = math.sqrt(seed_half**2 + test_half**2)
    assert ci["mean"] == pytest.approx(points.mean())
    assert (ci["low"], ci["high"]) == pytest.approx((points.mean() - half, points.mean() + half))
    one = u.interval(points[:1], draws[:1])
    assert one["seed_half_width"] == 0 and one["high"] - one["low"] == pytest.approx(
        2 * stats.norm.ppf(0.975) * np.std(draws[0], ddof=1)
    )


def _coverage(seeds: int, tau: float, sims: int, n: int = 200, draws: int = 200) -> float:
    """How often the interval of an AUROC difference covers the true one. Model a's OOD scores
    sit 1.0 (+ a training effect τ·g per seed) below the ID scores, model b's 0.8; both score the
    same images (a shared latent per image). The truth is the expected population difference."""
    rng = np.random.default_rng(3)

    def scores(lat_id, lat_ood, shift):
        noise = rng.normal(0, 0.7, (2, len(lat_id)))
        return lat_id + noise[0], lat_ood - shift + noise[1]

    def auroc(a, b):
        return u.weighted_metric("auroc", a, b, np.ones((1, len(a))), np.ones((1, len(b))))[0]

    big = 100_000
    truth = np.mean(
        [
            auroc(*scores(rng.normal(0, 1, big), rng.normal(0, 1, big), 1.0 + tau * g))
            - auroc(*scores(rng.normal(0, 1, big), rng.normal(0, 1, big), 0.8))
            for g in (rng.normal(0, 1, 30) if tau else [0.0])
        ]
    )
    hits = 0
    for _ in range(sims):
        lat_id, lat_ood = rng.normal(0, 1, n), rng.normal(0, 1, n)
        w_id, w_ood = (np.r_[np.ones((1, n)), u.resample_counts(n, draws, rng)] for _ in "ab")
        points, boots = [], []
        for _ in range(seeds):
            a = scores(lat_id, lat_ood, 1.0 + tau * rng.normal())
            b = scores(lat_id, lat_ood, 0.8)
            d = u.weighted_metric("auroc", *a, w_id, w_ood) - u.weighted_metric(
                "auroc", *b, w_id, w_ood
            )
            points.append(d[0])
            boots.append(d[1:])
        ci = u.interval(np.array(points), np.stack(boots))
        hits += ci["low"] <= truth <= ci["high"]
    return hits / sims


@pytest.mark.parametrize("seeds, tau", [(1, 0.0), (3, 0.3)])
def test_the_interval_covers_the_true_difference_about_95_percent_of_the_time(seeds, tau):
    """Measured 0.940 (one seed, test sampling only) and 0.967 (3 seeds with training variance) of
    300 simulated runs; a true 95 % interval's rate over 300 runs lies in [0.92, 0.98] with about
    95 % chance, so the band below leaves room for the normal approximation."""
    rate = _coverage(seeds, tau, sims=300)
    print(f"coverage with {seeds} seed(s): {rate:.3f}")
    assert 0.91 <= rate <= 0.99


@pytest.mark.parametrize(
    "low, high, bound, strict, expected",
    [
        (0.5, 2.0, 0.0, True, "holds"),
        (0.0, 2.0, 0.0, True, "inconclusive"),
        (0.0, 2.0, 0.0, False, "holds"),
        (-2.0, -0.1, 0.0, True, "fails"),
        (-2.0, 0.0, 0.0, True, "fails"),
        (-2.0, 0.0, 0.0, False, "inconclusive"),
        (-1.0, 1.0, 0.0, True, "inconclusive"),
        (1.0, 3.0, 2.0, True, "inconclusive"),
        (2.5, 3.0, 2.0, True, "holds"),
    ],
)
def test_verdicts(low, high, bound, strict, expected):
    assert u.verdict(low, high, bound, strict) == expected


# --------------------------------------------------------------------------- evaluation
BENCH = {"name": "toy", "id_test": "id", "ood": ["far", "near"], "groups": {}}
CONTEXT = {"benchmark": "toy", "arch": "net", "seed": 0, "model": "base"}
SETTINGS = {"fpr_rule": "first_ge", "fpr_positive": "id", "aupr": "ap", "balance": "none"}


def _run_folder(tmp_path, seed, gap_a, gap_b):
    """A run folder with scores and metrics tables for base/a and base/b."""
    rng = np.random.default_rng(seed)
    run = tmp_path / f"seed{seed}"
    lat = {s: rng.normal(0, 1, 300) for s in ("id", "far", "near")}
    for method, gap in (("a", gap_a), ("b", gap_b)):
        scores = {s: lat[s] - (0 if s == "id" else gap) + rng.normal(0, 0.3, 300) for s in lat}
        for s, v in scores.items():
            io.save_npy(run / "scores" / "base" / method / f"{s}.npy", v)
        table = metrics.metrics_table(
            scores["id"], {s: scores[s] for s in BENCH["ood"]}, 90.0, CONTEXT | {"method": method}
        )
        io.save_csv(run / "metrics" / "base" / f"{method}.csv", table)
    return str(run)


def _better(**extra):
    return {
        "id": "a-beats-b",
        "statement": "a beats b",
        "source": "a test",
        "kind": "better",
        "a": "base/a",
        "b": "base/b",
        "metric": "auroc",
        "over": "mean",
        "margin": 0,
        **extra,
    }


def test_a_better_claim_over_three_seeds(tmp_path):
    claim = _better(paper={"a": 95.0, "b": 90.0})
    folders = [_run_folder(tmp_path, s, 2.0, 0.5) for s in range(3)]

    def check(claim):
        runs = {
            "net": {s: {claim["id"]: claims.files(claim, f, BENCH)} for s, f in enumerate(folders)}
        }
        return claims.evaluate([claim], runs, BENCH, SETTINGS, {"draws": 300, "seed": 0}).iloc[0]

    row = check(claim)
    per_seed = []
    for s in range(3):
        tables = {
            m: pd.read_csv(tmp_path / f"seed{s}" / "metrics" / "base" / f"{m}.csv") for m in "ab"
        }
        value = {
            m: t[(t["ood_set"] == "mean") & (t["metric"] == "auroc")]["value"].iloc[0]
            for m, t in tables.items()
        }
        per_seed.append(value["a"] - value["b"])
    assert row["difference"] == pytest.approx(np.mean(per_seed))  # the metrics tables' values
    assert row["std over seeds"] == pytest.approx(np.std(per_seed, ddof=1))
    assert row["ci low"] < row["difference"] < row["ci high"] and row["ci low"] > 0
    assert row["verdict"] == "holds" and row["seeds"] == 3 and row["note"] == ""
    assert (row["paper a"], row["paper b"]) == (95.0, 90.0)
    # FPR95 is better when lower: the same models, the same verdict
    fpr = check(_better(metric="fpr95"))
    assert fpr["difference"] > 0 and fpr["verdict"] == "holds"
    # swapped, it fails; with an unreachable margin it is not shown to hold
    swapped = check(_better(a="base/b", b="base/a"))
    assert swapped["verdict"] == "fails" and swapped["difference"] == pytest.approx(
        -row["difference"]
    )
    far = check(_better(margin=60))
    assert far["verdict"] == "fails" and far["claimed"] == "> 60"


def test_one_seed_is_said_to_hold_no_training_variance(tmp_path):
    claim = _better()
    runs = {
        "net": {0: {claim["id"]: claims.files(claim, _run_folder(tmp_path, 0, 0.6, 0.5), BENCH)}}
    }
    row = claims.evaluate([claim], runs, BENCH, SETTINGS, {"draws": 300}).iloc[0]
    assert row["seeds"] == 1 and "no training variance" in row["note"]
    assert row["verdict"] in ("holds", "inconclusive")


def test_the_rank_and_bound_kinds_on_constructed_files(tmp_path):
    rng = np.random.default_rng(4)
    run = tmp_path / "seed0"
    # FeatureNorm: block 1 separates best, block 2 second, block 0 not at all
    norms = {s: rng.normal(0, 1, (200, 3)) for s in ("id", "far", "near")}
    for s in ("far", "near"):
        norms[s][:, 1] -= 3.0
        norms[s][:, 2] -= 1.0
    for s, v in norms.items():
        io.save_npz(run / "features" / "base" / f"{s}.npz", featnorm=v)
    # LA-OOD: layer 0 has the lower SDS error; the min over layers catches both sets
    decisions = {s: rng.normal(0, 1, (200, 2)) for s in ("id", "far", "near")}
    decisions["far"][:, 0] -= 3.0
    decisions["near"][:, 1] -= 3.0
    io.save_npz(run / "laood" / "base" / "decisions.npz", **decisions)
    io.save_npz(
        run / "detectors" / "base" / "laood.npz",
        error_grid=np.array([[0.1, 0.2], [0.3, np.nan]]),
        layer_names=np.array(["conv", "logits"]),
    )
    # WatermarkNN: 100 triggers, threshold 0.3, a null model at 0.12
    pd.DataFrame({"network": ["wnn.ftll", "wnn.rtal"], "trigger_accuracy": [0.95, 0.25]}).to_csv(
        run / "verification.csv", index=False
    )
    (run / "ownership.json").write_text(
        json.dumps({"n_triggers": 100, "threshold": 0.3, "null_max": 0.12})
    )
    # accuracy: model um gets 3 of 200 fewer right than base
    labels = np.arange(200) % 4
    for model, wrong in (("base", 10), ("um", 13)):
        logits = np.eye(4)[labels]
        logits[:wrong] = np.eye(4)[(labels[:wrong] + 1) % 4]
        extra = {"featnorm": norms["id"]} if model == "base" else {}  # one features file each
        io.save_npz(run / "features" / model / "id.npz", logits=logits, labels=labels, **extra)

    def one(claim, files, **watermarknn):
        full = {"id": "c", "statement": "", "source": "", "metric": "auroc", "over": "mean"}
        full.update({"model": "base", "top": 1, **claim})
        runs = {"net": {0: {"c": files(full)}}}
        return claims.evaluate([full], runs, BENCH, SETTINGS, {"draws": 300}, watermarknn).iloc[0]

    def in_run(full):
        return claims.files(full, str(run), BENCH)

    io.save_npz(run / "detectors" / "base" / "featurenorm.npz", block=np.array(2))
    top1 = one({"kind": "rank", "of": "featurenorm-block"}, in_run)
    top2 = one({"kind": "rank", "of": "featurenorm-block", "top": 2}, in_run)
    assert top1["verdict"] == "fails" and top1["difference"] < 0  # block 2 is second best
    assert top2["difference"] == 0 and top2["verdict"] == "holds" and top2["claimed"] == "≥ 0"
    combined = one({"kind": "rank", "of": "laood-layer"}, in_run)
    assert combined["verdict"] == "holds" and combined["ours b"] != combined["ours a"]
    wnn = {"owners": {"wnn": {}}, "attacks": {"kinds": ["ftll", "rtal"]}}

    def wnn_files(full):
        return {
            "verification": str(run / "verification.csv"),
            "ownership": str(run / "ownership.json"),
        }

    survives = one(
        {"kind": "bound", "of": "trigger-accuracy", "attacks": ["ftll"]}, wnn_files, **wnn
    )
    # min(95 − 30, 30 − 1 − 12) = 17 points
    assert survives["difference"] == pytest.approx(17.0) and survives["verdict"] == "holds"
    all_attacks = one({"kind": "bound", "of": "trigger-accuracy"}, wnn_files, **wnn)
    assert all_attacks["difference"] == pytest.approx(-5.0)  # RTAL ends below the threshold
    cost = one(
        {"kind": "bound", "of": "accuracy-cost", "a": "um", "b": "base", "at_most": 2}, in_run
    )
    assert cost["difference"] == pytest.approx(2 - 1.5)  # 95.0 → 93.5
    assert (cost["ours a"], cost["ours b"]) == ("93.50", "95.00")
    assert cost["verdict"] == "inconclusive"  # 3 images of 200: the bootstrap cannot tell


# --------------------------------------------------------------------------- validation
@pytest.fixture
def default():
    return cfg.load(ROOT / "config.yaml")


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda c: c["claims"][0].update(a="nomodel/msp"), "claims[0] (wm-msp).a: model 'nomodel'"),
        (lambda c: c["claims"][0].update(b="base/nomethod"), "claims[0] (wm-msp).b: method"),
        (lambda c: c["claims"][1].update(b="um/featurenorm"), "claims[1] (wm-energy).b: method"),
        (lambda c: c["claims"][0].update(metric="accuracy"), "claims.0.metric"),
        (lambda c: c["claims"][0].update(over="svhn-test"), "claims[0] (wm-msp).over: 'svhn-test'"),
        (lambda c: c["claims"][0].pop("b"), "claims.0: 'b' is a required property"),
        (lambda c: c["claims"][1].update(id="wm-msp"), "claims[1] (wm-msp).id: used by an earlier"),
        (
            lambda c: c["claims"][7].update(model="umap"),
            "claims[7] (normratio).of: featurenorm is not",
        ),
        (lambda c: c["claims"][8].update(of="trigger-accuracy"), "claims.8.of"),
        (
            lambda c: c["claims"][9].update(attacks=["ftxx"]),
            "claims[9] (watermarknn).attacks: 'ftxx'",
        ),
        (lambda c: c["claims"][3].update(a="um2"), "claims[3] (um-accuracy).a: model 'um2'"),
        (lambda c: c["claims"][3].pop("at_most"), "'at_most' is a required property"),
    ],
)
def test_a_claim_naming_what_the_config_does_not_produce_fails_validation(default, edit, fragment):
    raw = cfg.read_yaml(ROOT / "config.yaml")
    edit(raw)
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate(copy.deepcopy(raw))
    assert fragment in str(err.value)


def test_the_default_carries_a_claim_for_every_method(default):
    kinds = {claims.label(c) for c in default["claims"]}
    assert kinds == {
        "better",
        "featurenorm-block",
        "laood-layer",
        "trigger-accuracy",
        "accuracy-cost",
    }
    named = " ".join(c.get("a", "") + " " + c.get("b", "") for c in default["claims"])
    for part in ("wm-msp", "wm-energy", "um/", "oe/", "featurenorm"):
        assert part in named


@pytest.mark.parametrize("preset", sorted((ROOT / "presets").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_preset_carries_claims_whose_paper_values_are_its_reference_rows(preset):
    config = cfg.load(preset)
    assert config["claims"], "a preset carries its paper's headline claims"
    rows = config["report"].get("reference", {}).get("rows", [])
    for claim in config["claims"]:
        for side, value in claim.get("paper", {}).items():
            if claim["kind"] == "better":
                model, _, method = claim[side].partition("/")
                match = [
                    r
                    for r in rows
                    if r.get("model", "base") == model
                    and r["method"] == method
                    and r["ood_set"] == claim["over"]
                    and r["metric"] == claim["metric"]
                ]
            else:
                match = [r for r in rows if r.get("model", "base") == claim[side]]
                match = [r for r in match if r["metric"] == "id_accuracy"]
            assert [r["value"] for r in match][:1] == [value], (claim["id"], side)
    if rows:  # where the paper's numbers are known, some claim carries them
        assert any("paper" in c for c in config["claims"])


def test_a_paper_value_that_disagrees_with_the_reference_rows_is_refused():
    raw = cfg.read_yaml(ROOT / "presets" / "unleashing-mask-icml23.yaml")
    raw["claims"][0]["paper"]["b"] = 41.0
    with pytest.raises(cfg.ConfigError, match=r"claims\[0\] \(um-energy-fpr95\).paper.b: 41.0"):
        cfg.validate(raw)
