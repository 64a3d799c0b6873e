"""Watermarking for OOD: the update step by hand, the losses, a frozen network, the variant."""

import numpy as np
import pytest
import torch

from oodrepro import models, scores, watermark_ood

pytestmark = pytest.mark.fits  # trains or fits, then asserts: CI runs it under two roundings


def test_sam_sign_step_by_hand():
    c = torch.tensor([1.0, -2.0, 0.5]).view(1, 3, 1, 1)
    w = torch.tensor([0.0, 0.0, 0.4]).view(1, 3, 1, 1)

    def loss_at(v):
        return 0.5 * ((v - c) ** 2).sum()

    rho, alpha = 3.0, 0.1
    g1 = w - c  # ∇L(w) = (−1, 2, −0.1)
    sam_point = w + rho * g1 / g1.norm()  # ≈ (−1.4928, 2.9857, 0.2507)
    g2 = sam_point - c  # ≈ (−2.49, 4.99, −0.25): signs (−, +, −)
    new_w, value = watermark_ood.sam_sign_step(w, loss_at, rho, alpha)
    assert torch.allclose(new_w, w - alpha * g2.sign())
    assert torch.allclose(new_w.flatten(), torch.tensor([0.1, -0.1, 0.5]))
    assert value == pytest.approx(0.5 * (1 + 4 + 0.01))


def test_sign_is_taken_at_the_sam_point_not_at_w():
    # L = cos(v): at w = 0.4 the gradient −sin(0.4) < 0 says "go up"; the ascent of ρ = 1 along
    # it reaches −0.6, where −sin(−0.6) > 0 says "go down": the step must go down, to 0.39
    def loss_at(v):
        return torch.cos(v).sum()

    new_w, _ = watermark_ood.sam_sign_step(torch.full((1, 1), 0.4), loss_at, rho=1.0, alpha=0.01)
    assert new_w.item() == pytest.approx(0.39)


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = models.build("resnet18", num_classes=4, width=0.0625, normalization="half").eval()
    z_id = torch.randn(6, 3, 32, 32)
    return model, z_id, torch.randint(0, 4, (6,)), 0.4 * torch.randn(6, 3, 32, 32)


def test_losses_against_direct_formulas(tiny):
    model, z_id, y, z_noise = tiny
    w = 0.1 * torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        f_id, f_n = model.forward_normalized(z_id + w), model.forward_normalized(z_noise + w)
        ce = torch.nn.functional.cross_entropy(f_id, y)
        oe = (-torch.log_softmax(f_n, 1).mean(1)).mean()  # CE to the uniform distribution
        msp = watermark_ood.loss(model, z_id, y, z_noise, w, objective="msp", beta=3.5)
        assert msp.item() == pytest.approx((ce + 3.5 * oe).item(), rel=1e-5)
        energy = watermark_ood.loss(
            model, z_id, y, z_noise, w, objective="energy", beta=0.1, t_in=0.2, t_out=0.7
        )
        penalty = torch.exp(0.7 * f_n).mean() + torch.exp(-0.2 * f_id).mean()
        assert energy.item() == pytest.approx((ce + 0.1 * penalty).item(), rel=1e-5)
    with pytest.raises(FloatingPointError, match="overflow"):
        watermark_ood.loss(
            model, z_id, y, z_noise * 1e6, w, objective="energy", beta=1.0, t_in=1.0, t_out=1e6
        )


PARAMS = {
    "objective": "msp",
    "alpha": 0.01,
    "sigma": 0.4,
    "rho": 1.0,
    "beta": 3.5,
    "epochs": 3,
    "decay_epoch": 2,
    "batch_size": 8,
    "flip": True,
    "epsilon": None,
}


def _data():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), rng.integers(0, 4, 20)


def test_learning_never_changes_the_network(tmp_path, tiny):
    model = tiny[0]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    w = watermark_ood.learn(
        model, *_data(), PARAMS, tmp_path / "s.pt", tmp_path / "l.csv", device="cpu", progress=False
    )
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included
    assert not model.training
    # 3 epochs × 3 steps (8 + 8 + 4 images): every pixel moves by ±α per step, α = 0.01 for
    # two epochs then 0.001, so |w| ≤ 0.063 and w lies on the 0.001 lattice
    assert (w.abs() <= 0.063 + 1e-6).all() and w.abs().max() > 0
    assert torch.allclose(w / 0.001, (w / 0.001).round(), atol=1e-3)
    log = __import__("pandas").read_csv(tmp_path / "l.csv")
    assert list(log["alpha"]) == pytest.approx([0.01, 0.01, 0.001])


def test_resume_gives_the_same_watermark(tmp_path, tiny, monkeypatch):
    model = tiny[0]
    full = watermark_ood.learn(
        model, *_data(), PARAMS, tmp_path / "a.pt", tmp_path / "a.csv", device="cpu", progress=False
    )
    real = watermark_ood.sam_sign_step
    calls = {"n": 0}

    def dies_in_epoch_3(*a, **k):
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(watermark_ood, "sam_sign_step", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        watermark_ood.learn(
            model,
            *_data(),
            PARAMS,
            tmp_path / "b.pt",
            tmp_path / "b.csv",
            device="cpu",
            progress=False,
        )
    monkeypatch.setattr(watermark_ood, "sam_sign_step", real)
    resumed = watermark_ood.learn(
        model, *_data(), PARAMS, tmp_path / "b.pt", tmp_path / "b.csv", device="cpu", progress=False
    )
    assert torch.equal(full, resumed)


def test_epsilon_budget_is_an_option(tmp_path, tiny):
    w = watermark_ood.learn(
        tiny[0],
        *_data(),
        {**PARAMS, "epsilon": 0.015},
        tmp_path / "s.pt",
        tmp_path / "l.csv",
        device="cpu",
        progress=False,
    )
    assert w.abs().max().item() <= 0.015 + 1e-7


def test_watermarked_variant_scores_on_watermarked_inputs(tmp_path, tiny):
    model = tiny[0]
    spec = {"arch": "resnet18", "num_classes": 4, "width": 0.0625, "normalization": "half"}
    models.save_model(tmp_path / "base.pt", model, spec)
    w = 0.3 * torch.randn(1, 3, 32, 32)
    watermark_ood.save_watermarked(tmp_path / "wm.pt", tmp_path / "base.pt", w, PARAMS)
    marked = models.load_model(tmp_path / "wm.pt", spec={**spec, "watermark": True})
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(
            marked(x), model.forward_normalized(model.normalize(x) + w), atol=1e-5
        )
        assert not torch.allclose(marked(x), model(x))
    images = (np.random.default_rng(1).random((3, 32, 32, 3)) * 255).astype(np.uint8)
    odin_marked = scores.get("odin").score(marked, images, progress=False)
    assert odin_marked.shape == (3,)
