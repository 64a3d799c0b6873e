"""Rehearse a preset: its own DAG on stand-in archives with shrunk budgets, then a cost estimate.

A preset's real run takes GPU-days; a rehearsal runs the same rules, architectures, dataset
names, 32×32 recipes, converters, checkpoint imports, scores, metric conventions and report
in minutes, so that a broken late stage shows up before the day of training that precedes
it. Stand-in archives in each release's format (`data.standins`) are read through
`file://`, verified by their own sha256.

The shrink rule (docs/rehearsal.md) changes budgets only, never a method's options:

- seeds: the first only; WatermarkNN null models: at most NULL_MODELS;
- every `epochs`: at most EPOCHS; in the same recipe, milestones and `decay_epoch` scaled by
  the same factor (rounded, at least 1, at most the new epochs); a continuation's
  `first_epoch` scaled by the backbone recipe's factor, below its new epochs; DOE's
  `warmup`: at most WARMUP (so the perturbed epochs run);
- every `batch_size`: at most BATCH;
- each archive: about STANDIN_IMAGES images (CIFAR-10: 80 training, 16 test; CIFAR-100: 100 of
each);
  `dataset_options.*.sample`: at most SAMPLE (an ID training set's: its stand-in's size);
  offline `n_ood` / `n_outliers`: at most OFFLINE_N, the outliers at least twice what POEM
  selects of them (else it would select the whole pool, which validation refuses);
- LA-OOD `max_fit`: at most MAX_FIT (null = all becomes MAX_FIT); the Mahalanobis ensemble's
  `n_fit`: at most N_FIT; Unleashing Mask's mask `draws`: at most DRAWS;
  `metrics.subsample`: n at most SUBSAMPLE_N, draws at most DRAWS.

    python -m oodrepro.rehearsal prepare presets/<paper>.yaml   # prints the rehearsal config
    python -m oodrepro.rehearsal estimate presets/<paper>.yaml  # after the run: the cost table
"""

from __future__ import annotations

import copy
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

from . import config as cfg
from . import data, laood
from .data import standins
from .data.download import file_digest
from .io import npz_shapes, save_text
from .scores import CONVS, JIGSAW, SCORES

ROOT = "rehearsal"
EPOCHS, WARMUP, BATCH = 2, 1, 32
STANDIN_IMAGES, SAMPLE, OFFLINE_N = 32, 16, 32
MAX_FIT, N_FIT, DRAWS, NULL_MODELS, SUBSAMPLE_N = 32, 8, 2, 2, 16
BANNER = (
    "REHEARSAL of {of} on stand-in data with shrunk budgets (docs/rehearsal.md): "
    "these numbers test the pipeline; they are not a reproduction."
)


def _scale(value: int, factor: float, top: int, bottom: int = 1) -> int:
    return min(top, max(bottom, round(value * factor)))


def _shrink_recipe(recipe: dict, factor_if_no_epochs: float, epochs: int = EPOCHS) -> float:
    """Cap `epochs` in one recipe-like dict and scale its epoch-valued keys; returns the factor."""
    factor = factor_if_no_epochs
    if "epochs" in recipe:
        new = min(recipe["epochs"], epochs)
        factor, recipe["epochs"] = new / recipe["epochs"], new
    top = recipe.get("epochs", epochs)
    schedule = recipe.get("schedule", {})
    if "milestones" in schedule:
        schedule["milestones"] = sorted({_scale(m, factor, top) for m in schedule["milestones"]})
    if "decay_epoch" in recipe:
        recipe["decay_epoch"] = _scale(recipe["decay_epoch"], factor, top - 1, 0)
    return factor


def _cap(node, key: str, limit: int) -> None:
    """Cap `key` at `limit` in every dict of a nested structure."""
    if isinstance(node, dict):
        if isinstance(node.get(key), int) and not isinstance(node[key], bool):
            node[key] = min(node[key], limit)
        for value in node.values():
            _cap(value, key, limit)
    elif isinstance(node, list):
        for value in node:
            _cap(value, key, limit)


def _poem_pool(config: dict) -> int:
    """Twice the most outliers a POEM fine-tune selects from the generated pool (0 without one,
    where the outliers are downloaded, or where only the files tell the ID set's size)."""
    if config["benchmark"].get("outliers") != "outliers-aux":
        return 0
    return 2 * max(cfg.poem_selections(config).values(), default=0)


def shrink(config: dict, scale: int = 1) -> dict:
    """The rehearsal's budgets for a validated config, by the rule in this module's docstring.

    `scale` multiplies the caps on epochs and images (EPOCHS, SAMPLE, OFFLINE_N): the larger
    budgets that `bench/estimate_check.py` runs to measure the cost estimate's error.
    """
    c = copy.deepcopy(config)
    c["seeds"] = c["seeds"][:1]
    epochs = EPOCHS * scale
    base = _shrink_recipe(c["training"], 1.0, epochs)
    for backbone in c["backbones"].values():
        if "training" in backbone:
            _shrink_recipe(backbone["training"], base, epochs)
    for finetune in c.get("finetunes", {}).values():
        _shrink_recipe(finetune.get("training", {}), base, epochs)
        if "warmup" in finetune.get("exposure", {}):
            finetune["exposure"]["warmup"] = min(finetune["exposure"]["warmup"], WARMUP)
    for watermark in c.get("watermarks", {}).values():
        _shrink_recipe(watermark, 1.0, epochs)
    wnn = c.get("watermarknn")
    if wnn:
        for owner in wnn["owners"].values():
            _shrink_recipe(owner.get("training", {}), base, epochs)
            if "first_epoch" in owner:
                owner["first_epoch"] = _scale(
                    owner["first_epoch"], base, c["training"]["epochs"] - 1, 0
                )
        wnn["attacks"]["epochs"] = min(wnn["attacks"]["epochs"], epochs)
        wnn["null_models"] = min(wnn["null_models"], NULL_MODELS)
    _cap(c, "batch_size", BATCH)
    for name, options in c.get("dataset_options", {}).items():
        # a sampled ID training set keeps its whole stand-in: held-out tuning images need some
        if "sample" in options and name != c["benchmark"]["id_train"]:
            options["sample"] = min(options["sample"], SAMPLE * scale)
    for key in ("n_ood", "n_outliers"):
        if key in c.get("offline", {}):
            c["offline"][key] = min(
                c["offline"][key],
                max(OFFLINE_N * scale, _poem_pool(c) if key == "n_outliers" else 0),
            )
    scores = c["scores"]
    if "laood" in scores:
        scores["laood"]["max_fit"] = min(scores["laood"].get("max_fit") or MAX_FIT, MAX_FIT)
    if "mahalanobis_ensemble" in scores:
        _cap(scores["mahalanobis_ensemble"], "n_fit", N_FIT)
    if "unleashing_mask" in c:
        _cap(c["unleashing_mask"], "draws", DRAWS)
    subsample = c.get("metrics", {}).get("subsample")
    if subsample:
        subsample["n"] = min(subsample["n"], SUBSAMPLE_N)
        if "draws" in subsample:
            subsample["draws"] = min(subsample["draws"], DRAWS)
    return c


def _openood_standins(c: dict, root: Path, n: int) -> None:
    """OpenOOD's own files as stand-ins, and `c` pointed at them: a data folder holding the lists
    the config reads (and their images), and each imported backbone's checkpoint per seed in
    OpenOOD's key layout (docs/openood-v15.md)."""
    lists = [data.imglist_of(name) for name in data.datasets_of(c) if data.imglist_of(name)]
    if lists:
        classes = {
            bench: data.get(f"openood-{bench}-train")[0].num_classes for bench in data.OPENOOD_LISTS
        }
        missing = [x for x in lists if not (root / "data" / "benchmark_imglist" / x).exists()]
        standins.openood_data(root / "data", missing, n, classes)  # kept: a rerun reuses its sets
        c["openood"] = {"data": str((root / "data").resolve())}
    for arch, backbone in c["backbones"].items():
        pretrained = backbone.get("pretrained", {})
        if "path" not in pretrained:
            continue
        if pretrained["format"] != "openood":
            raise ValueError(f"no stand-in for a {pretrained['format']!r} checkpoint file")
        classes = data.get(c["benchmark"]["id_train"])[0].num_classes
        path = root / "results" / arch / "s{seed}" / "best.ckpt"
        for seed in c["seeds"]:
            if not Path(str(path).format(seed=seed)).exists():
                standins.openood_checkpoint(Path(str(path).format(seed=seed)), classes, seed)
        pretrained["path"] = str(path.resolve())


def folder(preset, scale: int = 1) -> Path:
    return Path(ROOT) / (Path(preset).stem + (f"-x{scale}" if scale != 1 else ""))


def prepare(preset, scale: int = 1) -> Path:
    """Write the stand-in archives and rehearsal config of `preset`; returns the config's path.
    `scale` (see `shrink`) also multiplies the stand-ins' images."""
    full = cfg.load(preset, cache_dir=".snakemake/oodrepro")
    base = folder(preset, scale)
    c = shrink(full, scale)
    c["results"], c["data"] = str(base / "results"), str(base / "data")
    c["report"]["title"] = "REHEARSAL · " + c["report"]["title"]
    c["rehearsal"] = {"of": str(preset), "banner": BANNER.format(of=preset)}
    names = data.needed_archives(full)
    missing = [n for n in names if not (base / "standins" / n).exists()]
    standins.build(missing, base / "standins", STANDIN_IMAGES * scale)
    _openood_standins(c, base / "standins" / "openood", STANDIN_IMAGES * scale)
    c["downloads"] = {
        n: {
            "url": (base / "standins" / n).resolve().as_uri(),
            "sha256": file_digest(base / "standins" / n, "sha256"),
        }
        for n in names
    }
    cfg.validate(copy.deepcopy(c), cache_dir=".snakemake/oodrepro")
    path = base / "config.yaml"
    save_text(
        path,
        f"# {c['rehearsal']['banner']}\n# Written by `python -m oodrepro.rehearsal prepare "
        f"{preset}`.\n" + yaml.safe_dump(c, sort_keys=False),
    )
    return path


# --------------------------------------------------------------------------- cost estimate
TRAINERS = {
    "train_backbone",
    "train_null_model",
    "embed_watermark",
    "attack_watermark",
    "finetune_model",
    "learn_watermark",
}
EVALUATED = {"score", "compute_metrics"}  # dumps have their own branch: what they read
STAGES = {
    "download_archive": "data",
    "convert_dataset": "data",
    "generate_offline_dataset": "data",
    "import_pretrained_backbone": "training",
    "import_pretrained_snapshot": "training",
    "estimate_loss_constraint": "training",
    "dump_features": "features",
    "fit_detector": "scores",
    "score": "scores",
    "search_hyperparameters": "scores",
    "compute_metrics": "metrics and report",
    "laood": "LA-OOD fits",
}


def dataset_sizes(data_dir: Path) -> dict[str, int]:
    """Images in each dataset file a run made (read from the array headers)."""
    return {
        npz.stem: npz_shapes(npz)["images"][0]
        for npz in sorted((data_dir / "datasets").glob("*.npz"))
    }


def full_size(config: dict, name: str, rehearsed: int) -> int:
    """Images of dataset `name` in the full run (`data.expected_size`), or as rehearsed where only
    the files tell."""
    n = data.expected_size(config, name)
    return rehearsed if n is None else n


def _job_epochs(config: dict, rule: str, arch: str, stem: str) -> int:
    if rule in ("train_backbone", "train_null_model"):
        return cfg.recipe_of(config, arch)["epochs"]
    if rule == "finetune_model":
        return cfg.finetune_recipe(config, arch, stem)["epochs"]
    if rule == "embed_watermark":
        return cfg.owner_recipe(config, arch, stem)["epochs"]
    if rule == "attack_watermark":
        return config["watermarknn"]["attacks"]["epochs"]
    return config["watermarks"][stem.rpartition("+")[2]]["epochs"]  # learn_watermark


def benchmark_records(base: Path) -> pd.DataFrame:
    """One row per rehearsed job: rule, arch, file stem, seconds, peak RSS (MB)."""
    rows = []
    for tsv in sorted(base.rglob("benchmarks/**/*.tsv")):
        parts = tsv.relative_to(base).parts
        at = parts.index("benchmarks")
        inside = parts[at + 1 :]
        rule = inside[0].removesuffix(".tsv")
        stem = tsv.stem
        if rule == "fit_detector" and stem.startswith("laood"):
            rule = "laood"
        arch = parts[at - 2] if at >= 2 and parts[at - 1].startswith("seed") else ""
        record = pd.read_csv(tsv, sep="\t").iloc[-1]
        rows.append(
            {
                "rule": rule,
                "arch": arch,
                "stem": stem,
                "seconds": float(record["s"]),
                "rss_mb": float(pd.to_numeric(record["max_rss"], errors="coerce") or 0.0),
            }
        )
    return pd.DataFrame(rows)


STAGE_ORDER = [
    "data",
    "training",
    "features",
    "scores",
    "LA-OOD fits",
    "metrics and report",
    "analysis and plots",
]
TRAIN_LOGS = {
    "train_backbone": "train_log.csv",
    "train_null_model": "watermarknn/{stem}/train_log.csv",
    "embed_watermark": "watermarknn/{stem}/train_log.csv",
    "finetune_model": "finetune/{stem}.csv",
    "attack_watermark": "watermarknn/{owner}/{attack}.csv",
    "learn_watermark": "watermark/{stem}.csv",
}


def _manifest(base: Path, config: dict) -> tuple[str, float | None]:
    """What the rehearsal ran on (the GPU where it used one, else the CPU) and its DAG's wall
    seconds (the last Snakemake invocation's, from its manifest)."""
    import json
    from datetime import datetime

    found = json.loads((base / "results" / "manifest.json").read_text())
    device = found["device"]
    on_gpu = device["gpus"] and config["device"] != "cpu"
    name = f"GPU {device['gpus'][0]}" if on_gpu else f"CPU {device['cpu']}"
    if not found.get("started"):
        return name, None
    return name, (
        datetime.fromisoformat(found["finished"]) - datetime.fromisoformat(found["started"])
    ).total_seconds()


def _epoch_seconds(run: Path, rule: str, stem: str) -> tuple[float, float] | None:
    """Seconds of a trainer's logged epochs (its start-up, evaluation and saving excluded): all
    of them, and the last one's, the steady state after the first epoch's warm-up."""
    owner, _, attack = stem.partition(".")
    log = run / TRAIN_LOGS[rule].format(stem=stem, owner=owner, attack=attack)
    if not log.exists():
        return None
    history = pd.read_csv(log)
    if "seconds" not in history or not len(history) or not history["seconds"].sum() > 0:
        return None
    return float(history["seconds"].sum()), float(history["seconds"].iloc[-1])


def _conversion_seconds(data_dir: Path, stem: str) -> float | None:
    """Seconds a conversion job spent converting (its log line, `data.CONVERTED`), its start-up
    excluded."""
    log = data_dir / "logs" / f"convert_{stem}.log"
    if not log.exists():
        return None
    found = re.search(rf"{data.CONVERTED} \d+ images in ([0-9.]+) s", log.read_text())
    return float(found[1]) if found else None


def _ensemble_fit_passes(config: dict, n: dict[str, int]) -> float:
    """Forward-pass equivalents of the Mahalanobis ensemble's fit (a backward counts as two):
    class statistics, one pass per training image; FGSM copies of the 2·n_fit tuning images, a
    forward and a backward each; then layer scores of both at every magnitude, per image one
    pass, a backward per layer and a pass per layer and non-zero magnitude."""
    e = config["scores"]["mahalanobis_ensemble"]
    layers, moved = len(e["layers"]), sum(m != 0 for m in e["magnitudes"])
    tuning = 2 * e["n_fit"]
    return n[config["benchmark"]["id_train"]] + 3 * tuning + 2 * tuning * (1 + layers * (2 + moved))


def stage_of(rule: str) -> str:
    """The stage of the cost table a rule's jobs count in."""
    return STAGES.get(rule, "training" if rule in TRAINERS else "analysis and plots")


class _Scaling:
    """How each rehearsed job's seconds and memory grow to the full run (see `estimate`)."""

    def __init__(self, full: dict, reh: dict, base: Path, n_full: dict, jobs: pd.DataFrame):
        self.full, self.reh, self.base = full, reh, base
        self.n_reh = dataset_sizes(Path(reh["data"]))
        self.n_full = n_full or {k: full_size(full, k, v) for k, v in self.n_reh.items()}
        bench = full["benchmark"]
        self.train, self.evaluated = [bench["id_train"]], [bench["id_test"], *bench["ood"]]
        shapes = {f: npz_shapes(f) for f in base.rglob("features/*/*.npz")}  # headers read once
        rows = sum(shape["logits"][0] for shape in shapes.values() if "logits" in shape)
        self.feature_bytes = sum(f.stat().st_size for f in shapes) / max(1, rows)
        self.startup = float(jobs["seconds"].quantile(0.1))
        # a rule's own start-up: its fastest rehearsed job (imports, loading a model), where it
        # ran at least twice; every rehearsed job computes almost nothing, so what they share is
        # overhead
        fastest = jobs.groupby("rule")["seconds"].agg(["min", "count"])
        self.own_startup = {
            rule: max(self.startup, row["min"]) if row["count"] > 1 else self.startup
            for rule, row in fastest.iterrows()
        }
        self.seeds = len(full["seeds"]) / len(reh["seeds"])
        self.run = base / "results" / bench["name"]
        self._logged: dict[tuple, tuple[float, float] | None] = {}

    def images(self, names, full: bool) -> int:
        return sum((self.n_full if full else self.n_reh)[n] for n in names)

    def work(self, job) -> tuple[float, list[str], float, bool]:
        """(work full over rehearsal before the image ratio, the datasets the job holds, bytes
        per held image, whether the work grows with those images)."""
        full, reh = self.full, self.reh
        if job.rule in TRAINERS:
            return 1.0, self.train, 3072, True  # epochs: `trainer_seconds`
        if job.rule == "estimate_loss_constraint":
            draws = full["unleashing_mask"]["draws"] / reh["unleashing_mask"]["draws"]
            return draws, self.train, 3072, True
        if job.rule == "dump_features":
            on_train = job.stem.endswith((".train", JIGSAW))
            held = (
                self.train if on_train else self.evaluated + self.train * job.stem.endswith(CONVS)
            )
            return 1.0, held, 3072, True
        if job.rule in EVALUATED:
            work = 1.0
            if job.rule == "score" and job.stem == "knn":  # exact search: every test image
                work = self.images(self.train, True) / max(1, self.images(self.train, False))
            return work, self.evaluated, self.feature_bytes, True
        if job.rule == "fit_detector" and job.stem == "mahalanobis_ensemble":
            passes = _ensemble_fit_passes(full, self.n_full) / _ensemble_fit_passes(reh, self.n_reh)
            return passes, self.train, 3072, False
        if job.rule == "fit_detector":
            return 1.0, self.train, self.feature_bytes, True
        if job.rule in ("convert_dataset", "generate_offline_dataset") and job.stem in self.n_reh:
            return 1.0, [job.stem], 3072, True
        return 1.0, [], 3072, True

    def job(self, job) -> dict:
        """One rehearsed job's row of the cost table at full scale."""
        work, held, per_image, by_images = self.work(job)
        if held and by_images:
            work *= self.images(held, True) / max(1, self.images(held, False))
        copies = self.seeds if job.arch else 1.0
        if job.rule == "train_null_model":
            copies *= (
                self.full["watermarknn"]["null_models"] / self.reh["watermarknn"]["null_models"]
            )
        base_s = self.own_startup[job.rule]
        converting = (
            _conversion_seconds(Path(self.reh["data"]), job.stem)
            if job.rule == "convert_dataset"
            else None
        )
        if job.rule in TRAINERS:
            seconds = self.trainer_seconds(job, base_s, work)
        elif converting is not None:
            # the logged conversion scales with the images, the rest (imports) stays
            seconds = max(0.0, job.seconds - converting) + converting * work
        else:
            seconds = base_s + max(0.0, job.seconds - base_s) * work
        grown = (
            job.rss_mb + (self.images(held, True) - self.images(held, False)) * per_image / 2**20
        )
        stage = stage_of(job.rule)
        if stage == "LA-OOD fits":
            seconds, grown = 0.0, job.rss_mb  # replaced by the fit-time model (`_laood_estimate`)
        return {
            "stage": stage,
            "jobs": copies,
            "rehearsal s": job.seconds,
            "estimate s": seconds * copies,
            "peak MB (rehearsal)": job.rss_mb,
            "peak MB (estimate)": grown,
        }

    def logged_epochs(self, job) -> tuple[float, float] | None:
        """A trainer job's logged epoch seconds (`_epoch_seconds`), read once per job."""
        key = (job.rule, job.arch, job.stem)
        if key not in self._logged:
            run = self.run / job.arch / f"seed{self.reh['seeds'][0]}"
            self._logged[key] = _epoch_seconds(run, job.rule, job.stem)
        return self._logged[key]

    def trainer_seconds(self, job, base_s: float, images: float) -> float:
        """A trainer's logged epochs scale with images × epochs from the last one's seconds (the
        steady state; what the first epochs took beyond it is warm-up, paid once), the rest of
        the job (evaluation, saving) with epochs; without a log, the whole job above start-up
        with images × epochs."""
        epochs_r, epochs_f = (
            _job_epochs(c, job.rule, job.arch, job.stem) for c in (self.reh, self.full)
        )
        epochs = epochs_f / epochs_r
        logged = self.logged_epochs(job)
        if not logged:
            return base_s + max(0.0, job.seconds - base_s) * images * epochs
        total, last = logged
        warm_up = max(0.0, total - last * epochs_r)
        other = max(0.0, job.seconds - base_s - total)
        return base_s + other * epochs + warm_up + last * epochs_f * images

    def throughput(self, job) -> dict | None:
        """Training images per second of a trainer's logged epochs in the rehearsal."""
        logged = self.logged_epochs(job) if job.rule in TRAINERS else None
        if not logged:
            return None
        return {  # the steady state: the last epoch
            "rule": job.rule,
            "arch": job.arch,
            "images/s": self.images(self.train, False) / logged[1],
        }


def estimate(
    preset, *, target=None, target_sizes: dict[str, int] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """The full preset's cost from what its rehearsal measured, per stage; plus training
    throughput per architecture and the totals (docs/rehearsal.md states the model).

    Each job's time above start-up (what a job costs that computes almost nothing: its rule's
    fastest rehearsed job, or the 10th percentile of all jobs for a rule run once) is scaled by
    its work, full over rehearsal: for trainers, the last logged epoch's seconds (the steady
    state; the first epochs' warm-up is paid once) by images × epochs and the rest (evaluation,
    saving) by epochs; for conversions, the seconds their log says they converted, by images
    (their imports stay); images for dumps, scores and metrics; n_train × n_test for exact KNN's
    search (its `score` job; its fit only stores the training features); the ensemble's fit
    by its forward passes (`_ensemble_fit_passes`: training images, n_fit, layers, magnitudes).
    LA-OOD's layer fits come from `laood.layer_seconds` (n^2.14 · width). Peak memory grows
    by the images a job holds (3,072 bytes each as uint8 arrays, the feature bytes per image
    the rehearsal wrote for feature jobs).

    `target` (a config) is predicted instead of the preset, with `target_sizes` (dataset →
    images) where the registry does not know its sizes: how `bench/estimate_check.py` predicts
    a run at larger budgets from the rehearsal, to compare with that run.
    """
    full = cfg.load(target or preset, cache_dir=".snakemake/oodrepro")
    base = folder(preset)
    reh = cfg.load(base / "config.yaml", cache_dir=".snakemake/oodrepro")
    jobs = benchmark_records(base)
    if jobs.empty:
        raise FileNotFoundError(
            f"no benchmark records under {base}: run `make rehearse CONFIG={preset}` first"
        )
    scaling = _Scaling(full, reh, base, target_sizes, jobs)
    table = pd.DataFrame([scaling.job(job) for job in jobs.itertuples()])
    if (table["stage"] == "LA-OOD fits").any():
        n_train = scaling.images(scaling.train, True)
        seconds, memory = _laood_estimate(full, base, n_train)
        laood_row = {
            "stage": "LA-OOD fits",
            "jobs": 0,
            "rehearsal s": 0.0,
            "estimate s": seconds * scaling.seeds,
            "peak MB (rehearsal)": 0.0,
            "peak MB (estimate)": memory,
        }
        table = pd.concat([table, pd.DataFrame([laood_row])])
    per_stage = _per_stage(table)
    throughput = [t for t in map(scaling.throughput, jobs.itertuples()) if t]
    totals = {
        "rehearsal jobs": len(jobs),
        "rehearsal job-seconds": float(jobs["seconds"].sum()),
        "start-up s": scaling.startup,
        "estimate hours": float(per_stage["estimate hours"].sum()),
        "download bytes": _download_bytes(full),
        "disk bytes": _disk_bytes(
            base, scaling.n_reh, scaling.n_full, scaling.seeds, full["benchmark"]["id_train"]
        ),
        **dict(zip(("device", "wall s"), _manifest(base, reh), strict=True)),
    }
    by_arch = (
        pd.DataFrame(throughput).groupby(["arch", "rule"]).median().reset_index()
        if throughput
        else None
    )
    return per_stage, by_arch, totals


def _per_stage(table: pd.DataFrame) -> pd.DataFrame:
    """The job rows summed per stage, in pipeline order; seconds as hours."""
    per_stage = table.groupby("stage").agg(
        {
            "jobs": "sum",
            "rehearsal s": "sum",
            "estimate s": "sum",
            "peak MB (rehearsal)": "max",
            "peak MB (estimate)": "max",
        }
    )
    per_stage = per_stage.reindex([s for s in STAGE_ORDER if s in per_stage.index]).reset_index()
    per_stage["jobs"] = per_stage["jobs"].round().astype(int)
    per_stage["estimate hours"] = per_stage.pop("estimate s") / 3600
    return per_stage


def _laood_estimate(full: dict, base: Path, n_train: int) -> tuple[float, float]:
    """Core-seconds of every LA-OOD layer fit at full scale and the largest fit's memory (MB),
    from the cost model in `laood` and each layer's width as the rehearsal fitted it."""
    n = min(full["scores"]["laood"].get("max_fit") or n_train, n_train)
    widths = [
        shape[0]
        for detector in base.rglob("detectors/*/laood.npz")
        for key, shape in npz_shapes(detector).items()
        if key.endswith("_mean")
    ]
    return sum(laood.layer_seconds(n, w) for w in widths), max(
        (laood.layer_memory_mb(n, w) for w in widths), default=0
    )


def _download_bytes(config: dict) -> tuple[int, list[str]]:
    """Bytes of the archives whose size the registry records, and the names of the others."""
    archives = [data.ARCHIVES[a] for a in data.needed_archives(config)]
    return sum(a.size for a in archives if a.size), [a.filename for a in archives if not a.size]


def _disk_bytes(base: Path, n_reh: dict, n_full: dict, seeds: float, train: str) -> int:
    """Results and converted data at full scale; archives are counted in download bytes.

    An array file grows with the images of the dataset it holds: a converted set, a model's
    features or scores of a set (named after it); a detector only where its score keeps training
    rows (`Score.keeps_rows`: with the training set), else it is fixed by the architecture and
    the classes, as checkpoints are; an array of no one set (LA-OOD's decisions) with all images.
    """

    def ratio(names) -> float:
        return sum(n_full[n] for n in names) / max(1, sum(n_reh[n] for n in names))

    total = 0.0
    for f in base.rglob("*"):
        if not f.is_file() or "standins" in f.parts or "raw" in f.parts:
            continue
        in_run = "results" in f.parts
        name = f.stem.removesuffix(CONVS).removesuffix(JIGSAW)  # a set's feature files
        if f.suffix not in (".npz", ".npy"):
            grow = 1.0
        elif name in n_reh:
            grow = ratio([name])
        elif "detectors" in f.parts:
            score = SCORES.get(f.parent.name if f.parent.name in SCORES else name)
            grow = ratio([train]) if score is not None and score.keeps_rows else 1.0
        else:
            grow = ratio(n_reh)
        total += f.stat().st_size * grow * (seeds if in_run else 1.0)
    return int(total)


# the estimate's error where it was measured (docs/rehearsal.md)
MEASURED_ERROR = (
    "Checked against runs at 4 and 16 times the rehearsal's images and epochs (the FeatureNorm "
    "preset on a 2-core CPU, bench/estimate_check.py): the estimate was 0.94 and 0.88 times the "
    "measured job-seconds in total; per stage training 1.06 and 0.94, data 0.96 and 0.99, scores "
    "1.00 and 0.77, feature dumps 0.58 and 0.34 (too low). Against a one-seed run of the "
    "Fashion-MNIST preset it was 1.89 times the measured, scores and metrics 3.2 and 3.7 times. A "
    "full preset's image ratios are far larger; read it as an order of magnitude "
    "(docs/rehearsal.md, 'Measured against a full run', 'Measured at larger budgets')."
)


def render(preset, per_stage: pd.DataFrame, by_arch: pd.DataFrame | None, totals: dict) -> str:
    from .report import to_markdown

    known, unknown = totals["download bytes"]
    downloads = f"{known / 1e9:.2f} GB" + (
        f" plus {', '.join(unknown)} (sizes not recorded)" if unknown else ""
    )
    lines = [
        f"# Cost estimate of {preset} from its rehearsal",
        "",
        f"Measured on {totals['device']}: {totals['rehearsal jobs']} rehearsal jobs, "
        f"{totals['rehearsal job-seconds']:.0f} job-seconds"
        + (f", {totals['wall s']:.0f} s wall" if totals["wall s"] else "")
        + f"; a job's start-up ≈ {totals['start-up s']:.1f} s.",
        "Each job's time above start-up is scaled by its work (trainers: the last logged epoch by "
        "images × epochs, the first epochs' warm-up once, the rest by epochs; conversions: their "
        "logged conversion by images; images for feature dumps, scores and metrics; "
        "n_train × n_test for exact KNN; the Mahalanobis ensemble's fit by its passes); LA-OOD "
        "fits come from the fit-time model n^2.14 · width; seeds and null models multiply "
        "(docs/rehearsal.md).",
        "",
        to_markdown(per_stage, floatfmt=".2f"),
        "",
        f"**Full preset: about {totals['estimate hours']:.1f} job-hours on this device** "
        "(the sum over jobs; wall time is shorter where jobs run side by side); "
        f"downloads {downloads}; disk for data and results about "
        f"{totals['disk bytes'] / 1e9:.2f} GB.",
        "",
        f"**How far to trust it.** {MEASURED_ERROR}",
        "",
    ]
    if by_arch is not None:
        lines += [
            "Training throughput measured in the rehearsal (images/s over the logged epochs):",
            "",
            to_markdown(by_arch, floatfmt=".1f"),
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("prepare", "estimate"):
        sys.exit("usage: python -m oodrepro.rehearsal prepare|estimate PRESET")
    command, preset = argv
    if not Path(preset).is_file():
        sys.exit(f"make rehearse: no config file {preset!r} (the presets are in presets/)")
    if command == "prepare":
        try:
            print(prepare(preset))
        except cfg.ConfigError as err:
            sys.exit(f"make rehearse: {preset}: {err}")
        return 0
    text = render(preset, *estimate(preset))
    save_text(folder(preset) / "cost-estimate.md", text)
    print(text)
    print(
        f"Rehearsal results: {folder(preset) / 'results'}; this estimate: "
        f"{folder(preset) / 'cost-estimate.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
