"""What a validated config implies for the jobs: each model's recipe (completed by `Recipe`),
constructor spec and names, released weights, POEM's selection size, GPUs per job.

Read by the rules, the validation and the rehearsal; torch-free, as the Snakefile imports it.
"""

from __future__ import annotations

import copy
import os

from . import data, runtime
from .layout import DataFolder
from .recipe import Recipe


def poem_selections(config: dict) -> dict[str, int]:
    """Outliers each POEM fine-tune selects, ood_factor × the ID training set, where that set's
    size is known before any job (validation and the rehearsal's pool size read it)."""
    try:
        n_id = data.expected_size(config, config["benchmark"]["id_train"])
    except KeyError:  # an unknown dataset, reported on its own
        return {}
    if n_id is None:
        return {}
    return {
        name: round(ft["exposure"]["ood_factor"] * n_id)
        for name, ft in config.get("finetunes", {}).items()
        if ft.get("exposure", {}).get("method") == "poem"
    }


def per_seed_sample(config: dict) -> int | None:
    """Images each run draws from the ID training set with its own seed
    (`dataset_options.<id_train>: {sample, per_seed: true}`), or None: every run reads the data
    folder's set."""
    options = config.get("dataset_options", {}).get(config["benchmark"]["id_train"], {})
    return options["sample"] if options.get("per_seed") else None


def converted_sample(config: dict, name: str) -> int | None:
    """The seeded subsample a dataset's conversion keeps: none for a set drawn per run, which
    is converted whole."""
    options = config.get("dataset_options", {}).get(name, {})
    return None if options.get("per_seed") else options.get("sample")


def shares_released_start(config: dict, arch: str) -> bool:
    """Whether every seed of backbone `arch` imports the same released file: its seeds then vary
    only what is trained on it, not the backbone's own training."""
    pretrained = config["backbones"][arch].get("pretrained")
    return bool(pretrained) and "{seed}" not in pretrained.get("path", "")


def pretrained_file(config: dict, arch: str, seed, snapshot: str | None = None) -> str:
    """The released weights backbone `arch` imports for `seed`: its downloaded archive (that of a
    `snapshot`, another stage of its training, if named), or the user's file (`pretrained.path`,
    `{seed}` replaced: OpenOOD's s0, s1, s2 checkpoints)."""
    pretrained = config["backbones"][arch]["pretrained"]
    if snapshot is not None:
        return DataFolder(config["data"]).archive(pretrained["snapshots"][snapshot])
    if "archive" in pretrained:
        return DataFolder(config["data"]).archive(pretrained["archive"])
    return pretrained["path"].format(seed=seed)


def snapshot_names(config: dict) -> list[str]:
    """The base run's named extra checkpoints (`training.snapshots`)."""
    return list(Recipe.of(config["training"]).snapshots)


def recipe_of(config: dict, backbone: str) -> dict:
    """The complete training recipe of one backbone: `training` updated by the backbone's own
    overrides, every key left out given its default (`Recipe`)."""
    recipe = {**config["training"], **config["backbones"][backbone].get("training", {})}
    return Recipe.of(recipe).as_dict()


def model_names(config: dict) -> list[str]:
    """Every checkpoint the DAG can make in a run folder: the base model and its kept epochs,
    WatermarkNN owners and their attacked copies, fine-tuned models."""
    names = ["base", *(f"base.{k}" for k in snapshot_names(config))]
    wnn = config.get("watermarknn")
    if wnn:
        owners = list(wnn["owners"])
        names += owners + [f"{o}.{a}" for o in owners for a in wnn["attacks"]["kinds"]]
    return names + list(config.get("finetunes", {}))


def derived_recipe(config: dict, backbone: str, overrides: dict) -> dict:
    """The recipe of a model trained from or beside the backbone (a fine-tune, a watermark
    owner): the backbone's recipe without its checkpoint options, updated by `overrides`."""
    recipe = recipe_of(config, backbone)
    del recipe["snapshots"], recipe["checkpoint"]
    return Recipe.of({**recipe, **copy.deepcopy(overrides)}).as_dict()


def finetune_recipe(config: dict, backbone: str, name: str) -> dict:
    return derived_recipe(config, backbone, config["finetunes"][name].get("training", {}))


def owner_recipe(config: dict, backbone: str, owner: str) -> dict:
    """A WatermarkNN owner's embedding recipe (see `derived_recipe`)."""
    return derived_recipe(
        config, backbone, config["watermarknn"]["owners"][owner].get("training", {})
    )


def attack_recipe(config: dict, backbone: str) -> dict:
    """WatermarkNN's fine-tuning attacks: the backbone's augmentation, constant lr, no triggers."""
    attacks = config["watermarknn"]["attacks"]
    recipe = recipe_of(config, backbone)
    return Recipe.of(
        {
            **{k: recipe[k] for k in ("momentum", "weight_decay", "augment")},
            "epochs": attacks["epochs"],
            "lr": attacks["lr"],
            "batch_size": attacks["batch_size"],
            "schedule": {"kind": "constant"},
        }
    ).as_dict()


def model_spec(config: dict, backbone: str) -> dict:
    """Constructor arguments of a backbone: its arch and options, plus the ID class count."""
    spec = {
        k: v
        for k, v in config["backbones"][backbone].items()
        if k not in ("training", "pretrained")
    }
    spec["num_classes"] = data.get(config["benchmark"]["id_train"])[0].num_classes
    return spec


def variant_spec(config: dict, backbone: str, variant: str = "base") -> dict:
    """The spec a model variant's checkpoint must carry: the backbone's, plus the watermark
    flag for a watermarked variant `<model>+<watermark>`."""
    spec = model_spec(config, backbone)
    if variant.rpartition("+")[2] in config["watermarks"]:
        spec["watermark"] = True
    return spec


def kept_epochs(recipe: dict) -> dict[str, int]:
    """Named checkpoints' epochs (`Recipe.kept_epochs`)."""
    return Recipe.of(recipe).kept_epochs()


def gpus_per_job(config: dict, cluster_gpus: bool = False) -> int:
    """GPUs a network job asks the scheduler for: 1 when the run's device is CUDA.

    `device: auto` means CUDA on the nodes when the profile names a GPU partition
    (`cluster_gpus`: a login node's own lack of a GPU says nothing about them), else CUDA when
    this machine has one (nvidia-smi lists a GPU and CUDA_VISIBLE_DEVICES does not hide them
    all). `cpu` asks for none anywhere.
    """
    device = config["device"]
    if device == "auto" and cluster_gpus:
        return 1
    if device == "auto":
        hidden = os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1")
        return int(not hidden and bool(runtime.nvidia_gpus()))
    return int(device.startswith("cuda"))


def scores_of(config: dict, variant: str) -> list[str]:
    """The scores computed on one model variant: `variant_scores` narrows `scores` per variant."""
    return list(config.get("variant_scores", {}).get(variant, config["scores"]))
