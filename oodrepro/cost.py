"""A preset's full-scale cost, estimated from what its rehearsal measured (docs/rehearsal.md).

Each rehearsed job's time above start-up grows by its work, full over rehearsal, and its peak
memory by the images it holds. How depends on what the job does: one `Cost` per kind of work
(`COSTS`), looked up through the workflow's table of jobs (`layout.JOBS`).
"""

from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from . import config as cfg
from . import data, derive, laood, layout
from .io import npz_shapes
from .layout import CONVS, JIGSAW, DataFolder, RunFolder
from .scores import SCORES

IMAGE_BYTES = 3072  # a 32×32 RGB uint8 image
STAGE_ORDER = [
    "data",
    "training",
    "features",
    "scores",
    "LA-OOD fits",
    "metrics and report",
    "analysis and plots",
]


def dataset_sizes(data_dir) -> dict[str, int]:
    """Images in each dataset file a run made (read from the array headers)."""
    files = sorted(glob.glob(DataFolder(str(data_dir)).dataset("*")))
    return {Path(npz).stem: npz_shapes(npz)["images"][0] for npz in files}


def full_size(config: dict, name: str, rehearsed: int) -> int:
    """Images of dataset `name` in the full run (`data.expected_size`), or as rehearsed where only
    the files tell."""
    n = data.expected_size(config, name)
    return rehearsed if n is None else n


def job_records(folders) -> pd.DataFrame:
    """One row per job whose benchmark record lies in `folders` (a run's results and data): its
    benchmark folder (`layout.JOBS`), kind, arch, file stem, seconds, peak RSS (MB)."""
    rows = []
    for folder in folders:
        for tsv in sorted(folder.rglob(f"{layout.BENCHMARKS}/**/*.tsv")):
            parts = tsv.relative_to(folder).parts
            at = parts.index(layout.BENCHMARKS)
            arch = parts[at - 2] if at >= 2 and parts[at - 1].startswith("seed") else ""
            record = pd.read_csv(tsv, sep="\t").iloc[-1]
            rule = parts[at + 1].removesuffix(".tsv")
            rows.append(
                {
                    "rule": rule,
                    "kind": kind_of(rule, tsv.stem),
                    "arch": arch,
                    "stem": tsv.stem,
                    "seconds": float(record["s"]),
                    "rss_mb": float(pd.to_numeric(record["max_rss"], errors="coerce") or 0.0),
                }
            )
    return pd.DataFrame(rows)


def kind_of(rule: str, stem: str) -> str:
    """The kind of work of a rehearsed job: its folder's (`layout.JOBS`), LA-OOD's fits apart
    (they are fitted by layer, `LaoodFit`)."""
    kind = layout.JOBS[rule]
    return "LA-OOD fit" if kind == "detector fit" and stem.startswith("laood") else kind


class Sizes:
    """What every job's scaling reads: both configs, each dataset's images in both runs, the
    rehearsal's feature bytes per image and start-up, and the trainers' logs."""

    def __init__(self, full: dict, reh: dict, n_full: dict | None, jobs: pd.DataFrame):
        self.full, self.reh = full, reh
        self.n_reh = dataset_sizes(reh["data"])
        self.n_full = n_full or {k: full_size(full, k, v) for k, v in self.n_reh.items()}
        bench = full["benchmark"]
        self.train, self.evaluated = [bench["id_train"]], [bench["id_test"], *bench["ood"]]
        shapes = {Path(f): npz_shapes(f) for f in glob.glob(runs(reh).features("*", "*"))}
        rows = sum(shape["logits"][0] for shape in shapes.values() if "logits" in shape)
        self.feature_bytes = sum(f.stat().st_size for f in shapes) / max(1, rows)
        self.startup = float(jobs["seconds"].quantile(0.1))
        # a rule's own start-up (per kind: LA-OOD's fits apart from the other fits): its fastest
        # rehearsed job (imports, loading a model), where it ran at least twice; every rehearsed
        # job computes almost nothing, so what they share is overhead
        fastest = jobs.groupby(["rule", "kind"])["seconds"].agg(["min", "count"])
        self.own_startup = {
            key: max(self.startup, row["min"]) if row["count"] > 1 else self.startup
            for key, row in fastest.iterrows()
        }
        self.seeds = len(full["seeds"]) / len(reh["seeds"])
        self._logged: dict[tuple, tuple[float, float] | None] = {}

    def images(self, names, full: bool) -> int:
        return sum((self.n_full if full else self.n_reh)[n] for n in names)

    def ratio(self, names) -> float:
        """Images of `names` full over rehearsed (1 for no set)."""
        return self.images(names, True) / max(1, self.images(names, False)) if names else 1.0

    def run(self, arch: str) -> RunFolder:
        reh = self.reh
        return RunFolder(
            layout.run_folder(reh["results"], reh["benchmark"]["name"], arch, reh["seeds"][0])
        )


@dataclass(frozen=True)
class Cost:
    """A kind of job whose time above start-up grows with the images of the datasets it holds
    (`holds`: the training set, the evaluated sets, the set it is named after, or none), and
    whose memory grows by `IMAGE_BYTES` (or, holding features, the rehearsal's bytes per row)
    per extra image."""

    stage: str
    holds: str = ""  # "train", "evaluated", "stem" or "" (nothing grows)
    features: bool = False

    def held(self, s: Sizes, job) -> list[str]:
        if self.holds == "stem":
            return [job.stem] if job.stem in s.n_reh else []
        return {"train": s.train, "evaluated": s.evaluated}.get(self.holds, [])

    def work(self, s: Sizes, job) -> float:
        """Work full over rehearsal: the held images' ratio."""
        return s.ratio(self.held(s, job))

    def copies(self, s: Sizes) -> float:
        """Jobs of the full run per rehearsed job: one per seed for a run-folder job."""
        return s.seeds

    def seconds(self, s: Sizes, job, startup: float, work: float) -> float:
        return startup + max(0.0, job.seconds - startup) * work

    def per_image(self, s: Sizes, job) -> float:
        """Bytes of memory per extra held image."""
        return s.feature_bytes if self.features else IMAGE_BYTES


@dataclass(frozen=True)
class Conversion(Cost):
    """A dataset conversion: what its log says it spent converting grows with the images, the
    rest (imports) stays. A training set drawn per run (`per_seed`) is converted whole."""

    def work(self, s, job):
        whole = data.get(job.stem)[0].size
        if job.stem in s.train and derive.per_seed_sample(s.full) and whole:
            return whole / max(1, s.n_reh[job.stem])
        return super().work(s, job)

    def seconds(self, s, job, startup, work):
        log = Path(DataFolder(s.reh["data"]).conversion_log(job.stem))
        converting = data.conversion_seconds(log.read_text()) if log.exists() else None
        if converting is None:
            return super().seconds(s, job, startup, work)
        return max(0.0, job.seconds - converting) + converting * work


@dataclass(frozen=True)
class UMLevel(Cost):
    """Unleashing Mask's level: one pass over the training set per random mask drawn."""

    def work(self, s, job):
        draws = s.full["unleashing_mask"]["draws"] / s.reh["unleashing_mask"]["draws"]
        return draws * super().work(s, job)


@dataclass(frozen=True)
class Dump(Cost):
    """A feature dump holds what it reads: the training set (plain or jigsawed), or the
    evaluated sets (with the training set too for LA-OOD's conv features)."""

    def held(self, s, job):
        if job.stem.endswith((".train", JIGSAW)):
            return s.train
        return s.evaluated + s.train * job.stem.endswith(CONVS)


@dataclass(frozen=True)
class Scoring(Cost):
    """Scores of the evaluated sets; exact KNN also searches every training row."""

    def work(self, s, job):
        return super().work(s, job) * (s.ratio(s.train) if job.stem == "knn" else 1.0)


@dataclass(frozen=True)
class DetectorFit(Cost):
    """A fit on the training features; the Mahalanobis ensemble's fit runs the network, its work
    counted in forward passes (`ensemble_fit_passes`), not in the features it holds."""

    def work(self, s, job):
        if job.stem != "mahalanobis_ensemble":
            return super().work(s, job)
        return ensemble_fit_passes(s.full, s.n_full) / ensemble_fit_passes(s.reh, s.n_reh)

    def per_image(self, s, job):
        return IMAGE_BYTES if job.stem == "mahalanobis_ensemble" else s.feature_bytes


@dataclass(frozen=True)
class LaoodFit(Cost):
    """LA-OOD's layer fits: replaced by the fit-time model (`laood_estimate`), one row; they hold
    no set, so their rehearsed memory stands."""

    def seconds(self, s, job, startup, work):
        return 0.0


@dataclass(frozen=True)
class Trainer(Cost):
    """SGD epochs: the last logged epoch's seconds (the steady state; the first epochs' warm-up
    is paid once) grow with images × epochs, the rest of the job (evaluation, saving) with
    epochs; without a log, the whole job above start-up with images × epochs."""

    stage: str = "training"
    holds: str = "train"

    def log(self, run: RunFolder, stem: str) -> str:
        raise NotImplementedError

    def epochs(self, config: dict, arch: str, stem: str) -> int:
        raise NotImplementedError

    def logged(self, s: Sizes, job) -> tuple[float, float] | None:
        """Seconds of the job's logged epochs, all and the last, read once per job."""
        key = (job.rule, job.arch, job.stem)
        if key not in s._logged:
            s._logged[key] = epoch_seconds(Path(self.log(s.run(job.arch), job.stem)))
        return s._logged[key]

    def seconds(self, s, job, startup, images):
        epochs_r, epochs_f = (self.epochs(c, job.arch, job.stem) for c in (s.reh, s.full))
        epochs = epochs_f / epochs_r
        logged = self.logged(s, job)
        if not logged:
            return startup + max(0.0, job.seconds - startup) * images * epochs
        total, last = logged
        warm_up = max(0.0, total - last * epochs_r)
        other = max(0.0, job.seconds - startup - total)
        return startup + other * epochs + warm_up + last * epochs_f * images


class BackboneTraining(Trainer):
    def log(self, run, stem):
        return run.train_log()

    def epochs(self, config, arch, stem):
        return derive.recipe_of(config, arch)["epochs"]


class NullModelTraining(BackboneTraining):
    """WatermarkNN's clean null models: the backbone's recipe, as many as the config asks."""

    def log(self, run, stem):
        return run.trainer_log(stem)

    def copies(self, s):
        return s.seeds * s.full["watermarknn"]["null_models"] / s.reh["watermarknn"]["null_models"]


class OwnerEmbedding(Trainer):
    def log(self, run, stem):
        return run.trainer_log(stem)

    def epochs(self, config, arch, stem):
        return derive.owner_recipe(config, arch, stem)["epochs"]


class Attack(Trainer):
    def log(self, run, stem):
        return run.attack_log(*stem.split(".", 1))

    def epochs(self, config, arch, stem):
        return config["watermarknn"]["attacks"]["epochs"]


class FineTune(Trainer):
    def log(self, run, stem):
        return run.finetune_log(stem)

    def epochs(self, config, arch, stem):
        return derive.finetune_recipe(config, arch, stem)["epochs"]


class WatermarkLearning(Trainer):
    def log(self, run, stem):
        return run.watermark_log(stem)

    def epochs(self, config, arch, stem):
        return config["watermarks"][stem.rpartition("+")[2]]["epochs"]


# How each kind of job grows (the kinds of `layout.JOBS`); data jobs are not per seed.
COSTS: dict[str, Cost] = {
    "download": Cost("data"),
    "conversion": Conversion("data", holds="stem"),
    "generation": Cost("data", holds="stem"),
    "training sample": Cost("data", holds="train"),
    "import": Cost("training"),
    "backbone training": BackboneTraining(),
    "null model training": NullModelTraining(),
    "owner embedding": OwnerEmbedding(),
    "attack": Attack(),
    "fine-tune": FineTune(),
    "watermark learning": WatermarkLearning(),
    "UM level": UMLevel("training", holds="train"),
    "feature dump": Dump("features"),
    "detector fit": DetectorFit("scores", holds="train"),
    "LA-OOD fit": LaoodFit("LA-OOD fits"),
    "scoring": Scoring("scores", holds="evaluated", features=True),
    "search": Cost("scores"),
    "metrics": Cost("metrics and report", holds="evaluated", features=True),
    "analysis": Cost("analysis and plots"),
}


def runs(config: dict) -> RunFolder:
    """Every run folder of a config's results, as a glob pattern."""
    return RunFolder(layout.run_folder(config["results"], "*", "*", "*"))


def epoch_seconds(log: Path) -> tuple[float, float] | None:
    """Seconds of a trainer's logged epochs (its start-up, evaluation and saving excluded): all
    of them, and the last one's, the steady state after the first epoch's warm-up."""
    if not log.exists():
        return None
    history = pd.read_csv(log)
    if "seconds" not in history or not len(history) or not history["seconds"].sum() > 0:
        return None
    return float(history["seconds"].sum()), float(history["seconds"].iloc[-1])


def ensemble_fit_passes(config: dict, n: dict[str, int]) -> float:
    """Forward-pass equivalents of the Mahalanobis ensemble's fit (a backward counts as two):
    class statistics, one pass per training image; FGSM copies of the 2·n_fit tuning images, a
    forward and a backward each; then layer scores of both at every magnitude, per image one
    pass, a backward per layer and a pass per layer and non-zero magnitude."""
    e = config["scores"]["mahalanobis_ensemble"]
    layers, moved = len(e["layers"]), sum(m != 0 for m in e["magnitudes"])
    tuning = 2 * e["n_fit"]
    return n[config["benchmark"]["id_train"]] + 3 * tuning + 2 * tuning * (1 + layers * (2 + moved))


def job_row(s: Sizes, job) -> dict:
    """One rehearsed job's row of the cost table at full scale."""
    cost = COSTS[job.kind]
    held = cost.held(s, job)
    copies = cost.copies(s) if job.arch else 1.0
    seconds = cost.seconds(s, job, s.own_startup[job.rule, job.kind], cost.work(s, job))
    extra = s.images(held, True) - s.images(held, False)
    grown = job.rss_mb + extra * cost.per_image(s, job) / 2**20
    return {
        "stage": cost.stage,
        "jobs": copies,
        "rehearsal s": job.seconds,
        "estimate s": seconds * copies,
        "peak MB (rehearsal)": job.rss_mb,
        "peak MB (estimate)": grown,
    }


def throughput(s: Sizes, job) -> dict | None:
    """Training images per second of a trainer's logged epochs in the rehearsal."""
    cost = COSTS[job.kind]
    logged = cost.logged(s, job) if isinstance(cost, Trainer) else None
    if not logged:
        return None
    return {  # the steady state: the last epoch
        "rule": job.rule,
        "arch": job.arch,
        "images/s": s.images(s.train, False) / logged[1],
    }


def estimate(
    preset, rehearsed, *, target=None, target_sizes: dict[str, int] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame | None, dict]:
    """The full preset's cost from what its rehearsal (config file `rehearsed`) measured, per
    stage; plus training throughput per architecture and the totals (docs/rehearsal.md states
    the model).

    Each job's time above start-up (what a job costs that computes almost nothing: its rule's
    fastest rehearsed job, or the 10th percentile of all jobs for a rule run once) is scaled by
    its work, full over rehearsal, as its kind's `Cost` says: for trainers, the last logged
    epoch's seconds (the steady state; the first epochs' warm-up is paid once) by images ×
    epochs and the rest (evaluation, saving) by epochs; for conversions, the seconds their log
    says they converted, by images (their imports stay); images for dumps, scores and metrics;
    n_train × n_test for exact KNN's search (its `score` job; its fit only stores the training
    features); the ensemble's fit by its forward passes (`ensemble_fit_passes`: training images,
    n_fit, layers, magnitudes). LA-OOD's layer fits come from `laood.layer_seconds`
    (n^2.14 · width). Peak memory grows by the images a job holds (3,072 bytes each as uint8
    arrays, the feature bytes per image the rehearsal wrote for feature jobs).

    `target` (a config) is predicted instead of the preset, with `target_sizes` (dataset →
    images) where the registry does not know its sizes: how `bench/estimate_check.py` predicts
    a run at larger budgets from the rehearsal, to compare with that run.
    """
    full = cfg.load(target or preset, cache_dir=".snakemake/oodrepro")
    reh = cfg.load(rehearsed, cache_dir=".snakemake/oodrepro")
    jobs = benchmark_records(reh)
    if jobs.empty:
        raise FileNotFoundError(
            f"no benchmark records for {rehearsed}: run `make rehearse CONFIG={preset}` first"
        )
    sizes = Sizes(full, reh, target_sizes, jobs)
    table = pd.DataFrame([job_row(sizes, job) for job in jobs.itertuples()])
    if (table["stage"] == COSTS["LA-OOD fit"].stage).any():
        seconds, memory = laood_estimate(full, reh, sizes.images(sizes.train, True))
        laood_row = {
            "stage": COSTS["LA-OOD fit"].stage,
            "jobs": 0,
            "rehearsal s": 0.0,
            "estimate s": seconds * sizes.seeds,
            "peak MB (rehearsal)": 0.0,
            "peak MB (estimate)": memory,
        }
        table = pd.concat([table, pd.DataFrame([laood_row])])
    per_stage = _per_stage(table)
    trained = [t for t in (throughput(sizes, job) for job in jobs.itertuples()) if t]
    totals = {
        "rehearsal jobs": len(jobs),
        "rehearsal job-seconds": float(jobs["seconds"].sum()),
        "start-up s": sizes.startup,
        "estimate hours": float(per_stage["estimate hours"].sum()),
        "download bytes": _download_bytes(full),
        "disk bytes": disk_bytes(
            reh["results"],
            reh["data"],
            sizes.n_reh,
            sizes.n_full,
            sizes.seeds,
            full["benchmark"]["id_train"],
        ),
        **dict(zip(("device", "wall s"), _manifest(reh), strict=True)),
    }
    by_arch = (
        pd.DataFrame(trained).groupby(["arch", "rule"]).median().reset_index() if trained else None
    )
    return per_stage, by_arch, totals


def benchmark_records(config: dict) -> pd.DataFrame:
    """Every job's benchmark record of a run's results and data folders (`job_records`)."""
    return job_records([Path(config["results"]), Path(config["data"])])


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


def laood_estimate(full: dict, reh: dict, n_train: int) -> tuple[float, float]:
    """Core-seconds of every LA-OOD layer fit at full scale and the largest fit's memory (MB),
    from the cost model in `laood` and each layer's width as the rehearsal fitted it."""
    n = min(full["scores"]["laood"].get("max_fit") or n_train, n_train)
    widths = [
        shape[0]
        for detector in glob.glob(runs(reh).detector("*", "laood"))
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


def disk_bytes(results, data_dir, n_reh: dict, n_full: dict, seeds: float, train: str) -> int:
    """Results (per seed) and converted data at full scale; archives are counted in download
    bytes.

    An array file grows with the images of the dataset it holds: a converted set, a model's
    features or scores of a set (named after it); a detector only where its score keeps training
    rows (`Score.keeps_rows`: with the training set), else it is fixed by the architecture and
    the classes, as checkpoints are; an array of no one set (LA-OOD's decisions) with all images.
    """

    def ratio(names) -> float:
        return sum(n_full[n] for n in names) / max(1, sum(n_reh[n] for n in names))

    folders = RunFolder(layout.run_folder(results, "*", "*", "*"))
    detectors = {Path(f): Path(f).stem for f in glob.glob(folders.detector("*", "*"))}
    detectors |= {Path(f): "laood" for f in glob.glob(folders.detector_part("*", "*"))}
    archives = Path(DataFolder(str(data_dir)).archives)
    total = 0.0
    for top, copies in ((Path(results), seeds), (Path(data_dir), 1.0)):
        for f in top.rglob("*"):
            if not f.is_file() or archives in f.parents:
                continue
            name = f.stem.removesuffix(CONVS).removesuffix(JIGSAW)  # a set's feature files
            if f.suffix not in (".npz", ".npy"):
                grow = 1.0
            elif name in n_reh:
                grow = ratio([name])
            elif f in detectors:
                score = SCORES.get(detectors[f])
                grow = ratio([train]) if score is not None and score.keeps_rows else 1.0
            else:
                grow = ratio(n_reh)
            total += f.stat().st_size * grow * copies
    return int(total)


def _manifest(config: dict) -> tuple[str, float | None]:
    """What the rehearsal ran on (the GPU where it used one, else the CPU) and its DAG's wall
    seconds (the last Snakemake invocation's, from its manifest)."""
    found = json.loads(Path(layout.manifest(config["results"])).read_text())
    device = found["device"]
    on_gpu = device["gpus"] and config["device"] != "cpu"
    name = f"GPU {device['gpus'][0]}" if on_gpu else f"CPU {device['cpu']}"
    if not found.get("started"):
        return name, None
    return name, (
        datetime.fromisoformat(found["finished"]) - datetime.fromisoformat(found["started"])
    ).total_seconds()


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
