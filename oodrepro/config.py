"""Configuration: schema validation with defaults, then checks the schema cannot express.

Runs before any job starts, from the Snakefile or from Python; every error names the
offending key so a typo never becomes a silent default.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import jsonschema
import yaml

from . import data, runtime, scores

SCHEMA_PATH = Path(__file__).parent / "schema" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


def _with_defaults(validator_class):
    """A validator that also fills in `default` values, as Snakemake's `validate` does."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _where(err: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "(top level)"


def validate(config: dict) -> dict:
    """Validate `config` in place (filling defaults) and return it; raise ConfigError naming the key."""
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            msg = e.message
            if e.validator == "additionalProperties":
                msg = f"unknown key: {msg}"
            lines.append(f"  {_where(e)}: {msg}")
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    _check_semantics(config)
    return config


def _check_semantics(config: dict) -> None:
    problems = []
    bench = config["benchmark"]
    named = [("benchmark.id_train", bench["id_train"]), ("benchmark.id_test", bench["id_test"])]
    named += [(f"benchmark.ood[{i}]", d) for i, d in enumerate(bench["ood"])]
    if "outliers" in bench:
        named.append(("benchmark.outliers", bench["outliers"]))
    named += [(f"dataset_options.{d}", d) for d in config.get("dataset_options", {})]
    for key, name in named:
        try:
            data.get(name)
        except KeyError as err:
            problems.append(f"{key}: {err.args[0]}")
    for key in config.get("downloads", {}):
        if key not in data.ARCHIVES:
            problems.append(f"downloads.{key}: unknown archive; known: {', '.join(data.ARCHIVES)}")
    for name in config["scores"]:
        if name not in scores.SCORES:
            problems.append(f"scores.{name}: unknown score; known: {', '.join(sorted(scores.SCORES))}")
    keep_names = set(config["training"].get("keep", {}))
    for name, bb in config["backbones"].items():
        if "pretrained" in bb and bb["pretrained"]["archive"] not in data.ARCHIVES:
            problems.append(f"backbones.{name}.pretrained.archive: unknown archive {bb['pretrained']['archive']!r}")
        recipe = recipe_of(config, name)
        if set(recipe.get("keep", {})) != keep_names:
            problems.append(f"backbones.{name}.training.keep: must name the same checkpoints as training.keep")
        for m in recipe.get("schedule", {}).get("milestones", []):
            if m > recipe["epochs"]:
                problems.append(f"backbones.{name}: milestone {m} is beyond epoch {recipe['epochs']}")
        if recipe.get("schedule", {}).get("kind") == "step" and "milestones" not in recipe["schedule"]:
            problems.append(f"backbones.{name}: a step schedule needs milestones")
    for name, wm in config["watermarks"].items():
        if wm["objective"] == "energy" and not {"t_in", "t_out"} <= set(wm):
            problems.append(f"watermarks.{name}: the energy objective needs t_in and t_out")
        if wm["objective"] == "msp" and {"t_in", "t_out"} & set(wm):
            problems.append(f"watermarks.{name}: t_in / t_out belong to the energy objective only")
    known = model_names(config)
    for i, variant in enumerate(config["variants"]):
        model, _, watermark = variant.rpartition("+")
        if variant not in known and not (model in known and watermark in config["watermarks"]):
            problems.append(f"variants[{i}]: {variant!r} is neither a model ({', '.join(known)}) nor "
                            "'<model>+<watermark>'")
    for name, ft in config["finetunes"].items():
        if name in ("base",) or name.startswith(("null", "base.")) or name in config.get("watermarknn", {}).get(
                "owners", {}):
            problems.append(f"finetunes.{name}: reserved or already used name")
        if name.rpartition("+")[2] in config["watermarks"]:
            problems.append(f"finetunes.{name}: must not end in '+<watermark>'")
        if ft["from"] != "base" and ft["from"].removeprefix("base.") not in keep_names:
            problems.append(f"finetunes.{name}.from: {ft['from']!r} is not base or base.<keep name>")
        if "exposure" in ft and "outliers" not in bench:
            problems.append(f"finetunes.{name}.exposure: needs benchmark.outliers")
        if "exposure" in ft and "mask" in ft:
            problems.append(f"finetunes.{name}: UMAP inside outlier exposure is not part of the method")
    for group, members in bench.get("groups", {}).items():
        if group in bench["ood"] or group in ("mean", "-"):
            problems.append(f"benchmark.groups.{group}: a group name must not be an OOD set or 'mean'")
        for m in members:
            if m not in bench["ood"]:
                problems.append(f"benchmark.groups.{group}: {m!r} is not in benchmark.ood")
    for variant, names in config.get("variant_scores", {}).items():
        if variant not in config["variants"]:
            problems.append(f"variant_scores.{variant}: not one of the variants")
        for name in names:
            if name not in config["scores"]:
                problems.append(f"variant_scores.{variant}: {name!r} is not configured under scores")
    wnn = config.get("watermarknn")
    if wnn:
        try:
            spec, _ = data.get(wnn["triggers"])
            classes = config["offline"]["trigger_classes"] if spec.offline is not None else spec.num_classes
            if classes > data.get(bench["id_train"])[0].num_classes:
                problems.append("watermarknn.triggers: trigger labels exceed the ID classes")
        except KeyError as err:
            problems.append(f"watermarknn.triggers: {err.args[0]}")
        for name, owner in wnn["owners"].items():
            source = owner["from"]
            if name in ("base", "scratch") or name.startswith("null"):
                problems.append(f"watermarknn.owners.{name}: reserved name")
            if source != "scratch" and source != "base" and source.removeprefix("base.") not in keep_names:
                problems.append(f"watermarknn.owners.{name}.from: {source!r} is not scratch, base or base.<keep name>")
        if wnn["ownership"]["rule"] == "fixed" and "min_accuracy" not in wnn["ownership"]:
            problems.append("watermarknn.ownership: the fixed rule needs min_accuracy")
        if wnn["ownership"]["rule"] == "null-models" and "alpha" not in wnn["ownership"]:
            problems.append("watermarknn.ownership: the null-models rule needs alpha")
    if bench["id_test"] in bench["ood"]:
        problems.append("benchmark.ood: must not contain the ID test set")
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


def scores_of(config: dict, variant: str) -> list[str]:
    """The scores computed on one model variant: `variant_scores` narrows `scores` per variant."""
    return list(config.get("variant_scores", {}).get(variant, config["scores"]))


def recipe_of(config: dict, backbone: str) -> dict:
    """The training recipe of one backbone: `training` updated by the backbone's own overrides."""
    recipe = copy.deepcopy(config["training"])
    recipe.update(copy.deepcopy(config["backbones"][backbone].get("training", {})))
    return recipe


def model_names(config: dict) -> list[str]:
    """Every checkpoint the DAG can make in a run folder: the base model and its kept epochs,
    WatermarkNN owners and their attacked copies, fine-tuned models."""
    names = ["base", *(f"base.{k}" for k in config["training"].get("keep", {}))]
    wnn = config.get("watermarknn")
    if wnn:
        owners = list(wnn["owners"])
        names += owners + [f"{o}.{a}" for o in owners for a in wnn["attacks"]["kinds"]]
    return names + list(config.get("finetunes", {}))


def derived_recipe(config: dict, backbone: str, overrides: dict) -> dict:
    """The recipe of a model trained from or beside the backbone (a fine-tune, a watermark
    owner): the backbone's recipe without its checkpoint options, updated by `overrides`."""
    recipe = recipe_of(config, backbone)
    recipe.pop("keep", None)
    recipe.pop("checkpoint", None)
    recipe.update(copy.deepcopy(overrides))
    return recipe


def finetune_recipe(config: dict, backbone: str, name: str) -> dict:
    return derived_recipe(config, backbone, config["finetunes"][name].get("training", {}))


def owner_recipe(config: dict, backbone: str, owner: str) -> dict:
    """A WatermarkNN owner's embedding recipe (see `derived_recipe`)."""
    return derived_recipe(config, backbone, config["watermarknn"]["owners"][owner].get("training", {}))


def attack_recipe(config: dict, backbone: str) -> dict:
    """WatermarkNN's fine-tuning attacks: the backbone's augmentation, constant lr, no triggers."""
    attacks = config["watermarknn"]["attacks"]
    recipe = recipe_of(config, backbone)
    return {**{k: recipe[k] for k in ("momentum", "weight_decay", "augment") if k in recipe},
            "epochs": attacks["epochs"], "lr": attacks["lr"], "batch_size": attacks["batch_size"],
            "schedule": {"kind": "constant"}}


def model_spec(config: dict, backbone: str) -> dict:
    """Constructor arguments of a backbone: its arch and options, plus the ID class count."""
    spec = {k: v for k, v in config["backbones"][backbone].items() if k not in ("training", "pretrained")}
    spec["num_classes"] = data.get(config["benchmark"]["id_train"])[0].num_classes
    return spec


def kept_epochs(recipe: dict) -> dict[str, int]:
    """Named checkpoints' epochs: a fraction of the run, rounded, at least epoch 1."""
    return {name: max(1, round(frac * recipe["epochs"])) for name, frac in recipe.get("keep", {}).items()}


def gpus_per_job(config: dict) -> int:
    """GPUs a network job asks the scheduler for: 1 when the run's device is CUDA.

    `device: auto` means CUDA when this machine has one (nvidia-smi lists a GPU and
    CUDA_VISIBLE_DEVICES does not hide them all); a cluster whose submit node has no GPU
    needs `device: cuda` so that jobs request one.
    """
    device = config["device"]
    if device == "auto":
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1")
        return int(not hidden and bool(runtime.nvidia_gpus()))
    return int(device.startswith("cuda"))


def load(path) -> dict:
    return validate(yaml.safe_load(Path(path).read_text()))
