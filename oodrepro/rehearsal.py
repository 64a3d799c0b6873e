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
- LA-OOD `max_fit`: at most MAX_FIT (null = all becomes MAX_FIT); a split fit's
  `layers_per_job`: at least LAYERS_PER_JOB (the split shapes the schedule, not the result:
  DenseNet-100's 100 layers still fit in 4 pieces, not 100 jobs that only start up); the Mahalanobis
  ensemble's `n_fit`: at most N_FIT; Unleashing Mask's mask `draws`: at most DRAWS;
  `metrics.subsample`: n at most SUBSAMPLE_N, draws at most DRAWS.

    python -m oodrepro.rehearsal prepare presets/<paper>.yaml   # prints the rehearsal config
    python -m oodrepro.rehearsal estimate presets/<paper>.yaml  # after the run: the cost table
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import yaml

from . import config as cfg
from . import cost, data, derive
from .data import standins
from .data.download import file_digest
from .io import save_text

ROOT = "rehearsal"
EPOCHS, WARMUP, BATCH = 2, 1, 32
STANDIN_IMAGES, SAMPLE, OFFLINE_N = 32, 16, 32
MAX_FIT, N_FIT, DRAWS, NULL_MODELS, SUBSAMPLE_N = 32, 8, 2, 2, 16
LAYERS_PER_JOB = 32
BANNER = (
    "REHEARSAL of {of} on stand-in data with shrunk budgets (docs/rehearsal.md): "
    "these numbers test the pipeline; they are not a reproduction."
)


def _scale(value: int, factor: float, top: int, bottom: int = 1) -> int:
    return min(top, max(bottom, round(value * factor)))


def _shrink_recipe(section: dict, factor_if_no_epochs: float, epochs: int = EPOCHS) -> float:
    """Cap `epochs` in one config section (a recipe or its overrides, a watermark) and scale its
    epoch-valued keys; returns the factor."""
    factor = factor_if_no_epochs
    if "epochs" in section:
        new = min(section["epochs"], epochs)
        factor, section["epochs"] = new / section["epochs"], new
    top = section.get("epochs", epochs)
    schedule = section.get("schedule", {})
    if "milestones" in schedule:
        schedule["milestones"] = sorted({_scale(m, factor, top) for m in schedule["milestones"]})
    if "decay_epoch" in section:
        section["decay_epoch"] = _scale(section["decay_epoch"], factor, top - 1, 0)
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
    return 2 * max(derive.poem_selections(config).values(), default=0)


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
        if scores["laood"].get("layers_per_job"):
            scores["laood"]["layers_per_job"] = max(
                scores["laood"]["layers_per_job"], LAYERS_PER_JOB
            )
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
    text = cost.render(preset, *cost.estimate(preset, folder(preset) / "config.yaml"))
    save_text(folder(preset) / "cost-estimate.md", text)
    print(text)
    print(
        f"Rehearsal results: {folder(preset) / 'results'}; this estimate: "
        f"{folder(preset) / 'cost-estimate.md'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
