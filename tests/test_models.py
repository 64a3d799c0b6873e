"""Backbones: output and per-block shapes, normalisation inside, checkpoint round trip."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from oodrepro import models
from oodrepro.data import standins

# (arch, kwargs, number of blocks, last block's shape at width 1 for 32×32 input)
CASES = [
    ("resnet18", {}, 8, (512, 4, 4)),
    ("resnet34", {}, 16, (512, 4, 4)),
    ("wrn40_2", {}, 18, (128, 8, 8)),
    ("densenet100", {}, 5, (342, 8, 8)),
    ("vgg16_bn", {}, 13, (512, 1, 1)),
]


@pytest.mark.parametrize("arch,kwargs,n_blocks,last", CASES)
def test_full_width_shapes(arch, kwargs, n_blocks, last):
    torch.manual_seed(0)
    model = models.build(arch, num_classes=7, **kwargs).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32), return_blocks=True)
    assert out.logits.shape == (2, 7)
    assert len(out.blocks) == n_blocks == len(model.block_names)
    assert tuple(out.blocks[-1].shape[1:]) == last
    assert out.penultimate.shape == (2, model.fc.in_features)
    assert torch.allclose(model.fc(out.penultimate), out.logits, atol=1e-5)


def test_parameter_counts_match_the_papers_architectures():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert abs(count(models.build("resnet18")) - 11.17e6) < 0.05e6
    assert abs(count(models.build("wrn40_2")) - 2.24e6) < 0.05e6
    assert abs(count(models.build("densenet100")) - 0.77e6) < 0.03e6


@pytest.mark.parametrize("arch", list(models.MODELS))
def test_width_shrinks_every_block(arch):
    small = models.build(arch, width=0.25)
    big = models.build(arch)
    with torch.no_grad():
        s = small(torch.rand(1, 3, 32, 32), return_blocks=True)
        b = big(torch.rand(1, 3, 32, 32), return_blocks=True)
    for bs, bb in zip(s.blocks, b.blocks, strict=True):
        assert bs.shape[1] < bb.shape[1] and bs.shape[2:] == bb.shape[2:]


def test_resnet_stem_padding_two_gives_featurenorm_sizes():
    model = models.build("resnet18", stem_padding=2)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 32, 32), return_blocks=True)
    assert [tuple(b.shape[2:]) for b in out.blocks[::2]] == [(34, 34), (17, 17), (9, 9), (5, 5)]


def test_normalisation_happens_inside_the_model():
    model = models.build("resnet18", width=0.25, normalization="hendrycks-cifar").eval()
    x = torch.rand(2, 3, 32, 32)
    mean, std = models.NORMALIZATIONS["hendrycks-cifar"]
    z = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), model.forward_normalized(z), atol=1e-6)


def test_densenet_non_affine_bn_has_no_bn_parameters():
    model = models.build("densenet100", affine_bn=False, dropout=0.3)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(m.weight is None for m in bns)


def test_checkpoint_round_trip(tmp_path):
    spec = {"arch": "wrn40_2", "num_classes": 3, "width": 0.5, "normalization": "half"}
    model = models.build(**spec).eval()
    models.save_model(tmp_path / "m.pt", model, spec)
    loaded = models.load_model(tmp_path / "m.pt", spec=spec)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_missing_checkpoint_is_an_error_not_a_random_init(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        models.load_model(tmp_path / "absent.pt", spec=None)


def test_unknown_architecture():
    with pytest.raises(KeyError, match="unknown architecture"):
        models.build("resnet9000")


def test_hendrycks_wrn_checkpoint_imports_strictly(tmp_path):
    spec = {
        "arch": "wrn40_2",
        "num_classes": 10,
        "dropout": 0.3,
        "normalization": "hendrycks-cifar",
    }
    torch.manual_seed(0)
    source = models.build(**spec).eval()
    released = standins.to_hendrycks_wrn_keys(source.state_dict(), per_stage=6)
    assert (
        "block3.layer.5.conv2.weight" in released
        and "block2.layer.0.convShortcut.weight" in released
    )
    assert "bn1.running_mean" in released and "fc.weight" in released
    torch.save(released, tmp_path / "cifar10_wrn_pretrained_epoch_99.pt")
    models.import_pretrained(
        tmp_path / "cifar10_wrn_pretrained_epoch_99.pt", tmp_path / "base.pt", spec, "hendrycks-wrn"
    )
    loaded = models.load_model(tmp_path / "base.pt", spec=spec)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))
    del released["fc.bias"]
    torch.save(released, tmp_path / "broken.pt")
    with pytest.raises(KeyError, match=r"1 of the model's weights missing \['fc.bias'\]"):
        models.import_pretrained(tmp_path / "broken.pt", tmp_path / "x.pt", spec, "hendrycks-wrn")
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize(
    "impostor",
    [
        {
            "arch": "resnet18",
            "num_classes": 3,
            "width": 0.5,
            "normalization": "half",
        },  # another width
        {
            "arch": "vgg16_bn",
            "num_classes": 3,
            "width": 0.25,
            "normalization": "half",
        },  # another architecture
        {
            "arch": "resnet18",
            "num_classes": 3,
            "width": 0.25,
            "normalization": "imagenet",
        },  # same weights' shapes
    ],
)
def test_a_checkpoint_that_is_not_the_configured_model_is_refused(tmp_path, impostor):
    wanted = {"arch": "resnet18", "num_classes": 3, "width": 0.25, "normalization": "half"}
    models.save_model(tmp_path / "base.pt", models.build(**impostor), impostor)
    with pytest.raises(models.CheckpointMismatch) as err:
        models.load_model(tmp_path / "base.pt", spec=wanted)
    said = str(err.value)
    assert (
        "base.pt holds a" in said
        and "the config asks for a resnet18" in said
        and "Delete the file" in said
    )
    differ = [k for k in wanted if impostor[k] != wanted[k]]
    assert f"differs in: {', '.join(differ)}" in said
    models.load_model(tmp_path / "base.pt", spec=impostor)  # what it is, it loads as


def test_a_watermarked_variant_must_be_watermarked(tmp_path):
    spec = {"arch": "resnet18", "num_classes": 3, "width": 0.25, "normalization": "half"}
    models.save_model(tmp_path / "plain.pt", models.build(**spec), spec)
    with pytest.raises(models.CheckpointMismatch, match="watermark"):
        models.load_model(tmp_path / "plain.pt", spec={**spec, "watermark": True})


UM_RELEASED = Path(__file__).parent / "data" / "unleashing-mask" / "pretrained_model.state"
UM_SPEC = {
    "arch": "densenet100",
    "num_classes": 10,
    "affine_bn": False,
    "dropout": 0.3,
    "normalization": "hendrycks-cifar",
}


def _official_densenet_forward(state: dict, x: torch.Tensor) -> torch.Tensor:
    """DenseNet-BC-100 in eval mode written straight from the official Unleashing Mask layout
    (`models/densenet.py`: conv1; block{1,2,3}.layer.{i} = BN → ReLU → conv1×1 → BN → ReLU →
    conv3×3, concatenated; trans{1,2} = BN → ReLU → conv1×1 → avg-pool 2; bn1 → ReLU →
    avg-pool 8 → fc; non-affine BN; Hendrycks' mean/std applied inside forward), over the
    released keys as they are."""
    w = {k.removeprefix("module."): v for k, v in state.items()}

    def bn(x, name):
        return F.batch_norm(x, w[f"{name}.running_mean"], w[f"{name}.running_var"], eps=1e-5)

    mean = torch.tensor([125.3, 123.0, 113.9]).view(1, 3, 1, 1) / 255  # as the official code
    std = torch.tensor([63.0, 62.1, 66.7]).view(1, 3, 1, 1) / 255
    out = F.conv2d((x - mean) / std, w["conv1.weight"], padding=1)
    for block in (1, 2, 3):
        i = 0
        while f"block{block}.layer.{i}.conv1.weight" in w:
            p = f"block{block}.layer.{i}"
            y = F.conv2d(F.relu(bn(out, f"{p}.bn1")), w[f"{p}.conv1.weight"])
            y = F.conv2d(F.relu(bn(y, f"{p}.bn2")), w[f"{p}.conv2.weight"], padding=1)
            out, i = torch.cat([out, y], 1), i + 1
        if block < 3:
            t = f"trans{block}"
            out = F.avg_pool2d(F.conv2d(F.relu(bn(out, f"{t}.bn1")), w[f"{t}.conv1.weight"]), 2)
    out = F.avg_pool2d(F.relu(bn(out, "bn1")), 8).flatten(1)
    return F.linear(out, w["fc.weight"], w["fc.bias"])


def test_the_unleashing_mask_authors_released_densenet_imports_whole(tmp_path):
    """The real file the authors released: loaded with weights_only=True, every key mapped with
    its shape, nothing missing or left over, its fields checked and kept, 745,174 parameters,
    and the same logits as the official layout computes from the file itself."""
    released = torch.load(UM_RELEASED, map_location="cpu", weights_only=True)
    assert len(released["state_dict"]) == 398
    mapped = models.unleashing_mask_keys(released["state_dict"])
    ours = models.build(**UM_SPEC).state_dict()
    assert set(mapped) == set(ours)
    assert all(mapped[k].shape == ours[k].shape for k in ours)

    model = models.import_pretrained(UM_RELEASED, tmp_path / "base.pt", UM_SPEC, "unleashing-mask")
    assert sum(p.numel() for p in model.parameters()) == 745_174
    saved = torch.load(tmp_path / "base.pt", map_location="cpu", weights_only=True)
    assert saved["released"] == {
        "arch": "DenseNet",
        "epoch": 100,
        "best_train_acc1": 99.976,
        "best_train_acc5": 100.0,
    }
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = models.load_model(tmp_path / "base.pt", spec=UM_SPEC)(x)
        official = _official_densenet_forward(released["state_dict"], x)
    torch.testing.assert_close(logits, official, rtol=1e-4, atol=1e-4)


def test_a_checkpoint_of_another_kind_is_refused_by_its_fields(tmp_path):
    released = torch.load(UM_RELEASED, map_location="cpu", weights_only=True)
    torch.save({**released, "arch": "WideResNet"}, tmp_path / "other.state")
    with pytest.raises(KeyError, match="arch is 'WideResNet', expected 'DenseNet'"):
        models.import_pretrained(
            tmp_path / "other.state", tmp_path / "x.pt", UM_SPEC, "unleashing-mask"
        )
    assert not (tmp_path / "x.pt").exists()
