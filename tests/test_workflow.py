"""The workflow end to end on a shrunken config: data (offline and a served download),
training, features, scores, metrics, report; then reruns that must do nothing or only
what a parameter change requires."""

import copy
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import browser
import debian
import fixtures
import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow
FINETUNES = ["um", "umap", "oe", "oe+um"]  # all trained; two of them scored
SCORED_FINETUNES = ["um", "oe+um"]
BASELINES = ["maxlogit", "react", "dice", "ash", "knn", "vim", "rmds", "gen"]


def snakemake(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--profile",
        str(ROOT / "profiles" / "local"),
        "--cores",
        "2",
        "--configfile",
        str(configfile),
        "--replace-workflow-config",
        *args,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"}
    )


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count}."""
    text = result.stdout + result.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:")[1]
    return {
        m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"
    }


def plan_after(run, name: str, edit) -> dict[str, int]:
    """The jobs a dry run plans after `edit` changes a copy of the run's config."""
    work, _, config = run
    config = copy.deepcopy(config)
    edit(config)
    changed = work / f"{name}.yaml"
    changed.write_text(yaml.safe_dump(config))
    return planned_jobs(snakemake(work, changed, "--dry-run"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("workflow")
    served = work / "served"
    served.mkdir()
    svhn = fixtures.svhn(served, n=30)
    with fixtures.LocalServer(served) as server:
        config = yaml.safe_load((ROOT / "config.yaml").read_text())
        config.update(results=str(work / "results"), data=str(work / "data"), seeds=[0, 1])
        config["benchmark"]["ood"] = ["gaussian-noise", "glyphs", "svhn-test"]
        config["benchmark"]["groups"] = {"near": ["glyphs"], "far": ["gaussian-noise", "svhn-test"]}
        svhn_download = {"url": server.url("test_32x32.mat"), "md5": fixtures.md5(svhn["paths"][0])}
        config["downloads"] = {"test_32x32.mat": svhn_download}
        config["offline"].update(n_ood=40, n_outliers=40)
        config["backbones"]["resnet18-small"]["width"] = 0.125
        config["training"].update(epochs=2, batch_size=128)
        config["scores"]["odin"]["batch_size"] = 128
        config["watermarks"] = {
            "wm-energy": {**config["watermarks"]["wm-energy"], "epochs": 2, "decay_epoch": 1}
        }
        config["offline"].update(n_triggers=20)
        wnn = config["watermarknn"]
        wnn.update(per_batch=4, null_models=1, pruning=[0.5])
        wnn["owners"]["wnn-pretrained"]["training"]["epochs"] = 1
        wnn["attacks"].update(kinds=["ftll", "rtal"], epochs=1)
        for ft in config["finetunes"].values():
            ft["training"] = {**ft["training"], "epochs": 1}
        config["unleashing_mask"]["draws"] = 2
        config["scores"]["mahalanobis_ensemble"].update(n_fit=100, magnitudes=[0.0, 0.001])
        config["scores"]["vim"]["dim"] = 32  # of the 64-d penultimate at this width
        config["variants"] = ["base", "base+wm-energy", *SCORED_FINETUNES]
        config["variant_scores"] = {
            "base+wm-energy": ["msp", "energy"],
            **{v: ["msp", "odin"] for v in SCORED_FINETUNES},
        }
        kept = ("wm-energy", "um-accuracy", "featurenorm", "normratio", "laood", "watermarknn")
        config["claims"] = [c for c in config["claims"] if c["id"] in kept]
        config["claims"][-1]["attacks"] = ["ftll"]  # the default's other attacks are not run here
        cfgfile = work / "config.yaml"
        cfgfile.write_text(yaml.safe_dump(config))
        result = snakemake(work, cfgfile)
    assert result.returncode == 0, result.stderr[-5000:]
    return work, cfgfile, config


def test_outputs_and_tidy_metrics(run):
    work, _, config = run
    tidy = pd.read_csv(work / "results" / "metrics.csv")
    assert list(tidy.columns[:8]) == [
        "benchmark",
        "arch",
        "seed",
        "model",
        "method",
        "ood_set",
        "metric",
        "value",
    ]
    assert set(tidy["method"]) == {
        "msp",
        "odin",
        "energy",
        "mahalanobis",
        "mahalanobis_ensemble",
        "featurenorm",
        "laood",
        *BASELINES,
    }
    assert set(tidy["model"]) == {"base", "base+wm-energy", *SCORED_FINETUNES} and set(
        tidy["seed"]
    ) == {0, 1}
    assert set(tidy["ood_set"]) == {
        "gaussian-noise",
        "glyphs",
        "svhn-test",
        "near",
        "far",
        "mean",
        "-",
    }
    # 2 seeds × (7 + 8 baseline scores on base + 2 on the watermarked model + 2 on each scored
    # fine-tune)
    #   × (6 sets incl. the groups and the mean × 4 metrics + accuracy)
    assert len(tidy) == 2 * (7 + len(BASELINES) + 2 + 2 * 2) * (6 * 4 + 1)
    assert set(tidy[tidy["model"] == "base+wm-energy"]["method"]) == {"msp", "energy"}
    assert tidy["value"].between(0, 100).all()
    n_svhn = tidy[(tidy["ood_set"] == "svhn-test")]["n_ood"].unique()
    assert list(n_svhn) == [30]  # the served fixture went through download and conversion
    summary = pd.read_csv(work / "results" / "summary.csv")
    assert (summary["seeds"] == 2).all()
    for f in ("summary.md", "summary.html"):
        text = (work / "results" / f).read_text()
        assert (
            "mahalanobis" in text
            and "featurenorm" in text
            and "FeatureNorm block selection" in text
        )
        assert (
            "LA-OOD layers" in text and "Watermarking for OOD" in text and "base+wm-energy" in text
        )
    run_dir = work / "results" / "digits" / "resnet18-small" / "seed0"
    assert (run_dir / "models" / "base.middle.pt").exists()
    assert (run_dir / "plots" / "base" / "odin.png").stat().st_size > 10_000
    blocks = pd.read_csv(run_dir / "featurenorm" / "base" / "blocks.csv")
    assert len(blocks) == 8 and blocks["selected"].sum() == 1
    assert blocks.loc[
        blocks["normratio"].idxmax(), "selected"
    ]  # the selected block is NormRatio's argmax
    assert (run_dir / "featurenorm" / "base" / "blocks.png").exists()
    assert (run_dir / "watermark" / "base+wm-energy.png").exists()
    wm_log = pd.read_csv(run_dir / "watermark" / "base+wm-energy.csv")
    assert list(wm_log["alpha"]) == pytest.approx([0.01, 0.001])
    layers = pd.read_csv(run_dir / "laood" / "base" / "layers.csv")
    assert len(layers) == 18  # ResNet-18: stem + 16 block convs + logits
    assert layers["decides OOD"].sum() == pytest.approx(1.0) and layers[
        "decides ID"
    ].sum() == pytest.approx(1.0)
    assert (run_dir / "benchmarks" / "train_backbone.tsv").exists()
    assert (
        not list(run_dir.rglob("*.tmp"))
        and not (run_dir / "models" / ".resume" / "base.pt").exists()
    )


def test_claims_table_summary_and_plot(run):
    work, _, config = run
    table = pd.read_csv(work / "results" / "claims.csv")
    assert list(table["claim"]) == [c["id"] for c in config["claims"]]
    assert (table["seeds"] == 2).all()
    # a 2-epoch base and 1-epoch owners are not the UM and WatermarkNN papers' regime
    regime = table.set_index("claim")["verdict"] == "out of regime"
    assert set(regime[regime].index) == {"um-accuracy", "watermarknn"}
    assert (table.set_index("claim")["verdict"][~regime] == "no verdict").all()
    assert (
        "train_accuracy of base ≥ 99 required" in table.set_index("claim").at["um-accuracy", "note"]
    )
    assert (table["ci low"] <= table["difference"]).all() and (
        table["difference"] <= table["ci high"]
    ).all()
    assert table["note"].str.contains("training variance unknown").all()  # 2 seeds
    assert table["note"].str.contains("make run SEEDS=3").all()
    summary = (work / "results" / "summary.md").read_text()
    assert summary.index("## Claims") < summary.index("## Reading these tables")
    claims_section = summary.split("## Claims")[1].split("##")[0]
    assert "No verdicts" in claims_section
    assert not re.search(r"\| (holds|fails|inconclusive) \|", claims_section)
    assert "wm-energy" in summary and (work / "results" / "claims.png").stat().st_size > 5_000
    # the claim's own difference equals the metrics table's: energy FPR95, mean over OOD sets
    tidy = pd.read_csv(work / "results" / "metrics.csv")
    mean = tidy[(tidy["method"] == "energy") & (tidy["ood_set"] == "mean")]
    fpr = mean[mean["metric"] == "fpr95"].pivot(index="seed", columns="model", values="value")
    expected = (fpr["base"] - fpr["base+wm-energy"]).mean()
    assert table.set_index("claim").at["wm-energy", "difference"] == pytest.approx(
        expected, abs=1e-4
    )


def test_editing_a_claim_reruns_only_the_claims_job_and_the_summary(run):
    def edit(c):
        c["claims"][0]["margin"] = 5

    assert plan_after(run, "claim", edit) == {
        "evaluate_claims": 1,
        "summarize": 1,
        "write_manifest": 1,
        "all": 1,
    }


def planned_job_seeds(result: subprocess.CompletedProcess) -> list[tuple[str, str | None]]:
    """(rule, its `seed` wildcard or None) for every job a dry run plans."""
    text = result.stdout + result.stderr
    blocks = re.split(r"^(?:local)?rule (\w+):$", text, flags=re.M)[1:]
    return [
        (rule, (re.search(r"^\s+wildcards:.*\bseed=(\d+)", body, re.M) or [None, None])[1])
        for rule, body in zip(blocks[::2], blocks[1::2], strict=True)
    ]


def test_adding_a_seed_runs_only_its_jobs_and_the_claims(run):
    """`make run SEEDS=3` (`--config seeds=3`) on this 2-seed run plans the third seed's jobs
    and the jobs that gather every seed; nothing of seeds 0 and 1 runs again."""
    work, cfgfile, _ = run
    planned = planned_job_seeds(snakemake(work, cfgfile, "--dry-run", "--config", "seeds=3"))
    per_seed = [rule for rule, seed in planned if seed is not None]
    assert {seed for _, seed in planned if seed is not None} == {"2"}
    assert per_seed.count("train_backbone") == 1 and "compute_metrics" in per_seed
    gathering = {rule for rule, seed in planned if seed is None}
    assert "evaluate_claims" in gathering
    assert gathering <= {"evaluate_claims", "summarize", "plot_overview", "write_manifest", "all"}


def test_report(run):
    work, cfgfile, _ = run
    result = snakemake(work, cfgfile, "--report", str(work / "report.html"))
    assert result.returncode == 0, result.stderr[-3000:]
    html = (work / "report.html").read_text()
    for name in (
        "summary.html",
        "claims.png",
        "odin.png",
        "training.png",
        "blocks.png",
        "layers.png",
        "base+wm-energy.png",
        "attacks.png",
        "oe+um.png",
        "umap.png",
    ):
        assert name in html, name


def test_rerun_does_nothing(run):
    work, cfgfile, _ = run
    assert planned_jobs(snakemake(work, cfgfile, "--dry-run")) == {}


def test_changing_odin_temperature_reruns_only_odin(run):
    jobs = plan_after(
        run, "odin-t100", lambda c: c["scores"]["odin"].update({"temperature": 100.0})
    )
    # 2 seeds × 3 models (base and the scored fine-tunes), one job each for ID test + 3 OOD sets
    assert jobs == {
        "score_network": 6,
        "compute_metrics": 6,
        "summarize": 1,
        "plot_overview": 1,
        "write_manifest": 1,
        "all": 1,
    }


def test_changing_the_metric_rule_reruns_metrics_not_scores(run):
    jobs = plan_after(run, "closest", lambda c: c["metrics"].update({"fpr_rule": "closest"}))
    metrics_jobs = 2 * (7 + len(BASELINES) + 2 + 2 * 2)
    # the claims are recomputed under the new rule too
    assert jobs == {
        "compute_metrics": metrics_jobs,
        "evaluate_claims": 1,
        "summarize": 1,
        "plot_overview": 1,
        "write_manifest": 1,
        "all": 1,
    }


def test_pinning_the_featurenorm_block_refits_without_new_features(run):
    jobs = plan_after(
        run, "pinned", lambda c: c["scores"]["featurenorm"].update({"block": "layer4.0"})
    )
    # per seed: the fit, one score job over the 4 sets from cached features, metrics + plot, block
    # table
    assert jobs == {
        "fit_detector": 2,
        "score_features": 2,
        "compute_metrics": 2,
        "analyze_featurenorm_blocks": 2,
        "evaluate_claims": 1,  # FeatureNorm's and NormRatio's claims read them
        "summarize": 1,
        "plot_overview": 1,
        "write_manifest": 1,
        "all": 1,
    }


def test_changing_a_watermark_relearns_it_and_rescores_its_variant_only(run):
    jobs = plan_after(run, "beta", lambda c: c["watermarks"]["wm-energy"].update({"beta": 0.2}))
    # per seed: the watermark, one job for the features of the 4 evaluated sets, MSP and energy on
    # them
    assert jobs == {
        "learn_watermark": 2,
        "dump_features": 2,
        "score_features": 4,
        "compute_metrics": 4,
        "evaluate_claims": 1,  # the watermark's claim
        "summarize": 1,
        "plot_overview": 1,
        "write_manifest": 1,
        "all": 1,
    }


def test_watermarknn_embeds_attacks_and_verifies(run):
    work, _, _ = run
    run_dir = work / "results" / "digits" / "resnet18-small" / "seed0"
    table = pd.read_csv(run_dir / "watermarknn" / "verification.csv").set_index("network")
    assert sorted(table.index) == [
        "base",
        "wnn-pretrained",
        "wnn-pretrained.ftll",
        "wnn-pretrained.rtal",
        "wnn-scratch",
        "wnn-scratch.ftll",
        "wnn-scratch.rtal",
    ]
    assert not table.loc["base", "claimed"]  # the clean model is not claimed
    assert (
        table["test_accuracy"].between(0, 1).all() and table["trigger_accuracy"].between(0, 1).all()
    )
    vk = (run_dir / "watermarknn" / "wnn-scratch" / "verification_key.json").read_text()
    assert '"n": 20' in vk
    rtal = pd.read_csv(run_dir / "watermarknn" / "wnn-scratch" / "rtal.csv")
    assert {"trigger_accuracy", "trigger_accuracy_own_head"} <= set(rtal.columns) and len(rtal) == 1
    attacks = pd.read_csv(run_dir / "watermarknn" / "attacks.csv")
    assert set(attacks["attack"]) == {"-", "ftll", "rtal", "prune 50%"}
    for f in ("summary.md", "summary.html"):
        text = (work / "results" / f).read_text()
        assert (
            "WatermarkNN" in text
            and "wnn-pretrained" in text
            and "rtal" in text
            and "prune 50%" in text
        )
    assert (run_dir / "watermarknn" / "attacks.png").stat().st_size > 10_000


def test_unleashing_mask_rows_and_artifacts(run):
    import json

    work, _, _ = run
    run_dir = work / "results" / "digits" / "resnet18-small" / "seed0"
    estimate = json.loads((run_dir / "unleashing_mask" / "base.constraint.json").read_text())
    assert len(estimate["draws"]) == 2 and estimate["level"] > 0
    for name in FINETUNES:
        assert (run_dir / "plots" / "finetune" / f"{name}.png").exists()
    text = (work / "results" / "summary.md").read_text()
    for name in SCORED_FINETUNES:
        assert f"| {name} " in text
    tidy = pd.read_csv(work / "results" / "metrics.csv")
    assert set(tidy[tidy["model"] == "oe+um"]["method"]) == {"msp", "odin"}
    manifest = json.loads((work / "results" / "manifest.json").read_text())
    assert (
        manifest["versions"]["torch"]
        and manifest["config_sha256"]
        and manifest["started"] <= manifest["finished"]
    )


def test_changing_the_mask_ratio_refits_only_what_uses_um(run):
    jobs = plan_after(run, "keep", lambda c: c["unleashing_mask"].update({"keep": 0.9}))
    assert jobs["estimate_loss_constraint"] == 2
    assert jobs["finetune_model"] == 2 * 3  # um, umap, oe+um; not oe
    assert jobs["evaluate_claims"] == 1  # UM's accuracy claim reads the new model's features
    assert (
        "train_backbone" not in jobs
        and "embed_watermark" not in jobs
        and "learn_watermark" not in jobs
    )


def test_a_training_set_drawn_per_seed_is_each_runs_own_and_feeds_every_training_job(run):
    """`per_seed`: each seed draws its own sample of the converted set, reproducibly, and every
    job that reads the training set reads the run's sample."""
    work, _, config = run
    config = copy.deepcopy(config)
    config["dataset_options"] = {"digits-train": {"sample": 300, "per_seed": True}}
    changed = work / "per_seed.yaml"
    changed.write_text(yaml.safe_dump(config))
    planned = planned_jobs(snakemake(work, changed, "--dry-run"))
    assert planned["draw_training_set"] == 2
    assert planned["train_backbone"] == 2 and "generate_offline_dataset" not in planned
    runs = [work / f"results/digits/resnet18-small/seed{s}/training_set.npz" for s in (0, 1)]
    result = snakemake(work, changed, *map(str, runs))
    assert result.returncode == 0, result.stderr[-3000:]
    full = np.load(work / "data/datasets/digits-train.npz")
    drawn = [np.load(path) for path in runs]
    assert [len(d["labels"]) for d in drawn] == [300, 300]
    rows = [{img.tobytes() for img in d["images"]} for d in drawn]
    assert rows[0] != rows[1]
    assert rows[0] <= {img.tobytes() for img in full["images"]}
    for path in runs:
        path.unlink()
    assert snakemake(work, changed, str(runs[0])).returncode == 0
    again = np.load(runs[0])
    assert (again["images"] == drawn[0]["images"]).all()
    runs[0].unlink()


def test_bad_config_fails_before_any_job(run, tmp_path):
    _, _, config = run
    config = copy.deepcopy(config)
    config["training"]["epochz"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, bad, "--dry-run")
    assert result.returncode != 0
    said = result.stdout + result.stderr
    assert "training: unknown key" in said and "epochz" in said
    assert not (tmp_path / "results").exists()


def test_a_checkpoint_that_is_not_the_configured_model_is_refused(run):
    """Another network copied over models/base.pt: feature dumping refuses it, naming both specs."""
    import torch

    from oodrepro import models

    work, cfgfile, config = run
    seed_dir = Path(config["results"]) / "digits" / "resnet18-small" / "seed1"
    base = seed_dir / "models" / "base.pt"
    saved = base.read_bytes()
    spec = {
        "arch": "resnet18",
        "num_classes": 10,
        "width": 0.25,
        "normalization": "half",
    }  # config: 0.125
    try:
        models.save_model(base, models.build(**spec), spec)
        target = seed_dir / "features" / "base" / "digits-test.npz"
        result = snakemake(work, cfgfile, str(target), "--forcerun", "dump_features")
        assert result.returncode != 0
        said = (seed_dir / "logs" / "dump_features" / "base.log").read_text()
        assert "CheckpointMismatch" in said and "width=0.25" in said and "width=0.125" in said
        assert (
            torch.load(base, weights_only=True)["spec"]["width"] == 0.25
        )  # refused, not overwritten
    finally:
        base.write_bytes(saved)


def test_laood_split_into_pieces_gives_the_one_job_detector(run, tmp_path):
    """Last in this module: it leaves the LA-OOD detector written by the split rules."""
    import numpy as np

    work, _, config = run
    detector = (
        Path(config["results"])
        / "digits"
        / "resnet18-small"
        / "seed0"
        / "detectors"
        / "base"
        / "laood.npz"
    )
    with np.load(detector) as f:
        one_job = {k: f[k] for k in f.files}
    split = copy.deepcopy(config)
    split["scores"]["laood"]["layers_per_job"] = 5  # 18 layers: pieces of 5, 5, 5, 3
    changed = work / "split.yaml"
    changed.write_text(yaml.safe_dump(split))
    result = snakemake(work, changed, str(detector), "--forcerun", "gather_laood")
    assert result.returncode == 0, result.stderr[-3000:]
    said = result.stdout + result.stderr
    assert said.count("rule fit_laood_part:") == 4 and "rule gather_laood:" in said
    with np.load(detector) as f:
        pieces = {k: f[k] for k in f.files}
    assert pieces.keys() == one_job.keys()
    for key in one_job:
        assert np.array_equal(
            pieces[key], one_job[key], equal_nan=one_job[key].dtype.kind == "f"
        ), key


def test_each_jobs_log_opens_with_what_it_ran_on(run):
    """One line per job: its rule, the machine (host, CPU, GPU, driver, torch, CUDA), threads,
    device, inputs and every parameter (as JSON); the same facts beside the log, for the
    manifest, which gathers them per rule."""
    work, _, config = run
    logs = work / "results" / config["benchmark"]["name"] / "resnet18-small" / "seed0" / "logs"
    said = {}
    for log, rule in (
        (logs / "train_backbone.log", "train_backbone"),
        (logs / "metrics" / "base" / "msp.log", "compute_metrics"),
    ):
        first = log.read_text().splitlines()[0]
        pattern = (
            rf"job {rule} on (\S+) \(CPU .+; GPU .+, driver .+; torch [\d.]+\S*, CUDA .+\): "
            r"\d+ thread\(s\), device (.+); inputs (.+); params (\{.*\})$"
        )
        m = re.search(pattern, first)
        assert m and m[3] != "none", first
        said[rule] = json.loads(m[4])
        node = json.loads(Path(f"{log}.node.json").read_text())
        assert node["rule"] == rule and node["host"] == m[1]
        manifest = json.loads((work / "results" / "manifest.json").read_text())
        (entry,) = [j for j in manifest["jobs"][rule] if (work / j["log"]).resolve() == log]
        assert {**entry, "rule": rule} == {**node, "log": entry["log"]}
    assert said["train_backbone"]["recipe"]["epochs"] == config["training"]["epochs"]
    assert said["train_backbone"]["device"] == config["device"]


def test_the_summary_renders_in_a_browser_with_every_image(run):
    """summary.html as a reader opens it: the claims' forest plot and each backbone's overview
    load (headless Chromium)."""
    work, _, config = run
    try:
        seen = browser.images(work / "results" / "summary.html")
    except debian.Unavailable as err:
        pytest.skip(str(err))
    assert seen == {"images": 1 + len(config["backbones"]), "broken": []}
