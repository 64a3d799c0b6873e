"""OpenOOD v1.5 as a source (docs/openood-v15.md): sets made exactly from its image lists, its
released checkpoints imported strictly by key, its preprocessing, and its leaderboard rows
checked against their own std. The preset's whole DAG rehearses in CI (`make rehearse-ci`)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from oodrepro import config as cfg
from oodrepro import data, models, report
from oodrepro.data import standins

ROOT = Path(__file__).resolve().parents[1]
PRESET = ROOT / "presets" / "openood-v15-cifar10.yaml"
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
SPEC = {"arch": "resnet18", "num_classes": 10, "normalization": "openood-cifar10"}


def openood_resnet18_keys() -> set[str]:
    """The state-dict keys of OpenOOD's ResNet18_32x32, written out from its architecture: a 3×3
    stem (conv1, bn1), layer1–4 of two BasicBlocks (a 1×1 conv + BN shortcut where the stage
    downsamples), fc."""
    keys = {"conv1.weight", *(f"bn1.{k}" for k in BN), "fc.weight", "fc.bias"}
    for stage in range(1, 5):
        for block in range(2):
            p = f"layer{stage}.{block}"
            keys |= {f"{p}.conv1.weight", f"{p}.conv2.weight"}
            keys |= {f"{p}.bn{i}.{k}" for i in (1, 2) for k in BN}
            if stage > 1 and block == 0:
                keys |= {f"{p}.shortcut.0.weight", *(f"{p}.shortcut.1.{k}" for k in BN)}
    return keys


def openood_forward(state: dict, x: torch.Tensor) -> torch.Tensor:
    """OpenOOD's evaluation of a 32×32 CIFAR-10 image, written from its keys alone: its
    normalisation (the test transform's), then the network in eval mode."""
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)

    def bn(h, p):
        return F.batch_norm(
            h, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"],
            state[f"{p}.bias"], training=False,
        )  # fmt: skip

    h = F.relu(bn(F.conv2d((x - mean) / std, state["conv1.weight"], padding=1), "bn1"))
    for stage in range(1, 5):
        for block in range(2):
            p, stride = f"layer{stage}.{block}", 2 if stage > 1 and block == 0 else 1
            out = F.relu(
                bn(F.conv2d(h, state[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1")
            )
            out = bn(F.conv2d(out, state[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            if f"{p}.shortcut.0.weight" in state:
                h = bn(
                    F.conv2d(h, state[f"{p}.shortcut.0.weight"], stride=stride), f"{p}.shortcut.1"
                )
            h = F.relu(out + h)
    return F.linear(h.mean((2, 3)), state["fc.weight"], state["fc.bias"])


def test_a_checkpoint_in_openoods_key_layout_imports_as_the_same_network(tmp_path):
    path = tmp_path / "s0" / "best.ckpt"
    standins.openood_checkpoint(path, 10, seed=0)
    state = torch.load(path, weights_only=True)
    assert set(state) == openood_resnet18_keys()
    model = models.import_pretrained(path, tmp_path / "base.pt", SPEC, "openood")
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), openood_forward(state, x), atol=1e-4)
        saved = models.load_model(tmp_path / "base.pt", spec=SPEC)
        assert torch.equal(saved(x), model(x))


@pytest.mark.parametrize(
    "edit, word",
    [
        (lambda s: s.pop("layer3.1.bn2.running_var"), "missing"),
        (lambda s: s.update({"layer5.0.conv1.weight": torch.zeros(1)}), "unexpected"),
    ],
)
def test_a_checkpoint_with_a_key_missing_or_extra_is_refused(tmp_path, edit, word):
    path = tmp_path / "best.ckpt"
    standins.openood_checkpoint(path, 10, seed=0)
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)
    with pytest.raises(KeyError, match=f"1 {word}|1 of the model's weights {word}"):
        models.import_pretrained(path, tmp_path / "base.pt", SPEC, "openood")
    assert not (tmp_path / "base.pt").exists()


def _write_openood_folder(root: Path) -> tuple[list[np.ndarray], list[int]]:
    """A CIFAR-10 test list of four images of the sizes OpenOOD's sets have (32×32, 64×64 TIN,
    28×28 grey MNIST, a larger photo), in an order that is not the files' sorted order."""
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
        rng.integers(0, 256, (28, 28), dtype=np.uint8),
        rng.integers(0, 256, (45, 61, 3), dtype=np.uint8),
    ]
    names = ["cifar10/test/b.png", "cifar10/test/a.png", "cifar10/test/d.png", "x/c.png"]
    labels = [3, 0, 7, 1]
    for name, array in zip(names, arrays, strict=True):
        (root / "images_classic" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / "images_classic" / name)
    lists = root / "benchmark_imglist" / "cifar10"
    lists.mkdir(parents=True)
    lines = [f"{n} {y}\n" for n, y in zip(names, labels, strict=True)]
    (lists / "test_cifar10.txt").write_text("".join(lines))
    return arrays, labels


def test_a_set_is_made_of_exactly_its_lists_images_in_order_as_openood_preprocesses(tmp_path):
    from torchvision import transforms

    arrays, labels = _write_openood_folder(tmp_path / "openood")
    out = tmp_path / "openood-cifar10-test.npz"
    data.convert_download("openood-cifar10-test", [], out, folder=str(tmp_path / "openood"))
    images, got = data.load_dataset(out)
    # OpenOOD's test transform before ToTensor: RGB, Resize(32) bilinear, CenterCrop(32)
    openood = transforms.Compose(
        [transforms.Resize(32, interpolation=transforms.InterpolationMode.BILINEAR),
         transforms.CenterCrop(32)]
    )  # fmt: skip
    expected = [np.asarray(openood(Image.fromarray(a).convert("RGB"))) for a in arrays]
    assert np.array_equal(images, np.stack(expected)) and got.tolist() == labels
    assert np.array_equal(images[0], arrays[0])  # 32×32 passes unchanged


def test_a_list_naming_a_missing_image_or_malformed_is_an_error(tmp_path):
    root = tmp_path / "openood"
    _write_openood_folder(root)
    (root / "images_classic" / "x" / "c.png").unlink()
    with pytest.raises(FileNotFoundError, match="1 of the 4 images.*x/c.png"):
        data.convert_download("openood-cifar10-test", [], tmp_path / "o.npz", folder=str(root))
    (root / "benchmark_imglist" / "cifar10" / "test_cifar10.txt").write_text("a.png\n")
    with pytest.raises(ValueError, match="line 1"):
        data.convert_download("openood-cifar10-test", [], tmp_path / "o.npz", folder=str(root))


def test_the_config_reads_each_set_from_openoods_folder_and_says_what_is_missing(tmp_path):
    config = cfg.load(PRESET, cache_dir=tmp_path / "cache")
    config["openood"]["data"] = str(tmp_path / "openood")
    listed = tmp_path / "openood" / "benchmark_imglist" / "cifar10" / "test_tin.txt"
    assert data.source_files(config, "openood-cifar10-tin") == [str(listed)]
    assert data.source_folder(config, "openood-cifar10-tin") == str(tmp_path / "openood")
    missing = data.unavailable(config)
    assert len(missing) == 1 and "openood.data: no folder" in missing[0]
    _write_openood_folder(tmp_path / "openood")  # only the ID test list: the rest is named
    missing = "\n".join(data.unavailable(config))
    assert "benchmark_imglist/cifar10/test_tin.txt" in missing
    assert "test_cifar10.txt" not in missing
    assert "s{seed}" not in missing  # said per seed, the path filled in
    assert missing.count("checkpoint of backbone resnet18") == 3


def test_an_openood_checkpoint_must_get_openoods_preprocessing():
    config = cfg.read_yaml(PRESET)
    wrong = copy.deepcopy(config)
    wrong["backbones"]["resnet18"]["normalization"] = "hendrycks-cifar"
    with pytest.raises(cfg.ConfigError, match="expect openood-cifar10"):
        cfg.validate(wrong)
    other = copy.deepcopy(config)
    other["backbones"]["resnet18"]["stem_padding"] = 2
    with pytest.raises(cfg.ConfigError, match="stem_padding 1"):
        cfg.validate(other)


def test_a_row_beyond_the_leaderboards_own_std_is_flagged():
    summary = pd.DataFrame(
        [
            {"arch": "resnet18", "model": "base", "method": m, "ood_set": "near",
             "metric": "auroc", "mean": v, "std": 0.3, "seeds": 3}
            for m, v in (("msp", 88.2), ("knn", 89.9))
        ]
    )  # fmt: skip
    reference = {
        "rows": [
            {"method": "msp", "ood_set": "near", "metric": "auroc", "value": 88.03, "std": 0.25},
            {"method": "knn", "ood_set": "near", "metric": "auroc", "value": 90.64, "std": 0.20},
            {"method": "vim", "ood_set": "near", "metric": "auroc", "value": 88.68, "std": 0.28},
        ]
    }
    table = report.comparison_table(summary, reference).set_index("method")
    assert table.loc["msp", "beyond paper std"] == "no"  # 0.17 from it, within 0.25
    assert table.loc["knn", "beyond paper std"] == "yes"  # 0.74 from it, beyond 0.20
    assert table.loc["knn", "ours"] == 89.9 and table.loc["knn", "paper std"] == 0.20
    assert table.loc["vim", "beyond paper std"] == "" and table.loc["vim", "seeds"] == 0


@pytest.mark.workflow
def test_openoods_search_tunes_on_validation_sets_and_the_scores_use_its_choice(
    tmp_path, monkeypatch
):
    """The preset's rehearsal config (OpenOOD's layout, a checkpoint in its key layout) with a
    search over ReAct's percentile and KNN's k: each combination is scored on ID-val vs OOD-val,
    the best is chosen, and the test scores are exactly those of the chosen values."""
    from test_workflow import snakemake

    from oodrepro import io, metrics, rehearsal, scores
    from oodrepro.data.download import file_digest

    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load(rehearsal.prepare(PRESET).read_text())
    config["scores"] = {k: config["scores"][k] for k in ("msp", "react", "knn")}
    config["claims"] = [c for c in config["claims"] if c["id"] == "knn-vs-msp-near"]
    grids = {"react": {"percentile": [50, 90]}, "knn": {"k": [1, 5, 20]}}
    config["search"] = {
        "id_val": "openood-cifar10-val",
        "ood_val": "openood-cifar10-ood-val",
        "grids": grids,
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    validation = ["cifar10/val_cifar10.txt", "cifar10/val_tin.txt"]  # ID-val (labelled), OOD-val
    standins.openood_data(Path(config["openood"]["data"]), validation, 32, {"cifar10": 10})
    result = snakemake(tmp_path, path)
    assert result.returncode == 0, result.stderr[-5000:]

    run = Path(config["results"]) / "openood-cifar10" / "resnet18" / "seed0"
    features = {
        n: io.load_npz(run / "features" / "base" / f"openood-cifar10-{n}.npz")
        for n in ("train", "val", "ood-val", "test", "tin")
    }
    for name, grid in grids.items():
        table = pd.read_csv(run / "search" / "base" / f"{name}.csv")
        key = next(iter(grid))
        expected = []
        score = scores.get(name)
        for value in grid[key]:
            bound = score.bind({**config["scores"][name], key: value})
            state = bound.fit(features["train"])
            s_val, s_ood = (
                bound(features["val"], state=state),
                bound(features["ood-val"], state=state),
            )
            expected.append(100 * metrics.auroc(s_val, s_ood))
        assert table["val AUROC"].tolist() == pytest.approx(expected)
        best = grid[key][int(np.argmax(expected))]
        chosen = json.loads((run / "search" / "base" / f"{name}.json").read_text())["chosen"]
        assert chosen == {key: best} and table["selected"].sum() == 1
        bound = score.bind({**config["scores"][name], key: best})
        state = bound.fit(features["train"])
        test = np.load(run / "scores" / "base" / name / "openood-cifar10-tin.npy")
        assert np.allclose(test, bound(features["tin"], state=state))
    # the manifest proves which lists and checkpoint the run read
    sources = json.loads((Path(config["results"]) / "manifest.json").read_text())["local_sources"]
    listed = {Path(s["path"]).name: s["sha256"] for s in sources}
    openood = Path(config["openood"]["data"])
    for name in ("val_cifar10.txt", "val_tin.txt", "test_tin.txt", "train_cifar10.txt"):
        assert listed[name] == file_digest(
            openood / "benchmark_imglist" / "cifar10" / name, "sha256"
        )
    assert listed["best.ckpt"] == file_digest(
        config["backbones"]["resnet18"]["pretrained"]["path"].format(seed=0), "sha256"
    )
    summary = (Path(config["results"]) / "summary.md").read_text()
    assert "Hyper-parameter search (OpenOOD's automatic mode)" in summary
    assert "searched: k in [1, 5, 20], by AUROC on openood-cifar10-val" in summary
    assert "| msp | cached features | none |" in summary
