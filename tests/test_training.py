"""Training: same seed → same weights, and a killed run resumes to the identical result."""

import numpy as np
import pandas as pd
import pytest
import torch

from oodrepro import augmentation, devices, inference, models, training

pytestmark = pytest.mark.fits  # trains or fits, then asserts: CI runs it under two roundings

SPEC = {"arch": "resnet18", "num_classes": 3, "width": 0.0625, "normalization": "half"}
RECIPE = {
    "epochs": 4,
    "batch_size": 16,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": {"kind": "step", "milestones": [2, 3], "gamma": 0.1},
    "augment": {"crop_padding": 2, "flip": True},
}


@pytest.fixture
def toy():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, 40)


def run(tmp, images, labels, keep=None, **kw):
    tmp.mkdir(exist_ok=True)
    return training.train_backbone(
        SPEC,
        images,
        labels,
        RECIPE,
        tmp / "m.pt",
        tmp / "state.pt",
        tmp / "log.csv",
        keep=keep,
        seed=7,
        device="cpu",
        progress=False,
        **kw,
    )


def weights(path):
    return models.load_model(path, spec=SPEC).state_dict()


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_seed_same_weights(tmp_path, toy):
    run(tmp_path / "a", *toy)
    run(tmp_path / "b", *toy)
    assert_same(weights(tmp_path / "a" / "m.pt"), weights(tmp_path / "b" / "m.pt"))


def test_resume_after_kill_gives_the_uninterrupted_weights(tmp_path, toy, monkeypatch):
    run(tmp_path / "full", *toy, keep={"middle": (2, tmp_path / "full" / "mid.pt")})

    real_lr_at = training.lr_at

    def killed_at_epoch_3(epoch, recipe):
        if epoch == 2:
            raise KeyboardInterrupt("killed")
        return real_lr_at(epoch, recipe)

    monkeypatch.setattr(training, "lr_at", killed_at_epoch_3)
    keep = {"middle": (2, tmp_path / "resumed" / "mid.pt")}
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", *toy, keep=keep)
    assert not (tmp_path / "resumed" / "m.pt").exists()  # nothing that looks finished
    assert (tmp_path / "resumed" / "state.pt").exists()
    monkeypatch.setattr(training, "lr_at", real_lr_at)
    run(tmp_path / "resumed", *toy, keep=keep)

    assert_same(weights(tmp_path / "full" / "m.pt"), weights(tmp_path / "resumed" / "m.pt"))
    assert_same(weights(tmp_path / "full" / "mid.pt"), weights(tmp_path / "resumed" / "mid.pt"))
    assert not (tmp_path / "resumed" / "state.pt").exists()
    log = pd.read_csv(tmp_path / "resumed" / "log.csv")
    assert list(log["epoch"]) == [1, 2, 3, 4]
    assert list(log["lr"]) == pytest.approx([0.05, 0.05, 0.005, 0.0005])  # MultiStepLR semantics


def test_kept_checkpoint_differs_from_final(tmp_path, toy):
    run(tmp_path, *toy, keep={"middle": (2, tmp_path / "mid.pt")})
    mid, final = weights(tmp_path / "mid.pt"), weights(tmp_path / "m.pt")
    assert any(not torch.equal(mid[k], final[k]) for k in mid)
    assert torch.load(tmp_path / "mid.pt", weights_only=True)["epoch"] == 2


def colour_toy():
    """The class is the brightest colour channel. Pixel noise keeps every feature's batch
    variance well above zero: with identical images per class, BatchNorm divides by a variance
    of float rounding, and on some CPUs a run diverged (AMD EPYC, 2 threads)."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, 60)
    images = rng.integers(0, 96, (60, 32, 32, 3), dtype=np.uint8)
    for i, y in enumerate(labels):
        images[i, :, :, y] += 160
    return images, labels


def test_training_learns_a_separable_toy_problem(tmp_path):
    # float32: whether bf16 learns this depends on the CPU's bf16 kernels (AMX, AVX512-BF16,
    # emulated)
    images, labels = colour_toy()
    recipe = {**RECIPE, "epochs": 10, "schedule": {"kind": "cosine"}, "bf16": False}
    model = training.train_backbone(
        SPEC,
        images,
        labels,
        recipe,
        tmp_path / "m.pt",
        tmp_path / "s.pt",
        tmp_path / "l.csv",
        seed=0,
        device="cpu",
        progress=False,
    )
    with torch.no_grad():
        pred = model(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
    # chance is 1/3; an image or two near the boundary goes either way with the CPU's rounding
    # (BatchNorm's running statistics lag the last batches: 59 or 60 of 60 on the CPUs seen)
    assert (pred == labels).mean() >= 0.9
    losses = pd.read_csv(tmp_path / "l.csv")["loss"]
    assert losses.iloc[-1] < losses.iloc[0] / 4, losses.tolist()


def test_bf16_training_runs_the_network_in_bf16_with_a_float32_loss(tmp_path, monkeypatch):
    images, labels = colour_toy()
    seen = []
    real = torch.nn.functional.cross_entropy

    def recording(logits, y, *args, **kwargs):
        seen.append(logits.dtype)
        return real(logits, y, *args, **kwargs)

    model = models.build(**SPEC)
    conv_dtypes = []
    model.stem[0].register_forward_hook(lambda m, i, o: conv_dtypes.append(o.dtype))
    monkeypatch.setattr(training.F, "cross_entropy", recording)
    recipe = {**RECIPE, "epochs": 1, "bf16": True}
    history = training.Run(
        model,
        model.parameters(),
        images,
        labels,
        recipe,
        tmp_path / "s.pt",
        tmp_path / "l.csv",
        progress=False,
    ).fit()
    assert set(conv_dtypes) == {torch.bfloat16} and set(seen) == {torch.float32}
    assert np.isfinite(history[0]["loss"])
    assert all(
        p.dtype == torch.float32 for p in model.parameters()
    )  # autocast: weights stay float32


def test_schedules():
    assert training.lr_at(0, RECIPE) == 0.05
    assert training.lr_at(2, RECIPE) == pytest.approx(0.005)
    cos = {"lr": 1.0, "epochs": 10, "batch_size": 2, "schedule": {"kind": "cosine"}}
    assert training.lr_at(0, cos) == 1.0 and training.lr_at(5, cos) == pytest.approx(0.5)


def test_augment_crops_and_flips_whole_batches():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    gen = torch.Generator().manual_seed(0)
    out = augmentation.augment(x, padding=0, flip=True, gen=gen)
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(2))
    shifted = augmentation.augment(x, padding=2, flip=False, gen=torch.Generator().manual_seed(3))
    assert shifted.shape == x.shape
    # each output is a window of the zero-padded input
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        assert any(
            torch.equal(shifted[i], padded[i, :, dy : dy + 8, dx : dx + 8])
            for dy in range(5)
            for dx in range(5)
        )


def test_best_on_test_checkpoint_keeps_the_best_epoch_after_the_first(tmp_path, toy):
    images, labels = toy
    recipe = {**RECIPE, "checkpoint": "best_test"}
    model = training.train_backbone(
        SPEC,
        images,
        labels,
        recipe,
        tmp_path / "m.pt",
        tmp_path / "s.pt",
        tmp_path / "l.csv",
        seed=7,
        device="cpu",
        progress=False,
        test=(images[:20], labels[:20]),
    )
    log = pd.read_csv(tmp_path / "l.csv")
    best_row = log["test_accuracy"].iloc[1:].idxmax()  # first epoch excluded; ties → the earliest
    assert torch.load(tmp_path / "m.pt", weights_only=True)["epoch"] == log.loc[best_row, "epoch"]
    assert inference.accuracy_fraction(model, images[:20], labels[:20]) == pytest.approx(
        log["test_accuracy"][1:].max()
    )
    with pytest.raises(ValueError, match="test set"):
        training.train_backbone(
            SPEC,
            images,
            labels,
            recipe,
            tmp_path / "x.pt",
            tmp_path / "xs.pt",
            tmp_path / "xl.csv",
            device="cpu",
            progress=False,
        )


def test_bf16_auto_means_cuda_only_whatever_the_cpu(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert (
        devices.use_bf16("auto", cuda)
        and devices.use_bf16(True, cpu)
        and not devices.use_bf16(False, cuda)
    )
    for native in (
        False,
        True,
    ):  # a CPU with or without AMX / AVX512-BF16 trains the same config the same way
        monkeypatch.setattr(
            torch.cpu, "_is_avx512_bf16_supported", lambda n=native: n, raising=False
        )
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda n=native: n, raising=False)
        assert not devices.use_bf16("auto", cpu)


def test_channels_last_only_where_it_is_safe():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    narrow, wide = (
        models.build(**SPEC),
        models.build(**{**SPEC, "width": 0.25}),
    )  # 4 vs 16 stem channels
    assert not devices.use_channels_last(narrow, cpu) and devices.use_channels_last(wide, cpu)
    assert devices.use_channels_last(narrow, cuda)


def test_odd_batches_of_a_narrow_network_train(tmp_path):
    # 19 = 16 + 3 images: odd last batches, as trigger mixing makes them; crashed oneDNN in
    # channels-last
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (19, 32, 32, 3), dtype=np.uint8), rng.integers(0, 3, 19)
    model = models.build(**SPEC)
    history = training.Run(
        model,
        model.parameters(),
        images,
        labels,
        {**RECIPE, "epochs": 6},
        tmp_path / "s.pt",
        tmp_path / "l.csv",
        progress=False,
    ).fit()
    assert len(history) == 6 and all(np.isfinite(h["loss"]) for h in history)
