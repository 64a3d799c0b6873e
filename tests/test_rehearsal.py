"""Rehearsals: stand-ins for every archive, the shrink rule, the REHEARSAL marks, the estimate.

The rehearsals themselves (every preset's DAG on stand-in data) run in CI through
`make rehearse-all`, after the tests (docs/rehearsal.md).
"""

import json
import re
from pathlib import Path

import fixtures
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from oodrepro import config as cfg
from oodrepro import cost, data, derive, layout, manifest, models, rehearsal, report
from oodrepro.data import standins
from oodrepro.data.download import file_digest

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "presets").glob("*.yaml"))
# the rehearsal runs one seed; the estimate multiplies every run folder's jobs by the preset's
WNN_SEEDS = len(
    yaml.safe_load((ROOT / "presets" / "watermarknn-usenix18.yaml").read_text())["seeds"]
)
BUDGET_KEYS = {
    "seeds",
    "layers_per_job",  # the schedule's split of LA-OOD's fit, not a budget, not the result
    "epochs",
    "milestones",
    "decay_epoch",
    "first_epoch",
    "warmup",
    "batch_size",
    "sample",
    "n_ood",
    "n_outliers",
    "max_fit",
    "n_fit",
    "draws",
    "null_models",
    "n",
}
CONVERTED = [name for name, spec in data.DATASETS.items() if spec.archives]


def test_every_registered_archive_has_a_stand_in():
    assert set(standins.BUILDERS) == set(data.ARCHIVES)


@pytest.mark.parametrize("name", CONVERTED)
def test_each_dataset_converts_from_its_stand_ins(tmp_path, name):
    archives = standins.build(data.archives_of(name), tmp_path / "standins", n=16)
    out = tmp_path / f"{name}.npz"
    data.convert_download(name, list(archives.values()), out, sample=5, seed=0)
    images, labels = data.load_dataset(out)
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8 and len(labels) == 5
    assert images.std() > 0  # decoded pixels, not an empty canvas


WRN = {"arch": "wrn40_2", "dropout": 0.3, "normalization": "hendrycks-cifar"}
DENSENET = {
    "arch": "densenet100",
    "affine_bn": False,
    "dropout": 0.3,
    "normalization": "hendrycks-cifar",
}


@pytest.mark.parametrize(
    "archive,classes,spec,key_format",
    [
        ("cifar10_wrn_pretrained_epoch_99.pt", 10, WRN, "hendrycks-wrn"),
        ("cifar100_wrn_pretrained_epoch_99.pt", 100, WRN, "hendrycks-wrn"),
        *(
            (f"densenet_{bench}_{stage}.state", classes, DENSENET, "unleashing-mask")
            for bench, classes in (("cifar10", 10), ("cifar100", 100))
            for stage in ("best", "last")
        ),
    ],
)
def test_the_checkpoint_stand_ins_import_strictly(tmp_path, archive, classes, spec, key_format):
    path = standins.build([archive], tmp_path, n=8)[archive]
    spec = {**spec, "num_classes": classes}
    imported = models.import_pretrained(path, tmp_path / "base.pt", spec, key_format)
    with torch.no_grad():
        logits = imported(torch.rand(8, 3, 32, 32))
    # calibrated BatchNorm: logits of a released network's size, which the energy watermark's exp()
    # takes
    assert logits.shape == (8, classes) and logits.abs().max() < 20


def test_stand_ins_are_the_same_bytes_every_time(tmp_path):
    names = ["cifar-10-python.tar.gz", "LSUN.tar.gz", "300K_random_images.npy"]
    a = standins.build(names, tmp_path / "a", n=8)
    b = standins.build(names, tmp_path / "b", n=8)
    for name in names:
        assert a[name].read_bytes() == b[name].read_bytes(), name


def _flat(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flat(value, (*prefix, key))
    else:
        yield prefix, node


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_the_shrink_rule_changes_budgets_only(preset):
    full = cfg.load(preset)
    small = rehearsal.shrink(full)
    cfg.validate(small)
    before, after = dict(_flat(full)), dict(_flat(small))
    changed = {path for path in before.keys() | after.keys() if before.get(path) != after.get(path)}
    assert {path[-1] for path in changed} <= BUDGET_KEYS, changed
    for path, value in after.items():
        key = path[-1]
        if key in ("epochs", "warmup", "batch_size", "max_fit", "n_fit", "null_models"):
            limit = {
                "epochs": rehearsal.EPOCHS,
                "warmup": rehearsal.WARMUP,
                "batch_size": rehearsal.BATCH,
                "max_fit": rehearsal.MAX_FIT,
                "n_fit": rehearsal.N_FIT,
                "null_models": rehearsal.NULL_MODELS,
            }
            assert value is None or value <= limit[key], (path, value)
        if key == "milestones":
            assert value == sorted(set(value)) and all(1 <= m <= rehearsal.EPOCHS for m in value)
    assert small["seeds"] == full["seeds"][:1]
    if small["benchmark"].get("outliers") == "outliers-aux":  # POEM chooses from a larger pool
        assert small["offline"]["n_outliers"] >= rehearsal._poem_pool(small)
    if "laood" in small["scores"]:
        assert (
            small["scores"]["laood"]["max_fit"] == rehearsal.MAX_FIT
        )  # the preset's null (all) is capped
        if full["scores"]["laood"].get("layers_per_job"):  # still split, in a few pieces
            assert small["scores"]["laood"]["layers_per_job"] == rehearsal.LAYERS_PER_JOB
    arch = next(iter(small["backbones"]))
    for name, finetune in small.get(
        "finetunes", {}
    ).items():  # DOE perturbs in the epochs after warm-up
        if "warmup" in finetune.get("exposure", {}):
            assert (
                finetune["exposure"]["warmup"] < derive.finetune_recipe(small, arch, name)["epochs"]
            )


def test_a_continuation_still_starts_inside_the_shrunk_base_run():
    small = rehearsal.shrink(cfg.load(ROOT / "presets" / "watermarknn-usenix18.yaml"))
    pretrained = small["watermarknn"]["owners"]["pretrained"]
    assert (
        pretrained["first_epoch"] == rehearsal.EPOCHS - 1
    )  # 59 of 60 → the last epoch of the shrunk run
    assert pretrained["training"]["schedule"]["milestones"] == list(range(1, rehearsal.EPOCHS + 1))


def test_prepare_writes_a_marked_config_that_downloads_only_stand_ins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    preset = ROOT / "presets" / "watermarking-neurips22.yaml"
    path = rehearsal.prepare(preset)
    assert path == Path("rehearsal/watermarking-neurips22/config.yaml")
    written = cfg.load(path)
    assert written["rehearsal"]["banner"].startswith("REHEARSAL of ") and written["report"][
        "title"
    ].startswith("REHEARSAL")
    assert written["results"].startswith("rehearsal/") and written["data"].startswith("rehearsal/")
    needed = data.needed_archives(cfg.load(preset))
    assert "cifar10_wrn_pretrained_epoch_99.pt" in needed and set(written["downloads"]) == set(
        needed
    )
    for name, where in written["downloads"].items():
        local = Path(where["url"].removeprefix("file://"))
        assert local.name == name and where["sha256"] == file_digest(local, "sha256")
    assert path.read_text().startswith("# REHEARSAL")


def test_summary_report_and_manifest_say_rehearsal(tmp_path):
    summary = pd.DataFrame(
        [
            {
                "benchmark": "b",
                "arch": "a",
                "model": "base",
                "method": "msp",
                "ood_set": "mean",
                "metric": "auroc",
                "mean": 50.0,
                "std": 0.0,
                "seeds": 1,
            }
        ]
    )
    banner = rehearsal.BANNER.format(of="presets/x.yaml")
    assert f"**{banner}**" in report.markdown_summary(summary, title="t", banner=banner)
    assert banner in report.html_summary(summary, title="t", banner=banner)
    config = cfg.load(ROOT / "config.yaml", cache_dir=tmp_path / "cache")
    config["rehearsal"] = {"of": "presets/x.yaml", "banner": banner}
    assert manifest.build(config, ROOT, None)["REHEARSAL"]["of"] == "presets/x.yaml"


def _estimate(preset):
    """The cost estimate of `preset` from its prepared rehearsal."""
    return cost.estimate(preset, rehearsal.folder(preset) / "config.yaml")


def _fake_rehearsal(base: Path, job_seconds: dict) -> None:
    """The files an estimate reads, as a rehearsal of the WatermarkNN preset leaves them."""
    run = base / "results" / "cifar10" / "preact-resnet18" / "seed0"
    for rel, seconds in job_seconds.items():
        tsv = run / "benchmarks" / rel if not rel.startswith("data/") else base / rel
        tsv.parent.mkdir(parents=True, exist_ok=True)
        tsv.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t100\n")
    (base / "results" / "manifest.json").write_text(
        json.dumps(
            {
                "device": {"cpu": "test CPU", "gpus": []},
                "started": "2026-01-01T10:00:00+00:00",
                "finished": "2026-01-01T10:01:30+00:00",
            }
        )
    )
    epochs = "".join(f"{e},1.0\n" for e in range(1, rehearsal.EPOCHS + 1))
    (run / "train_log.csv").write_text("epoch,seconds\n" + epochs)
    datasets = base / "data" / "datasets"
    datasets.mkdir(parents=True)
    for name, n in (
        ("cifar10-train", 320),
        ("cifar10-test", 64),
        ("svhn-test", 64),
        ("adi-triggers", 20),
    ):
        np.savez(
            datasets / f"{name}.npz",
            images=np.zeros((n, 32, 32, 3), np.uint8),
            labels=np.zeros(n, np.int64),
        )


def test_the_estimate_scales_each_job_by_its_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    preset = ROOT / "presets" / "watermarknn-usenix18.yaml"
    config = rehearsal.prepare(preset)
    base = config.parent
    seconds = {
        "train_backbone.tsv": 11.0,
        "dump_features/base.tsv": 3.0,
        "plot_training.tsv": 1.0,
        "score/base/msp.tsv": 1.0,
        "score/base/knn.tsv": 3.0,
        "fit_detector/base/knn.tsv": 3.0,
        "compute_metrics/base/msp.tsv": 1.0,
        "data/benchmarks/convert_dataset/svhn-test.tsv": 1.0,
    }
    _fake_rehearsal(base, seconds)
    per_stage, by_arch, totals = _estimate(preset)
    stage = per_stage.set_index("stage")["estimate hours"] * 3600
    # start-up: the 10th percentile of the eight jobs (1 s); training: the logged epochs (1 s each)
    # scale with
    # 60 epochs on 50,000 images against the rehearsal's EPOCHS on 320, the other 8 s with the
    # epochs alone
    assert totals["start-up s"] == pytest.approx(1.0)
    epochs = 60 / rehearsal.EPOCHS
    other = 11.0 - 1.0 - rehearsal.EPOCHS
    assert stage["training"] == pytest.approx(
        WNN_SEEDS * (1.0 + other * epochs + rehearsal.EPOCHS * epochs * 50_000 / 320)
    )
    assert stage["features"] == pytest.approx(
        WNN_SEEDS * (1.0 + 2.0 * (36_032 / 128))
    )  # CIFAR-10 test + SVHN test, per seed
    assert stage["data"] == pytest.approx(1.0)  # svhn-test: 1 s is all start-up
    # scores: MSP is all start-up; KNN's search (its score job) grows with n_test × n_train, its
    # fit (storing the training features) with n_train alone
    train, tested = 50_000 / 320, 36_032 / 128
    assert stage["scores"] == pytest.approx(
        WNN_SEEDS * (1.0 + (1.0 + 2.0 * tested * train) + (1.0 + 2.0 * train))
    )
    assert by_arch.set_index("rule").loc["train_backbone", "images/s"] == pytest.approx(320)
    assert totals["device"].startswith("CPU test CPU") and totals["wall s"] == 90
    text = cost.render(preset, per_stage, by_arch, totals)
    assert (
        "job-hours on this device" in text
        and "WatermarkNN-448bf51.zip (sizes not recorded)" in text
    )


def test_a_trainer_scales_its_steady_epoch_and_a_conversion_its_logged_work(tmp_path, monkeypatch):
    """The first epoch's warm-up is paid once, not per epoch and image; a conversion's imports
    are paid once, its logged conversion grows with the images (both measured at 4× and 16×
    budgets, docs/rehearsal.md)."""
    monkeypatch.chdir(tmp_path)
    preset = ROOT / "presets" / "watermarknn-usenix18.yaml"
    base = rehearsal.prepare(preset).parent
    seconds = {
        "train_backbone.tsv": 11.0,
        "plot_training.tsv": 1.0,
        "data/benchmarks/convert_dataset/svhn-test.tsv": 4.0,
    }
    _fake_rehearsal(base, seconds)
    run = base / "results" / "cifar10" / "preact-resnet18" / "seed0"
    (run / "train_log.csv").write_text("epoch,seconds\n1,3.0\n2,1.0\n")  # warm-up: 2 s
    logs = base / "data" / "logs"
    logs.mkdir(parents=True)
    (logs / "convert_svhn-test.log").write_text("10:00 job\n10:00 converted 64 images in 0.5 s\n")
    stage = _estimate(preset)[0].set_index("stage")["estimate hours"] * 3600
    startup = float(np.quantile([11.0, 1.0, 4.0], 0.1))
    epochs_f = 60  # the preset's
    other = 11.0 - startup - 4.0  # evaluation and saving: with the epochs
    assert stage["training"] == pytest.approx(
        WNN_SEEDS * (startup + other * epochs_f / 2 + 2.0 + 1.0 * epochs_f * 50_000 / 320)
    )
    assert stage["data"] == pytest.approx(3.5 + 0.5 * 26_032 / 64)


def test_the_ensemble_fit_scales_by_its_forward_passes(tmp_path, monkeypatch):
    """Not by images alone: its FGSM copies and layer scores grow with n_fit × layers ×
    magnitudes, which the shrink rule caps while the training set stays."""
    monkeypatch.chdir(tmp_path)
    text = yaml.safe_load((ROOT / "presets" / "watermarknn-usenix18.yaml").read_text())
    text["scores"]["mahalanobis_ensemble"] = {
        "layers": ["blocks.1", "penultimate"],
        "n_fit": 500,
        "magnitudes": [0.0, 0.01, 0.001],
    }
    preset = tmp_path / "wnn-ensemble.yaml"
    preset.write_text(yaml.safe_dump(text))
    base = rehearsal.prepare(preset).parent
    seconds = {"train_backbone.tsv": 11.0, "plot_training.tsv": 1.0}
    _fake_rehearsal(base, {**seconds, "fit_detector/base/mahalanobis_ensemble.tsv": 3.0})
    stage = _estimate(preset)[0].set_index("stage")["estimate hours"] * 3600
    startup = float(np.quantile([11.0, 1.0, 3.0], 0.1))

    def passes(n_train, n_fit):  # 2 layers, 2 non-zero magnitudes: 1 + 2·(2 + 2) per image
        return n_train + 3 * 2 * n_fit + 2 * 2 * n_fit * (1 + 2 * (2 + 2))

    work = passes(50_000, 500) / passes(320, min(500, rehearsal.N_FIT))
    assert stage["scores"] == pytest.approx(WNN_SEEDS * (startup + (3.0 - startup) * work))


def _makefile_list(name: str) -> list[str]:
    line = next(
        x for x in (ROOT / "Makefile").read_text().splitlines() if x.startswith(f"{name} =")
    )
    return line.split("=", 1)[1].split()


def _footprint(preset: Path, tmp_path: Path) -> set[tuple[str, str]]:
    """What a rehearsal of `preset` exercises: its rules (a dry run's job stats), archives,
    architectures, scores, fine-tune kinds, watermark objectives and attacks."""
    import contextlib

    config_file = preset
    config = cfg.load(preset)
    if data.local_sources(config):  # the user's own files (OpenOOD's): the stand-ins
        with contextlib.chdir(tmp_path):
            config_file = (tmp_path / rehearsal.prepare(preset)).resolve()
    elif data.unpinned(config):  # a dry run downloads nothing: any pin lets it plan
        raw = cfg.read_yaml(preset)
        for name in data.needed_archives(config):
            if not any(data.archive_source(config, name)[k] for k in data.download.PINS):
                raw.setdefault("downloads", {})[name] = {"sha256": "0" * 64}
        config_file = tmp_path / f"{preset.stem}.pinned.yaml"
        config_file.write_text(yaml.safe_dump(raw))
    planned = fixtures.dry_run(config_file, tmp_path / preset.stem)
    table = planned.split("Job stats:")[1]
    found = {
        ("rule", m[1]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"
    }
    c = cfg.load(preset)
    found |= {("archive", a) for a in data.needed_archives(c)}
    found |= {("arch", b["arch"]) for b in c["backbones"].values()} | {
        ("score", s) for s in c["scores"]
    }
    for f in c.get("finetunes", {}).values():
        found |= {
            ("exposure", f.get("exposure", {}).get("method", "none")),
            ("mask", str(f.get("mask"))),
        }
    found |= {("objective", w["objective"]) for w in c.get("watermarks", {}).values()}
    found |= {("attack", a) for a in c.get("watermarknn", {}).get("attacks", {}).get("kinds", [])}
    return found


def test_the_rehearsals_ci_runs_cover_every_presets_rules_archives_architectures_and_scores(
    tmp_path,
):
    """CI rehearses the CIFAR-10 presets (`REHEARSE_CI` in the Makefile). Each CIFAR-100 twin
    differs from its CIFAR-10 preset in the ID dataset's name and class count and its paper's
    numbers only: the same rules, converters, architectures and scores. The archives only a twin
    names, CIFAR-100's released WRN and DenseNets, are imported from their stand-ins above."""
    chosen = [ROOT / p for p in _makefile_list("REHEARSE_CI")]
    assert set(chosen) <= set(PRESETS)
    covered = set().union(*(_footprint(p, tmp_path) for p in chosen))
    for preset in sorted(set(PRESETS) - set(chosen)):
        missing = (
            _footprint(preset, tmp_path)
            - covered
            - {
                ("archive", a)
                for a in (
                    "cifar100_wrn_pretrained_epoch_99.pt",
                    "densenet_cifar100_best.state",
                    "densenet_cifar100_last.state",
                )
            }
        )
        assert not missing, f"{preset.name} exercises what no CI rehearsal does: {sorted(missing)}"


def test_every_jobs_cost_is_registered_under_the_benchmark_folder_its_rule_writes():
    """The estimate knows each job by its benchmark folder (`layout.JOBS`), and how it grows by
    its kind (`cost.COSTS`): every folder a rule file writes has a kind, every kind a cost, and
    a renamed rule fails here instead of being costed as a plot."""
    text = "\n".join(p.read_text() for p in sorted((ROOT / "rules").glob("*.smk")))
    folders = set(re.findall(r"/benchmarks/(\w+)(?:/|\.tsv)", text))
    assert folders == set(layout.JOBS)
    assert set(layout.JOBS.values()) | {"LA-OOD fit"} == set(cost.COSTS)


def test_each_trainers_epoch_log_is_the_one_its_rule_writes():
    """A trainer's cost reads its epoch log through the layout: the same method, with the same
    wildcards, as its rule's `log_csv` output (a moved log fails here, not in a silent
    fallback to the job's whole time)."""
    run = layout.RunFolder(layout.run_folder("results", "{bench}", "{arch}", "{seed}"))
    stems = {
        "train_backbone": "base",
        "train_null_model": "null0",
        "embed_watermark": "wm-scratch",
        "attack_watermark": "wm-scratch.ftll",
        "finetune_model": "um",
        "learn_watermark": "base+wm-msp",
    }
    trainers = {k for k, v in layout.JOBS.items() if isinstance(cost.COSTS[v], cost.Trainer)}
    assert trainers == set(stems)
    text = "\n".join(p.read_text() for p in sorted((ROOT / "rules").glob("*.smk")))
    for rule, stem in stems.items():
        block = re.split(r"\n(?:use )?rule ", text[text.index(f"rule {rule}:") :])[0]
        declared = eval(re.search(r"log_csv=(IN_RUN\.\w+\([^)]*\))", block)[1], {"IN_RUN": run})
        wildcards = re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(declared))
        assert re.fullmatch(wildcards, cost.COSTS[layout.JOBS[rule]].log(run, stem)), rule


def test_a_rule_run_several_times_has_its_own_start_up(tmp_path, monkeypatch):
    """Two feature dumps of 5 s and 6 s: 5 s is the dump's own start-up (imports, the model),
    and only the other's extra second grows with the images."""
    monkeypatch.chdir(tmp_path)
    preset = ROOT / "presets" / "watermarknn-usenix18.yaml"
    base = rehearsal.prepare(preset).parent
    seconds = {"train_backbone.tsv": 11.0, "plot_training.tsv": 1.0}
    _fake_rehearsal(base, {**seconds, "dump_features/a.tsv": 5.0, "dump_features/b.tsv": 6.0})
    stage = _estimate(preset)[0].set_index("stage")["estimate hours"] * 3600
    assert stage["features"] == pytest.approx(WNN_SEEDS * (5.0 + 5.0 + 1.0 * 36_032 / 128))


def test_disk_grows_each_array_with_the_images_it_holds(tmp_path):
    run = tmp_path / "results" / "b" / "arch" / "seed0"
    files = {  # path: (bytes, growth at full scale)
        tmp_path / "data" / "datasets" / "test.npz": (100, 10.0),  # a converted set
        run / "features" / "base" / "test.npz": (200, 10.0),  # a set's features
        run / "features" / "base" / "train.convs.npz": (300, 20.0),
        run / "scores" / "base" / "msp" / "test.npy": (40, 10.0),
        run / "detectors" / "base" / "mahalanobis.npz": (500, 1.0),  # fixed by the network
        run / "detectors" / "base" / "knn.npz": (60, 20.0),  # keeps training rows
        run / "detectors" / "base" / "laood" / "part0.npz": (70, 20.0),
        run / "laood" / "base" / "decisions.npz": (80, 15.0),  # every set's images
        run / "models" / "base.pt": (1000, 1.0),
    }
    for path, (size, _) in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    n_reh, n_full = {"train": 10, "test": 10}, {"train": 200, "test": 100}
    seeds = 3
    expected = sum(
        size * grow * (seeds if "results" in path.parts else 1)
        for path, (size, grow) in files.items()
    )
    disk = cost.disk_bytes(tmp_path / "results", tmp_path / "data", n_reh, n_full, seeds, "train")
    assert disk == int(expected)
