"""Configuration: schema validation with defaults, then checks the schema cannot express.

Runs before any job starts, from the Snakefile or from Python; every error names the
offending key so a typo never becomes a silent default.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import jsonschema
import yaml

from . import claims, data, derive, scores

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


class _StrictLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (plain YAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` is meant to be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                mark = key_node.start_mark
                raise ConfigError(
                    f"{mark.name}:{mark.line + 1}: key {key!r} is given twice in one mapping "
                    f"(first on line {seen[key] + 1}); YAML would silently keep only the last"
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def read_yaml(path) -> dict:
    """A config file, parsed strictly: a syntax error or duplicated key names file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.load(path.read_text(), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise ConfigError(
            f"{path}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: {err.problem}"
        ) from None
    except ConfigError as err:
        raise ConfigError(str(err).replace("<unicode string>", str(path), 1)) from None
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys at the top level")
    return loaded


def check_config_files(workflow_file, cli_files, replace: bool) -> None:
    """Parse every config file strictly, and refuse a complete config (a preset) that Snakemake
    would merge key by key into `workflow_file` because --replace-workflow-config is missing."""
    present = Path(workflow_file).exists()  # Snakemake merges only a workflow config that exists
    if present:
        read_yaml(workflow_file)
    parsed = {path: read_yaml(path) for path in cli_files}
    if replace or not present:
        return
    for path, loaded in parsed.items():
        same = Path(path).resolve() == Path(workflow_file).resolve()
        if not same and set(schema()["required"]) <= set(loaded):
            path = os.path.relpath(path)
            raise ConfigError(
                f"{path} is a complete config, but without --replace-workflow-config Snakemake "
                "merges it into "
                f"{workflow_file} (their keys mixed). Add --replace-workflow-config, or run: make "
                f"run CONFIG={path}"
            )


def schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _where(err: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in err.absolute_path) or "(top level)"


# keys renamed since a release, old → new, under each training recipe: configs written for the
# old name keep working, with a warning saying the new one
RENAMED_RECIPE_KEYS = {"keep": "snapshots"}


def _rename_old_keys(config: dict) -> None:
    recipes = [("training", config.get("training"))] + [
        (f"backbones.{name}.training", b.get("training"))
        for name, b in (config.get("backbones") or {}).items()
        if isinstance(b, dict)
    ]
    for where, recipe in recipes:
        for old, new in RENAMED_RECIPE_KEYS.items():
            if isinstance(recipe, dict) and old in recipe:
                if new in recipe:
                    raise ConfigError(
                        f"{where}: both {old!r} and its new name {new!r}; give only {new!r}"
                    )
                recipe[new] = recipe.pop(old)
                warnings.warn(
                    f"{where}.{old} is now {where}.{new}; the old name still works",
                    FutureWarning,
                    stacklevel=3,
                )


def validate(config: dict, cache_dir=None) -> dict:
    """Validate `config` in place (filling defaults) and return it; raise ConfigError naming the
    key.

    `cache_dir` keeps the backbones' layer names between runs (see `architecture_names`)."""
    _rename_old_keys(config)
    if type(config.get("seeds")) is int and config["seeds"] > 0:  # `--config seeds=N`
        config["seeds"] = list(range(config["seeds"]))
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    lines = []
    for e in errors:
        msg = e.message
        if e.validator == "additionalProperties":
            msg = f"unknown key: {msg}"
        lines.append(f"  {_where(e)}: {msg}")
    lines += [f"  {key}: {value} is not a finite number" for key, value in _non_finite(config)]
    if lines:
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    _check_semantics(config, cache_dir)
    return config


def _non_finite(node, key: str = "") -> list[tuple[str, float]]:
    """Every NaN or infinity in the config (the schema's bounds let NaN through)."""
    if isinstance(node, float) and not math.isfinite(node):
        return [(key or "(top level)", node)]
    if isinstance(node, dict):
        return [
            hit for k, v in node.items() for hit in _non_finite(v, f"{key}.{k}" if key else str(k))
        ]
    if isinstance(node, list):
        return [hit for i, v in enumerate(node) for hit in _non_finite(v, f"{key}[{i}]")]
    return []


def _recipe_problems(key: str, recipe: dict, first_epoch: int = 0) -> list[str]:
    """A step schedule needs milestones, each reached within the run (schedule epochs start at
    `first_epoch` for a continuation); `recipe` is complete (`derive.recipe_of`)."""
    schedule = recipe["schedule"]
    if schedule["kind"] == "step" and not schedule["milestones"]:
        return [f"{key}.schedule: a step schedule needs milestones"]
    last = first_epoch + recipe["epochs"]
    return [
        f"{key}.schedule.milestones: milestone {m} is beyond epoch {last}, the run's last"
        for m in schedule["milestones"]
        if m > last
    ]


def architecture_names(spec: dict, cache_dir=None) -> dict[str, list[str]]:
    """The block names, module names, penultimate size and LA-OOD layers of the backbone `spec`
    builds.

    Building it (on torch's meta device, no weights) needs torch, whose import alone costs a
    no-op rerun over a second; so the names are cached in `cache_dir`, keyed by the spec and
    the models' source code, and torch is imported only when that key is new.
    """
    sources = sorted((Path(__file__).parent / "models").glob("*.py"))
    key = hashlib.sha256(
        json.dumps(spec, sort_keys=True).encode()
        + b"blocks,modules,penultimate,laood_layers"
        + b"".join(p.read_bytes() for p in sources)
    ).hexdigest()[:20]
    cached = Path(cache_dir) / f"architecture-{key}.json" if cache_dir else None
    if cached is not None and cached.is_file():
        return json.loads(cached.read_text())
    import torch

    from . import features, models

    with torch.device("meta"):
        arch_spec = dict(spec)
        model = models.build(arch_spec.pop("arch"), **arch_spec)
    names = {
        "blocks": list(model.block_names),
        "modules": [n for n, _ in model.named_modules() if n],
        "penultimate": model.fc.in_features,
        "laood_layers": [n for n, _ in features.conv_layers(model)]
        + ["logits"] * model.laood_logits,
    }
    if cached is not None:
        from .io import save_json

        save_json(cached, names)
    return names


def _layer_problems(config: dict, backbone: str, cache_dir=None) -> list[str]:
    """Layers and blocks named by scores must exist in the backbone (else a job fails hours in)."""
    chosen = config["scores"]
    if not {"mahalanobis", "mahalanobis_ensemble", "featurenorm", "vim"} & set(chosen):
        return []
    names = architecture_names(derive.model_spec(config, backbone), cache_dir)
    blocks, arch = names["blocks"], config["backbones"][backbone]["arch"]
    problems = []
    features = ["logits", "penultimate", *(f"block_{j}" for j in range(len(blocks)))]
    layer = chosen.get("mahalanobis", {}).get("layer", "penultimate")
    if "mahalanobis" in chosen and layer not in features:
        problems.append(
            f"scores.mahalanobis.layer: {arch} has no feature {layer!r}; known: "
            f"{', '.join(features)}"
        )
    modules = set(names["modules"])
    for i, name in enumerate(chosen.get("mahalanobis_ensemble", {}).get("layers", [])):
        if name != "penultimate" and name not in modules:
            top = sorted(
                {m for m in modules if m.count(".") <= 1},
                key=lambda m: (m.split(".")[0], len(m), m),
            )
            problems.append(
                f"scores.mahalanobis_ensemble.layers[{i}]: {arch} has no module {name!r}; "
                f"e.g. {', '.join(top[:12])}, … or penultimate"
            )
    if "vim" in chosen and not 0 < chosen["vim"].get("dim", 256) < names["penultimate"]:
        problems.append(
            f"scores.vim.dim: must lie below {arch}'s penultimate size {names['penultimate']} "
            f"(ViM keeps the rest as the residual space)"
        )
    block = chosen.get("featurenorm", {}).get("block", "auto")
    if (
        "featurenorm" in chosen
        and block != "auto"
        and not (block in blocks or (isinstance(block, int) and 0 <= block < len(blocks)))
    ):
        problems.append(
            f"scores.featurenorm.block: {arch} has no block {block!r}; blocks: {', '.join(blocks)} "
            f"(or an index 0..{len(blocks) - 1}, or auto)"
        )
    return problems


def _poem_pool_problems(config: dict) -> list[str]:
    """A pool no larger than POEM's selection is selected whole: POEM would train as Energy-OE."""
    bench = config["benchmark"]
    try:
        pool = data.expected_size(config, bench["outliers"])
    except KeyError:  # an unknown dataset, reported on its own
        return []
    return [
        f"finetunes.{name}.exposure: POEM would select {selected} outliers (ood_factor "
        f"{config['finetunes'][name]['exposure']['ood_factor']} × the ID training images) from a "
        f"pool of {pool} ({bench['outliers']}): the whole pool, so its boundary selection would "
        "do nothing and it would train as Energy-OE. Lower exposure.ood_factor or give the "
        "pool more images (the paper selects 50,000 of 400,000)"
        for name, selected in derive.poem_selections(config).items()
        if pool is not None and selected >= pool
    ]


def _name_problems(config: dict) -> list[str]:
    """Datasets, archives and scores the registries do not know."""
    problems = []
    bench = config["benchmark"]
    named = [("benchmark.id_train", bench["id_train"]), ("benchmark.id_test", bench["id_test"])]
    named += [(f"benchmark.ood[{i}]", d) for i, d in enumerate(bench["ood"])]
    if "outliers" in bench:
        named.append(("benchmark.outliers", bench["outliers"]))
    for name, options in config.get("dataset_options", {}).items():
        named.append((f"dataset_options.{name}", name))
        if options.get("per_seed") and (name != bench["id_train"] or "sample" not in options):
            problems.append(
                f"dataset_options.{name}.per_seed: only the ID training set "
                f"({bench['id_train']!r}) is drawn per run, and it needs `sample`"
            )
    for key, name in named:
        try:
            data.get(name)
        except KeyError as err:
            problems.append(f"{key}: {err.args[0]}")
    for key in config.get("downloads", {}):
        if key not in data.ARCHIVES:
            problems.append(f"downloads.{key}: unknown archive; known: {', '.join(data.ARCHIVES)}")
    for name, hp in config["scores"].items():
        if name not in scores.SCORES:
            problems.append(
                f"scores.{name}: unknown score; known: {', '.join(sorted(scores.SCORES))}"
            )
            continue
        known = scores.get(name).hyperparameters()
        problems += [
            f"scores.{name}.{key}: not a hyper-parameter of {name} "
            f"({', '.join(sorted(known)) or 'it has none'})"
            for key in sorted(set(hp or {}) - (set(hp or {}) if known is None else known))
        ]
    return problems


def _benchmark_problems(config: dict) -> list[str]:
    """ID, OOD and outlier sets that overlap; groups and per-variant scores that name nothing."""
    problems = []
    bench = config["benchmark"]
    for group, members in bench.get("groups", {}).items():
        if group in bench["ood"] or group in ("mean", "-"):
            problems.append(
                f"benchmark.groups.{group}: a group name must not be an OOD set or 'mean'"
            )
        for m in members:
            if m not in bench["ood"]:
                problems.append(f"benchmark.groups.{group}: {m!r} is not in benchmark.ood")
    for variant, names in config.get("variant_scores", {}).items():
        if variant not in config["variants"]:
            problems.append(f"variant_scores.{variant}: not one of the variants")
        for name in names:
            if name not in config["scores"]:
                problems.append(
                    f"variant_scores.{variant}: {name!r} is not configured under scores"
                )
    for role in ("id_test", "id_train"):
        if bench[role] in bench["ood"]:
            problems.append(
                f"benchmark.ood: must not contain the ID set benchmark.{role} ({bench[role]!r})"
            )
    if bench.get("outliers") in (bench["id_train"], bench["id_test"], *bench["ood"]):
        problems.append(
            f"benchmark.outliers: {bench['outliers']!r} is an ID or OOD set; outlier exposure must "
            "train on other data"
        )
    return problems


def _backbone_problems(config: dict, cache_dir) -> list[str]:
    """Per backbone: its imported archive, its snapshots, every recipe it trains under and the
    layers the scores name."""
    problems = []
    snapshot_names = set(derive.snapshot_names(config))
    for name, bb in config["backbones"].items():
        pretrained = bb.get("pretrained", {})
        archives = {"archive": pretrained.get("archive")}
        archives |= {f"snapshots.{k}": a for k, a in pretrained.get("snapshots", {}).items()}
        problems += [
            f"backbones.{name}.pretrained.{key}: unknown archive {a!r}"
            for key, a in archives.items()
            if a and a not in data.ARCHIVES
        ]
        if pretrained and set(pretrained.get("snapshots", {})) != snapshot_names:
            problems.append(
                f"backbones.{name}.pretrained.snapshots: a released backbone needs one archive per "
                f"checkpoint training.snapshots names ({sorted(snapshot_names) or 'none'}), found "
                f"{sorted(pretrained.get('snapshots', {})) or 'none'}"
            )
        if pretrained.get("format") == "openood":
            problems += _openood_backbone_problems(config, name)
        recipe = derive.recipe_of(config, name)
        if set(recipe["snapshots"]) != snapshot_names:
            problems.append(
                f"backbones.{name}.training.snapshots: must name the same checkpoints as "
                "training.snapshots"
            )
        where = f"backbones.{name}.training" if "training" in bb else "training"
        problems += _recipe_problems(where, recipe)
        for ft in config["finetunes"]:
            problems += _recipe_problems(
                f"finetunes.{ft}.training", derive.finetune_recipe(config, name, ft)
            )
        for owner, spec in config.get("watermarknn", {}).get("owners", {}).items():
            problems += _recipe_problems(
                f"watermarknn.owners.{owner}.training",
                derive.owner_recipe(config, name, owner),
                spec.get("first_epoch", 0),
            )
        problems += _layer_problems(config, name, cache_dir)
    return problems


def _openood_backbone_problems(config: dict, name: str) -> list[str]:
    """An OpenOOD checkpoint is its ResNet18_32x32 (3×3 stem, padding 1) and must see the inputs
    OpenOOD gives it: its benchmark's normalisation, images made by its lists."""
    bb, where = config["backbones"][name], f"backbones.{name}"
    problems = []
    if bb["arch"] != "resnet18" or bb.get("stem_padding", 1) != 1:
        problems.append(f"{where}: OpenOOD's checkpoints are resnet18 with stem_padding 1")
    bench = config["benchmark"]["id_test"].removeprefix("openood-").partition("-")[0]
    if not config["benchmark"]["id_test"].startswith("openood-"):
        problems.append(
            f"{where}.pretrained: an OpenOOD checkpoint is evaluated on OpenOOD's lists "
            "(benchmark.id_test: openood-cifar10-test or openood-cifar100-test)"
        )
    elif bb.get("normalization") != f"openood-{bench}":
        problems.append(
            f"{where}.normalization: OpenOOD's {bench} checkpoints expect openood-{bench} "
            f"(its test preprocessing), not {bb.get('normalization')!r}"
        )
    return problems


def _watermark_problems(config: dict) -> list[str]:
    """OOD watermarks' schedules and objectives, and variants that name a model or watermark."""
    problems = []
    for name, wm in config["watermarks"].items():
        if wm["decay_epoch"] > wm["epochs"]:
            problems.append(
                f"watermarks.{name}.decay_epoch: {wm['decay_epoch']} is beyond its {wm['epochs']} "
                "epochs"
            )
        if wm["objective"] == "energy" and not {"t_in", "t_out"} <= set(wm):
            problems.append(f"watermarks.{name}: the energy objective needs t_in and t_out")
        if wm["objective"] == "msp" and {"t_in", "t_out"} & set(wm):
            problems.append(f"watermarks.{name}: t_in / t_out belong to the energy objective only")
    known = derive.model_names(config)
    for i, variant in enumerate(config["variants"]):
        model, _, watermark = variant.rpartition("+")
        if variant not in known and not (model in known and watermark in config["watermarks"]):
            problems.append(
                f"variants[{i}]: {variant!r} is neither a model ({', '.join(known)}) nor "
                "'<model>+<watermark>'"
            )
    return problems


def _finetune_problems(config: dict) -> list[str]:
    """Fine-tunes' names, starting checkpoints and method combinations, and POEM's pool."""
    problems = []
    snapshot_names = set(derive.snapshot_names(config))
    for name, ft in config["finetunes"].items():
        if (
            name in ("base",)
            or name.startswith(("null", "base."))
            or name in config.get("watermarknn", {}).get("owners", {})
        ):
            problems.append(f"finetunes.{name}: reserved or already used name")
        if name.rpartition("+")[2] in config["watermarks"]:
            problems.append(f"finetunes.{name}: must not end in '+<watermark>'")
        if ft["from"] != "base" and ft["from"].removeprefix("base.") not in snapshot_names:
            problems.append(
                f"finetunes.{name}.from: {ft['from']!r} is not base or base.<snapshot name>"
            )
        if "exposure" in ft and "outliers" not in config["benchmark"]:
            problems.append(f"finetunes.{name}.exposure: needs benchmark.outliers")
        if "exposure" in ft and "mask" in ft:
            problems.append(
                f"finetunes.{name}: UMAP inside outlier exposure is not part of the method"
            )
        if "cotrain" in ft and (ft["flooding"] or {"mask", "exposure"} & set(ft)):
            problems.append(
                f"finetunes.{name}.cotrain: co-training trains on cross-entropy alone; drop "
                "flooding, mask and exposure"
            )
        if "cotrain" in ft and "laood" not in config["scores"]:
            problems.append(f"finetunes.{name}.cotrain: needs scores.laood (its detectors)")
    if "outliers" in config["benchmark"]:
        problems += _poem_pool_problems(config)
    return problems


def _watermarknn_problems(config: dict) -> list[str]:
    """The trigger set's labels, the owners' names and starting points, the ownership rule."""
    wnn = config.get("watermarknn")
    if not wnn:
        return []
    problems = []
    try:
        spec, _ = data.get(wnn["triggers"])
        classes = (
            config["offline"]["trigger_classes"] if spec.offline is not None else spec.num_classes
        )
        if classes > data.get(config["benchmark"]["id_train"])[0].num_classes:
            problems.append("watermarknn.triggers: trigger labels exceed the ID classes")
    except KeyError as err:
        problems.append(f"watermarknn.triggers: {err.args[0]}")
    snapshot_names = set(derive.snapshot_names(config))
    for name, owner in wnn["owners"].items():
        source = owner["from"]
        if name in ("base", "scratch") or name.startswith("null"):
            problems.append(f"watermarknn.owners.{name}: reserved name")
        if source not in ("scratch", "base") and source.removeprefix("base.") not in snapshot_names:
            problems.append(
                f"watermarknn.owners.{name}.from: {source!r} is not scratch, base or "
                "base.<snapshot name>"
            )
    if wnn["ownership"]["rule"] == "fixed" and "min_accuracy" not in wnn["ownership"]:
        problems.append("watermarknn.ownership: the fixed rule needs min_accuracy")
    if wnn["ownership"]["rule"] == "null-models" and "alpha" not in wnn["ownership"]:
        problems.append("watermarknn.ownership: the null-models rule needs alpha")
    return problems


def _search_problems(config: dict) -> list[str]:
    """A hyper-parameter search tunes configured feature scores by their own parameters, on
    validation sets kept apart from every set the run tests on."""
    search = config.get("search")
    if not search:
        return []
    problems = []
    bench = config["benchmark"]
    for key in ("id_val", "ood_val"):
        try:
            data.get(search[key])
        except KeyError as err:
            problems.append(f"search.{key}: {err.args[0]}")
        if search[key] in (bench["id_train"], bench["id_test"], *bench["ood"]):
            problems.append(
                f"search.{key}: {search[key]!r} is a set the run trains or tests on; tuning must "
                "not see it"
            )
    for name, grid in search["grids"].items():
        if name not in config["scores"]:
            problems.append(f"search.grids.{name}: not configured under scores")
            continue
        score = scores.get(name)
        if score.needs != "features":
            problems.append(
                f"search.grids.{name}: only feature-based scores are searched ({name} runs the "
                "network)"
            )
        known = score.hyperparameters()
        for key in set(grid) - (set(grid) if known is None else known):
            problems.append(
                f"search.grids.{name}.{key}: not a hyper-parameter of {name} "
                f"({', '.join(sorted(known)) or 'it has none'})"
            )
    return problems


def _schedule_problems(config: dict) -> list[str]:
    """The seed schedule: one level per look, looks increasing."""
    u = config["uncertainty"]
    out = []
    if len(u["levels"]) != len(u["looks"]):
        out.append(
            f"uncertainty.levels: {len(u['levels'])} levels for {len(u['looks'])} looks "
            "(one level per look)"
        )
    if any(b <= a for a, b in zip(u["looks"], u["looks"][1:], strict=False)):
        out.append(f"uncertainty.looks: {u['looks']} must increase")
    return out


def _check_semantics(config: dict, cache_dir=None) -> None:
    """What the schema cannot say, one check per concern; every problem reported at once."""
    problems = [
        *_name_problems(config),
        *_backbone_problems(config, cache_dir),
        *_watermark_problems(config),
        *_finetune_problems(config),
        *_benchmark_problems(config),
        *_watermarknn_problems(config),
        *_search_problems(config),
        *_schedule_problems(config),
        *claims.problems(config),
    ]
    if problems:
        problems = list(dict.fromkeys(problems))  # checks repeated per backbone report once
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems))


def load(path, cache_dir=None) -> dict:
    return validate(read_yaml(path), cache_dir)
