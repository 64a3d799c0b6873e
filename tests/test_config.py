"""Configuration validation: every error names the offending key."""

import copy
import inspect
from pathlib import Path

import pytest
import yaml

from oodrepro import config as cfg
from oodrepro import derive

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def default():
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_default_config_is_valid_and_gets_defaults(default):
    del default["features"]
    out = cfg.validate(default)
    assert out["features"]["batch_size"] == 512
    assert out["metrics"]["fpr_rule"] == "first_ge"


@pytest.mark.parametrize("preset", sorted((ROOT / "presets").glob("*.yaml")))
def test_presets_are_valid(preset):
    cfg.load(preset)


@pytest.mark.parametrize(
    "edit,fragment",
    [
        (lambda c: c["training"].update(lrr=0.1), "training: unknown key"),
        (lambda c: c["training"].update(lr="fast"), "training.lr: 'fast' is not of type 'number'"),
        (
            lambda c: c["backbones"]["resnet18-small"].update(arch="resnet9000"),
            "backbones.resnet18-small.arch",
        ),
        (
            lambda c: c["backbones"]["resnet18-small"].update(widht=0.5),
            "backbones.resnet18-small: unknown key",
        ),
        (
            lambda c: c["benchmark"]["ood"].append("mnist"),
            "benchmark.ood[6]: unknown dataset 'mnist'",
        ),
        (lambda c: c["scores"].update(mystery={}), "scores.mystery: unknown score"),
        (lambda c: c["scores"]["odin"].update(temprature=10), "scores.odin: unknown key"),
        (lambda c: c["metrics"].update(fpr_rule="nearest"), "metrics.fpr_rule"),
        (
            lambda c: c.update(variants=["base", "nowhere"]),
            "variants[1]: 'nowhere' is neither a model",
        ),
        (
            lambda c: c.update(downloads={"cifar.tgz": {"url": "x"}}),
            "downloads.cifar.tgz: unknown archive",
        ),
        (
            lambda c: c["training"].update(schedule={"kind": "step", "milestones": [99]}),
            "milestone 99",
        ),
        (lambda c: c.update(seeds=[]), "seeds"),
        (lambda c: c["benchmark"].update(name="a/b"), "benchmark.name"),
        (
            lambda c: c["variant_scores"].update({"base+wm-zzz": ["msp"]}),
            "variant_scores.base+wm-zzz: not one of",
        ),
        (
            lambda c: c["variant_scores"].update({"base": ["mystery"]}),
            "'mystery' is not configured under scores",
        ),
        (
            lambda c: c["watermarks"]["wm-energy"].pop("t_in"),
            "watermarks.wm-energy: the energy objective needs",
        ),
        (
            lambda c: c["watermarks"]["wm-msp"].update(t_in=1.0),
            "watermarks.wm-msp: t_in / t_out belong",
        ),
        (
            lambda c: c["watermarks"]["wm-msp"].pop("rho"),
            "watermarks.wm-msp: 'rho' is a required property",
        ),
        (
            lambda c: c.update(variants=["base", "base+wm-nope"]),
            "'base+wm-nope' is neither a model",
        ),
        (lambda c: c["finetunes"]["um"].update({"from": "base.last"}), "finetunes.um.from"),
        (
            lambda c: c["finetunes"].update({"oe+wm-msp": {"from": "base"}}),
            "must not end in '+<watermark>'",
        ),
        (
            lambda c: c["benchmark"].pop("outliers"),
            "finetunes.oe.exposure: needs benchmark.outliers",
        ),
        (
            lambda c: c["watermarknn"]["owners"].update({"null7": {"from": "scratch"}}),
            "owners.null7: reserved",
        ),
        (
            lambda c: c["watermarknn"].update({"triggers": "nope"}),
            "watermarknn.triggers: unknown dataset",
        ),
        (
            lambda c: c["watermarknn"].update({"ownership": {"rule": "fixed"}}),
            "fixed rule needs min_accuracy",
        ),
        (
            lambda c: c["backbones"]["resnet18-small"].update(
                pretrained={"archive": "x.pt", "format": "hendrycks-wrn"}
            ),
            "pretrained.archive: unknown archive 'x.pt'",
        ),
        # found by trying 51 malformed configs: these passed, or named a rule instead of the key
        (
            lambda c: c["finetunes"]["um"]["training"].update(
                schedule={"kind": "step", "milestones": [3, 30]}
            ),
            "finetunes.um.training.schedule.milestones: milestone 30 is beyond epoch 6",
        ),
        (
            lambda c: c["watermarknn"]["owners"]["wnn-pretrained"]["training"].update(
                schedule={"kind": "step", "milestones": [9]}
            ),
            "owners.wnn-pretrained.training.schedule.milestones",
        ),
        (
            lambda c: c["finetunes"]["oe"]["training"].update(schedule={"kind": "step"}),
            "finetunes.oe.training.schedule: a step schedule needs milestones",
        ),
        (
            lambda c: c["watermarks"]["wm-msp"].update(decay_epoch=9),
            "watermarks.wm-msp.decay_epoch: 9 is beyond",
        ),
        (lambda c: c.update(seeds=[0, 1, 0]), "seeds: [0, 1, 0] has non-unique elements"),
        (
            lambda c: c["training"].update(lr=float("nan")),
            "training.lr: nan is not a finite number",
        ),
        (
            lambda c: c["unleashing_mask"].update(level=float("inf")),
            "unleashing_mask.level: inf is not a finite",
        ),
        (
            lambda c: c["scores"]["mahalanobis"].update(layer="block_9"),
            "scores.mahalanobis.layer: resnet18 has no",
        ),
        (
            lambda c: c["scores"]["mahalanobis_ensemble"]["layers"].append("blocks.12"),
            "scores.mahalanobis_ensemble.layers[4]: resnet18 has no module 'blocks.12'",
        ),
        (
            lambda c: c["scores"]["featurenorm"].update(block="layer5.0"),
            "scores.featurenorm.block: resnet18 has no",
        ),
        (
            lambda c: c["scores"]["featurenorm"].update(block=8),
            "scores.featurenorm.block: resnet18 has no block 8",
        ),
        (lambda c: c["benchmark"]["ood"].append("glyphs"), "benchmark.ood: ['gaussian-noise'"),
        (
            lambda c: c["benchmark"]["ood"].append("digits-train"),
            "benchmark.ood: must not contain the ID set benchmark.id_train",
        ),
        (
            lambda c: c["benchmark"].update(outliers="photos"),
            "benchmark.outliers: 'photos' is an ID or OOD set",
        ),
        (
            lambda c: c["watermarknn"]["attacks"].update(kinds=["ftll", "ftll"]),
            "watermarknn.attacks.kinds",
        ),
        (
            lambda c: c["scores"]["vim"].update(dim=64),
            "scores.vim.dim: must lie below resnet18's penultimate size 64",
        ),
        (
            lambda c: c.update(dataset_options={"photos": {"sample": 10, "per_seed": True}}),
            "dataset_options.photos.per_seed: only the ID training set ('digits-train')",
        ),
        (
            lambda c: c.update(dataset_options={"digits-train": {"per_seed": True}}),
            "dataset_options.digits-train.per_seed: only the ID training set",
        ),
    ],
)
def test_errors_name_the_key(default, edit, fragment):
    bad = copy.deepcopy(default)
    edit(bad)
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate(bad)
    assert fragment in str(err.value)


def test_a_poem_pool_that_it_would_select_whole_is_refused():
    """POEM selecting its whole pool trains exactly as Energy-OE: refused at validation."""
    preset = yaml.safe_load((ROOT / "presets" / "fashion-mnist.yaml").read_text())
    cfg.validate(copy.deepcopy(preset))  # 2,000 of 16,000
    selected = round(
        preset["finetunes"]["poem"]["exposure"]["ood_factor"]
        * preset["dataset_options"]["fashion-mnist-train"]["sample"]
    )
    preset["offline"]["n_outliers"] = selected
    with pytest.raises(cfg.ConfigError) as err:
        cfg.validate(preset)
    assert f"finetunes.poem.exposure: POEM would select {selected} outliers" in str(err.value)
    assert "finetunes.energy-oe" not in str(err.value)  # a random subset may be the whole pool


def test_recipe_overrides_and_kept_epochs(default):
    default["backbones"]["resnet18-small"]["training"] = {"epochs": 9, "lr": 0.2}
    cfg.validate(default)
    recipe = derive.recipe_of(default, "resnet18-small")
    assert recipe["epochs"] == 9 and recipe["lr"] == 0.2 and recipe["batch_size"] == 64
    assert derive.kept_epochs(recipe) == {"middle": 4}  # round(0.5 · 9)
    assert derive.model_spec(default, "resnet18-small") == {
        "arch": "resnet18",
        "width": 0.125,
        "normalization": "half",
        "num_classes": 10,
    }


def test_network_jobs_ask_for_a_gpu_only_where_the_run_uses_one(monkeypatch):
    from oodrepro import runtime

    assert (
        derive.gpus_per_job({"device": "cuda:1"}) == 1
        and derive.gpus_per_job({"device": "cpu"}) == 0
    )
    monkeypatch.setattr(runtime, "nvidia_gpus", lambda: ["NVIDIA H100"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert derive.gpus_per_job({"device": "auto"}) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # every GPU hidden: torch would run on the CPU
    assert derive.gpus_per_job({"device": "auto"}) == 0
    monkeypatch.setattr(runtime, "nvidia_gpus", lambda: [])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert derive.gpus_per_job({"device": "auto"}) == 0
    # a cluster profile naming a GPU partition: the nodes decide, not this GPU-less login node
    assert derive.gpus_per_job({"device": "auto"}, cluster_gpus=True) == 1
    assert derive.gpus_per_job({"device": "cpu"}, cluster_gpus=True) == 0


class _Job:
    """The parts of the `snakemake` object a workflow script's start reads."""

    def __init__(self, log, gpu=0):
        self.log, self.rule, self.threads, self.input = [str(log)], "train_backbone", 1, ["x.npz"]
        self.params = {"device": "auto", "recipe": {"epochs": 3}}
        self.resources = {"gpu": gpu}


def test_a_job_logs_the_machine_first_and_stops_when_its_gpu_is_missing(tmp_path, monkeypatch):
    import json
    import socket
    import sys

    from oodrepro import manifest, runtime

    monkeypatch.setattr(runtime, "nvidia_gpus", lambda fields=("name",): [])
    monkeypatch.setattr(sys, "stdout", sys.stdout)  # start_job redirects both into the log
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    runtime.start_job(_Job(tmp_path / "cpu.log"))
    first = (tmp_path / "cpu.log").read_text().splitlines()[0]
    host = socket.gethostname()
    assert f"job train_backbone on {host} (CPU " in first and "GPU none" in first
    assert '"recipe": {"epochs": 3}' in first and "torch 2." in first
    facts = json.loads((tmp_path / "cpu.log.node.json").read_text())
    assert facts["rule"] == "train_backbone" and facts["host"] == host
    runtime.record(_Job(tmp_path / "cpu.log"), released={"epoch": 100})  # learnt while it ran
    (gathered,) = manifest.jobs([tmp_path])["train_backbone"]
    facts.pop("rule")
    assert gathered == {"log": str(tmp_path / "cpu.log"), **facts, "released": {"epoch": 100}}
    with pytest.raises(SystemExit, match=f"asked for 1 GPU\\(s\\) but node {host} gives it none"):
        runtime.start_job(_Job(tmp_path / "gpu.log", gpu=1))


def test_every_rule_time_limit_grows_with_the_attempt(tmp_path):
    """The dry run of a job's second submission asks for twice its rule's runtime."""
    import subprocess
    import sys

    from oodrepro import plan

    def limits(attempt):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "--dry-run",
                "--profile",
                "profiles/local",
                "--cores",
                "1",
                "--attempt",
                str(attempt),
                "--directory",
                str(tmp_path),
                "-s",
                "Snakefile",
                "--configfile",
                "config.yaml",
                "--replace-workflow-config",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return {rule: res.get("runtime") for rule, res in plan.jobs(out)}

    first, second = limits(1), limits(2)
    timed = {rule for rule, minutes in first.items() if minutes}
    assert {"train_backbone", "compute_metrics", "finetune_model"} <= timed
    assert all(int(second[r]) == 2 * int(first[r]) for r in timed)


def test_layer_names_come_from_the_built_model_and_are_cached(default, tmp_path, monkeypatch):
    from oodrepro import models

    spec = derive.model_spec(default, "resnet18-small")
    names = cfg.architecture_names(spec, tmp_path)
    model = models.build(**spec)
    assert names["blocks"] == model.block_names and names["modules"] == [
        n for n, _ in model.named_modules() if n
    ]
    monkeypatch.setattr(models, "build", lambda *a, **k: pytest.fail("the cache was not used"))
    assert cfg.architecture_names(spec, tmp_path) == names
    monkeypatch.undo()
    cfg.architecture_names({**spec, "width": 0.5}, tmp_path)  # another spec: another entry
    assert len(list(tmp_path.glob("architecture-*.json"))) == 2


def test_a_duplicated_yaml_key_names_its_lines(tmp_path):
    text = (ROOT / "config.yaml").read_text().replace("  lr: 0.05\n", "  lr: 0.05\n  lr: 0.01\n", 1)
    (tmp_path / "dup.yaml").write_text(text)
    with pytest.raises(
        cfg.ConfigError, match=r"dup.yaml:\d+: key 'lr' is given twice .*first on line \d+"
    ):
        cfg.load(tmp_path / "dup.yaml")
    anchors = "a: &r {x: 1}\nb:\n  <<: *r\n  x: 2\n"  # a merge key overridden is not a duplicate
    (tmp_path / "merge.yaml").write_text(anchors)
    assert cfg.read_yaml(tmp_path / "merge.yaml")["b"] == {"x": 2}


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path):
    lines = (ROOT / "config.yaml").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  lr:"))
    lines[at] = "  lr: [0.05"
    (tmp_path / "broken.yaml").write_text("\n".join(lines) + "\n")
    with pytest.raises(cfg.ConfigError, match=r"broken.yaml:\d+:\d+: YAML syntax error"):
        cfg.load(tmp_path / "broken.yaml")


def test_a_preset_merged_into_config_yaml_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    preset = "presets/featurenorm-cvpr23.yaml"
    with pytest.raises(
        cfg.ConfigError, match="add --replace-workflow-config|Add --replace-workflow-config"
    ):
        cfg.check_config_files("config.yaml", [preset], replace=False)
    cfg.check_config_files("config.yaml", [preset], replace=True)
    cfg.check_config_files(
        "config.yaml", ["config.yaml"], replace=False
    )  # the default config itself
    (tmp_path / "override.yaml").write_text(
        "network_threads: 2\n"
    )  # a partial override merges on purpose
    cfg.check_config_files("config.yaml", [str(tmp_path / "override.yaml")], replace=False)


def _enum(path: list[str]) -> set:
    node = cfg.schema()
    for key in path:
        node = node[key]
    return set(node["enum"])


def test_the_schemas_enums_are_the_registries():
    """Each enum of the schema names exactly what its registry holds, so adding an
    architecture, a normalisation, an attack or a metric rule in one place is caught."""
    from oodrepro import claim_kinds, metrics, models, outlier_exposure, watermark_ood, watermarknn

    backbone = ["properties", "backbones", "additionalProperties", "properties"]
    assert _enum([*backbone, "arch"]) == set(models.MODELS)
    assert _enum([*backbone, "normalization"]) == set(models.NORMALIZATIONS)
    assert _enum([*backbone, "pretrained", "properties", "format"]) == set(
        models.PRETRAINED_FORMATS
    )
    assert _enum(
        ["properties", "watermarks", "additionalProperties", "properties", "objective"]
    ) == set(watermark_ood.OBJECTIVES)
    attacks = ["properties", "watermarknn", "properties", "attacks", "properties"]
    assert _enum([*attacks, "kinds", "items"]) == set(watermarknn.ATTACKS)
    exposure = [
        "properties",
        "finetunes",
        "additionalProperties",
        "properties",
        "exposure",
        "properties",
    ]
    assert _enum([*exposure, "method"]) == set(outlier_exposure.METHODS)
    m = ["properties", "metrics", "properties"]
    assert _enum([*m, "fpr_rule"]) == set(metrics.FPR_RULES)
    assert _enum([*m, "fpr_positive"]) == set(metrics.POSITIVES)
    assert _enum([*m, "aupr"]) == set(metrics.AUPR_MODES)
    claim = ["properties", "claims", "items", "properties"]
    ranked_or_bounded = {"rank", "bound"}
    assert _enum([*claim, "of"]) | _enum([*claim, "kind"]) - ranked_or_bounded == set(
        claim_kinds.KINDS
    )


def _default(function, name: str):
    return inspect.signature(function).parameters[name].default


def test_each_schema_default_is_the_librarys_own():
    """A default lives in the library (used alone) and the schema fills it in (so the config
    records it): where both hold one, they agree."""
    from oodrepro import features, unleashing_mask

    props = cfg.schema()["properties"]
    um = props["unleashing_mask"]["properties"]
    finetune = props["finetunes"]["additionalProperties"]["properties"]
    pairs = [
        (um["keep"], _default(unleashing_mask.estimate_constraint, "keep")),
        (um["draws"], _default(unleashing_mask.estimate_constraint, "draws")),
        (um["batch_size"], _default(unleashing_mask.estimate_constraint, "batch_size")),
        (um["beta"], _default(unleashing_mask.flooding, "beta")),
        (
            finetune["mask"]["properties"]["train_weights"],
            _default(unleashing_mask.attach_score_masks, "train_weights"),
        ),
        (finetune["exposure"]["properties"]["ood_factor"], unleashing_mask.OOD_FACTOR),
        *(
            (props["features"]["properties"]["batch_size"], _default(fn, "batch_size"))
            for fn in (features.dump, features.dump_convs)
        ),
    ]
    for prop, value in pairs:
        assert prop["default"] == value, prop


def test_the_old_name_of_a_renamed_key_still_works_with_a_warning(default):
    """`training.keep` (named checkpoints) is now `training.snapshots`, apart from the masks'
    `keep` (a fraction of weights): a config written for the old name runs, and says so."""
    old = copy.deepcopy(default)
    old["training"]["keep"] = old["training"].pop("snapshots")
    with pytest.warns(FutureWarning, match="training.keep is now training.snapshots"):
        cfg.validate(old)
    assert old["training"]["snapshots"] == default["training"]["snapshots"]
    assert derive.model_names(old) == derive.model_names(cfg.validate(copy.deepcopy(default)))
    both = copy.deepcopy(default)
    both["training"]["keep"] = {"middle": 0.5}
    with pytest.raises(cfg.ConfigError, match="both 'keep' and its new name 'snapshots'"):
        cfg.validate(both)


def _undescribed(node, path: str) -> list[str]:
    """Keys under `node` (a schema object) whose schema has no description, with their paths."""
    if not isinstance(node, dict):
        return []
    out = []
    for key, sub in node.get("properties", {}).items():
        here = f"{path}.{key}".lstrip(".")
        if isinstance(sub, dict) and "description" not in sub and "$ref" not in sub:
            out.append(here)
        out += _undescribed(sub, here)
    for key in ("additionalProperties", "items"):
        out += _undescribed(node.get(key), f"{path}.*")
    for key in ("allOf", "anyOf", "oneOf"):
        for sub in node.get(key, []):
            out += _undescribed(sub, path)
    return out


def test_every_schema_key_says_what_it_is():
    """config.yaml calls the schema the place where every key is documented: each has one."""
    schema = cfg.read_yaml(ROOT / "oodrepro" / "schema" / "config.schema.yaml")
    missing = _undescribed(schema, "")
    for name, definition in schema["definitions"].items():
        missing += _undescribed(definition, f"definitions.{name}")
    assert not missing, f"schema keys without a description: {missing}"


def test_the_recipes_keys_and_defaults_live_in_recipe():
    """The schema's `definitions/recipe` and `Recipe` name the same keys (nested ones too); the
    defaults live in `Recipe` alone (a schema default would fill every override recipe, masking
    the recipe it overrides), and the recipe a rule receives has every key filled from there."""
    import dataclasses

    from oodrepro.recipe import Augment, Recipe, Schedule

    props = cfg.schema()["definitions"]["recipe"]["properties"]
    for schema_props, cls in (
        (props, Recipe),
        (props["schedule"]["properties"], Schedule),
        (props["augment"]["properties"], Augment),
    ):
        assert set(schema_props) == {f.name for f in dataclasses.fields(cls)}, cls
        assert not [k for k, v in schema_props.items() if "default" in v], cls
    config = cfg.load(ROOT / "config.yaml")
    complete = derive.recipe_of(config, "resnet18-small")
    given, defaults = config["training"], Recipe(epochs=1, batch_size=2, lr=0.1).as_dict()
    assert {k: complete[k] for k in given if k not in ("schedule", "augment")} == {
        k: v for k, v in given.items() if k not in ("schedule", "augment")
    }
    assert complete["augment"] == given["augment"]  # both keys given in config.yaml
    assert complete["schedule"] == {**defaults["schedule"], **given["schedule"]}
    assert {k: complete[k] for k in set(complete) - set(given)} == {
        k: defaults[k] for k in set(complete) - set(given)
    }
    assert complete["nesterov"] is False and complete["checkpoint"] == "last"
