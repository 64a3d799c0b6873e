"""A resumable state continues only the job that wrote it.

For every kind of trainer (backbone, null model, fine-tune, watermark learning, trigger
embedding, attack): a run killed after its first epoch, then rerun with one setting changed,
must discard the old state (saying so) and end exactly where a clean run with the new
setting ends; rerun unchanged, it resumes.
"""

import logging

import numpy as np
import pytest
import torch

from oodrepro import models, resume, training, unleashing_mask, watermark_ood, watermarknn
from oodrepro.data import offline

pytestmark = pytest.mark.fits  # trains or fits, then asserts: CI runs it under two roundings

SPEC = {"arch": "resnet18", "num_classes": 4, "width": 0.0625, "normalization": "half"}
RECIPE = {
    "epochs": 3,
    "batch_size": 16,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "bf16": False,
    "schedule": {"kind": "cosine"},
    "augment": {"crop_padding": 2, "flip": True},
}
WATERMARK = {
    "objective": "msp",
    "alpha": 0.01,
    "sigma": 0.4,
    "rho": 1.0,
    "beta": 3.5,
    "epochs": 3,
    "decay_epoch": 2,
    "batch_size": 16,
    "flip": False,
    "epsilon": None,
    "bf16": False,
}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8), rng.integers(0, 4, 40)
    training.train_backbone(
        SPEC,
        x,
        y,
        {**RECIPE, "epochs": 1},
        tmp / "base.pt",
        tmp / "s.pt",
        tmp / "l.csv",
        device="cpu",
        progress=False,
    )
    triggers = offline.abstract_triggers(8, seed=3, classes=4)
    return tmp, x, y, triggers


def backbone(toy, out, lr=0.05, seed=0, images=None):
    _, x, y, _ = toy
    training.train_backbone(
        SPEC,
        x if images is None else images,
        y,
        {**RECIPE, "lr": lr},
        out / "m.pt",
        out / "state.pt",
        out / "log.csv",
        seed=seed,
        device="cpu",
        progress=False,
    )
    return torch.load(out / "m.pt", weights_only=True)["state_dict"]


def null_model(toy, out, seed=100):
    return backbone(toy, out, seed=seed)


def finetune(toy, out, level=0.3):
    tmp, x, y, _ = toy
    unleashing_mask.finetune(
        tmp / "base.pt",
        x,
        y,
        RECIPE,
        out / "m.pt",
        out / "state.pt",
        out / "log.csv",
        level=level,
        device="cpu",
        progress=False,
        spec=SPEC,
    )
    return torch.load(out / "m.pt", weights_only=True)["state_dict"]


def watermark(toy, out, alpha=0.01):
    tmp, x, y, _ = toy
    model = models.load_model(tmp / "base.pt", spec=SPEC)
    return {
        "w": watermark_ood.learn(
            model,
            x,
            y,
            {**WATERMARK, "alpha": alpha},
            out / "state.pt",
            out / "log.csv",
            device="cpu",
            progress=False,
        )
    }


def embed(toy, out, per_batch=2):
    _, x, y, triggers = toy
    watermarknn.embed(
        SPEC,
        x,
        y,
        triggers,
        RECIPE,
        per_batch=per_batch,
        out=out / "m.pt",
        state_path=out / "state.pt",
        log_csv=out / "log.csv",
        marking_out=out / "mk.npz",
        verification_out=out / "vk.json",
        seed=0,
        device="cpu",
        progress=False,
    )
    return torch.load(out / "m.pt", weights_only=True)["state_dict"]


def attack(toy, out, kind="ftal"):
    tmp, x, y, triggers = toy
    watermarknn.attack(
        tmp / "base.pt",
        kind,
        x,
        y,
        recipe=RECIPE,
        out=out / "m.pt",
        state_path=out / "state.pt",
        log_csv=out / "log.csv",
        triggers=triggers,
        test=(x, y),
        seed=0,
        device="cpu",
        progress=False,
        spec=SPEC,
    )
    return torch.load(out / "m.pt", weights_only=True)["state_dict"]


# trainer, the setting changed between the killed run and the rerun
CASES = {
    "backbone, lr": (backbone, {"lr": 0.01}),
    "backbone, data": (backbone, {"images": "shuffled"}),
    "null model, seed": (null_model, {"seed": 101}),
    "fine-tune, UM level": (finetune, {"level": 0.5}),
    "watermark, alpha": (watermark, {"alpha": 0.02}),
    "trigger embedding, triggers per batch": (embed, {"per_batch": 3}),
    "attack, kind": (attack, {"kind": "rtal"}),
}


def killed_after_first_epoch(monkeypatch):
    real = resume.save

    def save_then_die(path, fingerprint, state):
        real(path, fingerprint, state)
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(resume, "save", save_then_die)
    return real


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("case", CASES)
def test_a_changed_job_discards_the_old_state_and_starts_over(
    case, toy, tmp_path, monkeypatch, caplog
):
    trainer, changed = CASES[case]
    if changed.get("images") == "shuffled":
        changed = {"images": toy[1][::-1].copy()}
    (tmp_path / "clean").mkdir()
    clean = trainer(toy, tmp_path / "clean", **changed)

    work = tmp_path / "work"
    work.mkdir()
    real = killed_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        trainer(toy, work)  # the old job, killed after epoch 1
    assert (work / "state.pt").exists()
    monkeypatch.setattr(resume, "save", real)
    with caplog.at_level(logging.INFO, logger="oodrepro.resume"):
        rerun = trainer(toy, work, **changed)
    assert "discarding" in caplog.text and "different job" in caplog.text
    assert_same(rerun, clean)


@pytest.mark.parametrize("case", CASES)
def test_the_same_job_resumes(case, toy, tmp_path, monkeypatch, caplog):
    trainer, _ = CASES[case]
    (tmp_path / "clean").mkdir()
    clean = trainer(toy, tmp_path / "clean")
    work = tmp_path / "work"
    work.mkdir()
    real = killed_after_first_epoch(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        trainer(toy, work)
    monkeypatch.setattr(resume, "save", real)
    with caplog.at_level(logging.INFO, logger="oodrepro.resume"):
        resumed = trainer(toy, work)
    assert "resuming" in caplog.text and "discarding" not in caplog.text
    assert_same(resumed, clean)


def test_a_state_without_fingerprint_is_not_trusted(tmp_path, toy):
    (tmp_path / "old").mkdir()
    torch.save(
        {"epoch": 1, "history": []}, tmp_path / "old" / "state.pt"
    )  # written before fingerprints
    assert resume.load(tmp_path / "old" / "state.pt", "abc") is None
    assert not (tmp_path / "old" / "state.pt").exists()


def test_fingerprints_follow_values_not_identity():
    a = {
        "recipe": {"lr": 0.05, "epochs": 3},
        "x": np.arange(6, dtype=np.uint8),
        "w": torch.ones(2, 2),
    }
    b = {
        "recipe": {"epochs": 3, "lr": 0.05},
        "x": np.arange(6, dtype=np.uint8),
        "w": torch.ones(2, 2),
    }
    assert resume.fingerprint(**a) == resume.fingerprint(**b)  # key order does not matter
    assert resume.fingerprint(**a) != resume.fingerprint(**{**a, "x": np.arange(6, dtype=np.int64)})
    assert resume.fingerprint(**a) != resume.fingerprint(
        **{**a, "w": torch.ones(2, 2).T.contiguous() * 2}
    )
    assert resume.fingerprint(**a) != resume.fingerprint(
        **{**a, "recipe": {"lr": 0.01, "epochs": 3}}
    )


def test_progress_is_one_log_line_per_tenth_never_a_carriage_return(caplog):
    import logging

    from oodrepro.progress import count, tenths

    with caplog.at_level(logging.INFO, logger="oodrepro.progress"):
        assert list(tenths(range(37), desc="batches", unit="b")) == list(range(37))
        add = count(5_000_000, desc="blob.bin")
        for _ in range(50):
            add(100_000)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 20 and not any("\r" in line for line in lines)
    assert lines[0].startswith("batches: 4/37 b (10 %)") and lines[9].startswith("batches: 37/37")
    assert lines[-1].startswith("blob.bin: 5/5 MB (100 %)")
