"""Unleashing Mask and outlier exposure: the flooding loss, the random and learned masks, the
straight-through gradient, each OE-family loss on hand-made logits, POEM's selection, and
fine-tuning end to end on a toy problem (resumable, never from a random init)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from oodrepro import models, outlier_exposure, training, unleashing_mask

pytestmark = pytest.mark.fits  # trains or fits, then asserts: CI runs it under two roundings

SPEC = {"arch": "resnet18", "num_classes": 4, "width": 0.0625, "normalization": "half"}
RECIPE = {
    "epochs": 2,
    "batch_size": 16,
    "lr": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "schedule": {"kind": "cosine"},
    "augment": {"crop_padding": 2, "flip": True},
}


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("um")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8), rng.integers(0, 4, 48)
    training.train_backbone(
        SPEC,
        x,
        y,
        RECIPE,
        tmp / "base.pt",
        tmp / "s.pt",
        tmp / "l.csv",
        device="cpu",
        progress=False,
    )
    outliers = rng.integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    return tmp, x, y, outliers


def test_flooding_gradient_flips_sign_below_the_constraint():
    for ce_value, sign in [(0.5, 1.0), (0.1, -1.0)]:
        ce = torch.tensor(ce_value, requires_grad=True)
        loss = unleashing_mask.flooding(ce, level=0.2, beta=1.0)
        loss.backward()
        assert ce.grad.item() == sign  # descent above UM, ascent below
        assert loss.item() == pytest.approx(abs(ce_value - 0.2) + 0.2)
    ce = torch.tensor(0.5, requires_grad=True)
    unleashing_mask.flooding(ce, level=0.2, beta=2.0).backward()
    assert ce.grad.item() == 2.0


def test_random_mask_drops_exactly_the_requested_fraction_of_every_layer():
    torch.manual_seed(0)
    model = models.build(**SPEC)
    for _, m in unleashing_mask.prunable(model):
        torch.nn.init.uniform_(m.weight, 0.1, 1.0)  # no weight starts at zero
    unleashing_mask.random_mask(model, 0.965, torch.Generator().manual_seed(0))
    layers = unleashing_mask.prunable(model)
    assert [n for n, _ in layers][0] == "stem.0" and layers[-1][
        0
    ] == "fc"  # first conv and classifier too
    for _, m in layers:
        assert (m.weight == 0).sum().item() == math.floor(0.035 * m.weight.numel() + 1e-9)


def test_score_mask_keeps_the_top_fraction_and_passes_the_gradient_straight_through():
    torch.manual_seed(0)
    model = models.build(**SPEC)
    weights = {n: m.weight.detach().clone() for n, m in unleashing_mask.prunable(model)}
    params = unleashing_mask.attach_score_masks(model, keep=0.8)
    assert len(params) == len(weights) and all(p.requires_grad for p in params)
    assert not any(
        p.requires_grad for n, p in model.named_parameters() if "scores" not in n
    )  # weights frozen
    for _, m in unleashing_mask.prunable(model):
        mask = m.parametrizations.weight[0].mask()
        n = mask.numel()
        assert mask.sum().item() == n - math.floor(0.2 * n + 1e-9)
        scores = m.parametrizations.weight[0].scores
        kept_min = scores.abs()[mask.bool()].min()
        assert (scores.abs()[~mask.bool()] <= kept_min).all()  # the top-k by |S|
        bound = 1 / math.sqrt(scores[0].numel())
        assert scores.abs().max() <= bound + 1e-6  # Kaiming-uniform a=√5: U(±1/√fan_in)
    fc = model.fc
    x = torch.rand(4, 3, 32, 32)
    with (
        torch.nn.utils.parametrize.cached()
    ):  # one W ⊙ m(S) tensor, shared by forward and the check
        effective = fc.weight
        effective.retain_grad()
        model(x).sum().backward()
    s = fc.parametrizations.weight[0].scores
    expected = effective.grad * weights["fc"] * torch.sign(s)
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert torch.allclose(s.grad, expected, atol=1e-7)


def test_score_masks_are_drawn_from_the_seed_not_the_global_generator():
    """UMAP's starting scores were drawn from the process's global RNG: two runs of one config
    learned different masks, and a resumed fine-tune never matched its own state."""

    def scores(seed, global_seed):
        torch.manual_seed(global_seed)
        model = models.build(**SPEC)
        torch.manual_seed(global_seed + 1)  # whatever ran before in the process
        unleashing_mask.attach_score_masks(model, keep=0.8, seed=seed)
        return [
            m.parametrizations.weight[0].scores.detach() for _, m in unleashing_mask.prunable(model)
        ]

    same = scores(seed=3, global_seed=0), scores(seed=3, global_seed=10)
    assert all(torch.equal(a, b) for a, b in zip(*same, strict=True))
    assert not torch.equal(scores(seed=4, global_seed=0)[0], same[0][0])


def test_baking_the_mask_leaves_an_ordinary_checkpoint():
    torch.manual_seed(0)
    model = models.build(**SPEC)
    unleashing_mask.attach_score_masks(model, keep=0.8)
    kept = unleashing_mask.bake_masks(model)
    assert set(model.state_dict()) == set(models.build(**SPEC).state_dict())
    assert all(0.79 <= k <= 0.82 for k in kept.values())


def test_oe_term_is_cross_entropy_to_uniform():
    z = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, -2.0]])
    expected = [
        math.log(3),
        math.log(math.exp(2) + 1 + math.exp(-2)),
    ]  # logsumexp − mean (mean = 0)
    assert outlier_exposure.oe_term(z).item() == pytest.approx(np.mean(expected))
    uniform_ce = -(torch.log_softmax(z, 1)).mean(1).mean()
    assert outlier_exposure.oe_term(z).item() == pytest.approx(uniform_ce.item())


def test_energy_term_hinges_on_both_margins():
    # E = −logsumexp(z); a single logit c gives E = −c
    z_in_ok, z_in_bad = (
        torch.tensor([[30.0]]),
        torch.tensor([[20.0]]),
    )  # E_in = −30 (ok), −20 (> −25 by 5)
    z_out_ok, z_out_bad = (
        torch.tensor([[5.0]]),
        torch.tensor([[10.0]]),
    )  # E_out = −5 (ok), −10 (< −7 by 3)
    assert outlier_exposure.energy_term(z_in_ok, z_out_ok, -25, -7).item() == 0
    assert outlier_exposure.energy_term(z_in_bad, z_out_ok, -25, -7).item() == pytest.approx(25.0)
    assert outlier_exposure.energy_term(z_in_ok, z_out_bad, -25, -7).item() == pytest.approx(9.0)
    both = outlier_exposure.energy_term(
        torch.cat([z_in_ok, z_in_bad]), torch.cat([z_out_ok, z_out_bad]), -25, -7
    )
    assert both.item() == pytest.approx(25.0 / 2 + 9.0 / 2)  # means over each side


def test_doe_proxy_loss_is_the_squared_logit_scale_sensitivity():
    z = torch.tensor([[1.0, 0.0, -1.0], [3.0, 1.0, 1.0]], requires_grad=True)
    # d/ds [mean_k s·z_k − logsumexp(s·z)] at s = 1 is mean_k z_k − Σ_k softmax(z)_k z_k
    p = torch.softmax(z.detach(), 1)
    g = (z.detach().mean(1) - (p * z.detach()).sum(1)).mean()
    loss = outlier_exposure.doe_proxy_loss(z)
    assert loss.item() == pytest.approx(g.item() ** 2, rel=1e-6)
    loss.backward()  # the double backward reaches the logits, hence the proxy's weights
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert outlier_exposure.doe_proxy_loss(torch.zeros(2, 4)).item() == pytest.approx(
        0.0
    )  # uniform: no pull


def test_poem_posterior_and_boundary_selection():
    rng = np.random.default_rng(0)
    phi_in = rng.normal(-1, 0.3, (200, 3))
    phi_out = rng.normal(1, 0.3, (200, 3))
    head = outlier_exposure.BayesianHead(sigma=20.0, sigma_n=0.5, target=3.9)
    mu, cov = head.posterior(phi_in, phi_out, eps=0.3)
    assert (phi_in @ mu).mean() < -3 and (phi_out @ mu).mean() > 3  # the head separates the two
    assert np.all(np.linalg.eigvalsh(cov) > 0)
    theta = np.array([1.0, 0.0, 0.0])
    pool = np.array([[5.0, 0, 0], [0.1, 9, 9], [-0.2, 0, 0], [-3.0, 0, 0]])
    assert list(outlier_exposure.boundary_outliers(theta, pool, 2)) == [1, 2]  # smallest |θᵀφ|


@pytest.mark.parametrize("method", ["oe", "energy-oe", "poem", "doe"])
def test_each_exposure_method_fine_tunes_and_resumes(base, method, tmp_path, monkeypatch):
    tmp, x, y, outliers = base
    exposure = {"method": method, "weight": 0.5 if method in ("oe", "doe") else 0.1, "warmup": 1}
    recipe = {**RECIPE, "epochs": 3}

    def run(folder, **kw):
        return unleashing_mask.finetune(
            tmp / "base.pt",
            x,
            y,
            recipe,
            folder / "m.pt",
            folder / "s.pt",
            folder / "log.csv",
            level=0.3,
            exposure=exposure,
            outliers=outliers,
            device="cpu",
            progress=False,
            seed=1,
            spec=SPEC,
            **kw,
        )

    (tmp_path / "a").mkdir()
    run(tmp_path / "a")
    ckpt = torch.load(tmp_path / "a" / "m.pt", weights_only=True)
    assert ckpt["finetune"]["exposure"] == method and ckpt["finetune"]["um_level"] == 0.3
    log = pd.read_csv(tmp_path / "a" / "log.csv")
    assert len(log) == 3 and np.isfinite(log["loss"]).all()

    real = training.lr_at

    def killed(epoch, r):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(epoch, r)

    (tmp_path / "b").mkdir()
    monkeypatch.setattr(training, "lr_at", killed)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b")
    monkeypatch.setattr(training, "lr_at", real)
    run(tmp_path / "b")
    a = torch.load(tmp_path / "a" / "m.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "m.pt", weights_only=True)["state_dict"]
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), (
            k
        )  # a resumed run ends where the uninterrupted one did


def test_um_and_umap_fine_tune_from_the_checkpoint_and_never_from_scratch(base, tmp_path):
    tmp, x, y, _ = base
    estimate = unleashing_mask.estimate_constraint(
        tmp / "base.pt", x, y, keep=0.965, draws=2, device="cpu", spec=SPEC
    )
    assert len(estimate["draws"]) == 2 and estimate["level"] == pytest.approx(
        np.mean(estimate["draws"])
    )
    assert estimate["draws"][0] != estimate["draws"][1]  # fresh mask per draw
    again = unleashing_mask.estimate_constraint(
        tmp / "base.pt", x, y, keep=0.965, draws=2, device="cpu", spec=SPEC
    )
    assert again["level"] == estimate["level"]  # seeded
    unleashing_mask.finetune(
        tmp / "base.pt",
        x,
        y,
        RECIPE,
        tmp_path / "umap.pt",
        tmp_path / "s.pt",
        tmp_path / "l.csv",
        level=estimate["level"],
        mask_keep=0.8,
        device="cpu",
        progress=False,
        spec=SPEC,
    )
    umap = torch.load(tmp_path / "umap.pt", weights_only=True)
    assert all(0.79 <= k <= 0.82 for k in umap["finetune"]["kept_fraction"].values())
    base_w = torch.load(tmp / "base.pt", weights_only=True)["state_dict"]
    w, w0 = umap["state_dict"]["fc.weight"], base_w["fc.weight"]
    assert torch.equal(w[w != 0], w0[w != 0])  # frozen weights: UMAP only chose which to keep
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        unleashing_mask.finetune(
            tmp / "missing.pt",
            x,
            y,
            RECIPE,
            tmp_path / "um.pt",
            tmp_path / "s.pt",
            tmp_path / "l.csv",
            level=0.1,
            device="cpu",
            progress=False,
            spec=SPEC,
        )


def test_each_exposure_default_has_one_home_that_the_schema_quotes():
    """A method's constants live in its class's DEFAULTS; each option's schema description
    names its methods and quotes the value in parentheses, and the two agree."""
    import re

    import yaml

    from oodrepro import config as cfg

    schema = cfg.schema()["properties"]["finetunes"]["additionalProperties"]
    options = schema["properties"]["exposure"]["properties"]
    quoted = {}
    for key, prop in options.items():
        m = re.fullmatch(r"([\w /-]+): .*\((.+)\)", prop.get("description", ""))
        if m:
            for method in m[1].split(" / "):
                quoted[(method, key)] = yaml.safe_load(m[2].replace("−", "-"))
    for method, cls in outlier_exposure.METHODS.items():
        for key, value in cls.DEFAULTS.items():
            assert quoted.pop((method, key)) == value, (method, key)
    assert not quoted, f"quoted in the schema but no class default: {quoted}"


def test_the_presets_start_from_the_authors_released_final_and_middle_stage_models(tmp_path):
    """Decision 22: no backbone is trained; the released `last` is every seed's base, the released
    `best` its middle stage, both downloaded (the 300K outliers pinned by a stand-in sha256: a
    dry run downloads nothing)."""
    import fixtures
    import yaml

    from oodrepro import plan

    root = Path(__file__).resolve().parents[1]
    for preset, bench in (
        ("unleashing-mask-icml23", "cifar10"),
        ("unleashing-mask-icml23-cifar100", "cifar100"),
    ):
        config = yaml.safe_load((root / "presets" / f"{preset}.yaml").read_text())
        config["downloads"] = {"300K_random_images.npy": {"sha256": "0" * 64}}
        (tmp_path / f"{preset}.yaml").write_text(yaml.safe_dump(config))
        dry = fixtures.dry_run(tmp_path / f"{preset}.yaml", tmp_path)
        rules = [rule for rule, _ in plan.jobs(dry)]
        assert "train_backbone" not in rules
        assert (
            rules.count("import_pretrained_backbone")
            == rules.count("import_pretrained_snapshot")
            == 3
        )
        for stage in ("last", "best"):
            assert f"output: data/raw/densenet_{bench}_{stage}.state" in dry
