"""The full Mahalanobis detector: layer features by module name, per-layer scores with and
without input pre-processing, FGSM copies, and the fitted combiner's score."""

import numpy as np
import pytest
import torch

from oodrepro import mahalanobis_ensemble as me
from oodrepro import models, scores, training

pytestmark = pytest.mark.fits  # trains or fits, then asserts: CI runs it under two roundings

SPEC = {"arch": "resnet18", "num_classes": 3, "width": 0.0625, "normalization": "half"}
LAYERS = ["stem", "blocks.3", "penultimate"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("maha")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 90)
    images = np.zeros((90, 32, 32, 3), np.uint8)
    for i, y in enumerate(labels):  # one bright channel per class, plus noise
        images[i, :, :, y] = 200
    images = np.clip(images + rng.integers(0, 50, images.shape), 0, 255).astype(np.uint8)
    recipe = {
        "epochs": 3,
        "batch_size": 16,
        "lr": 0.05,
        "schedule": {"kind": "constant"},
        "augment": {"crop_padding": 0, "flip": False},
    }
    training.train_backbone(
        SPEC,
        images,
        labels,
        recipe,
        tmp / "m.pt",
        tmp / "s.pt",
        tmp / "l.csv",
        device="cpu",
        progress=False,
    )
    return models.load_model(tmp / "m.pt", spec=SPEC), images, labels


def test_layer_features_are_pooled_module_outputs(trained):
    model, images, _ = trained
    x = torch.from_numpy(images[:4]).permute(0, 3, 1, 2).float() / 255
    feats = me.layer_features(model, x, LAYERS)
    out = model(x, return_blocks=True)
    assert torch.allclose(feats[1], out.blocks[3].mean(dim=(2, 3)))
    assert torch.allclose(feats[2], out.penultimate)
    with pytest.raises(KeyError, match="no module named"):
        me.layer_features(model, x, ["nope"])


def test_unperturbed_layer_scores_are_minus_half_the_closest_class_distance(trained):
    model, images, labels = trained
    stats = me.fit_class_statistics(model, images, labels, LAYERS)
    s = me.layer_scores(model, images[:10], stats, LAYERS, [0.0])[0]
    x = torch.from_numpy(images[:10]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        f = me.layer_features(model, x, LAYERS)[2].double().numpy()
    means, precision = stats[2]["means"], stats[2]["precision"]
    d = np.stack([np.einsum("nd,de,ne->n", f - mu, precision, f - mu) for mu in means], 1)
    assert np.allclose(
        s[:, 2], -0.5 * d.min(1), rtol=1e-3
    )  # float32 features, an ill-conditioned precision


def test_preprocessing_moves_inputs_toward_their_closest_class(trained):
    model, images, labels = trained
    stats = me.fit_class_statistics(model, images, labels, LAYERS)
    plain = me.layer_scores(model, images[:20], stats, LAYERS, [0.0])[0]
    moved = me.layer_scores(model, images[:20], stats, LAYERS, [0.0005])[
        0
    ]  # a small step: first-order regime
    assert (moved >= plain - 1e-9).mean() > 0.8


def test_several_magnitudes_at_once_equal_each_alone(trained):
    model, images, labels = trained
    stats = me.fit_class_statistics(model, images, labels, LAYERS)
    grid = [0.0, 0.002, 0.0005]
    together = me.layer_scores(model, images[:12], stats, LAYERS, grid, batch_size=5)
    alone = np.stack([me.layer_scores(model, images[:12], stats, LAYERS, [m])[0] for m in grid])
    assert together.shape == (3, 12, len(LAYERS)) and np.allclose(
        together, alone, rtol=1e-6, atol=1e-6
    )


def test_fgsm_copies_stay_in_range_and_step_by_at_most_the_budget(trained):
    """x + step·sign(∇ₓ CE), clipped, against the same formula computed here. Not asserted: how
    many pixels move. On a model trained to saturation the softmax rounds to 1 and the gradient
    to exactly 0 on some CPUs, so that count depends on the rounding."""
    model, images, labels = trained
    adv = me.fgsm(model, images[:8], labels[:8], step=0.05)
    assert (
        adv.dtype == np.float32
        and adv.shape == images[:8].shape
        and adv.min() >= 0
        and adv.max() <= 1
    )
    step = np.abs(adv - images[:8] / 255.0)
    assert step.max() <= 0.05 + 1e-6  # unrounded: exactly the step, or less where [0,1] clips it
    x = torch.from_numpy(images[:8]).permute(0, 3, 1, 2).float().div(255).contiguous()
    x.requires_grad_(True)
    model.eval()
    loss = torch.nn.functional.cross_entropy(model(x), torch.from_numpy(labels[:8]))
    (grad,) = torch.autograd.grad(loss, x)  # the input's gradient only, as the formula needs
    direct = (x + 0.05 * grad.sign()).clamp(0, 1).detach().permute(0, 2, 3, 1).numpy()
    # where the gradient is far from 0 (relative to the image's largest), its sign is the same
    # under any rounding; a near-zero gradient's sign is not
    g = grad.abs().permute(0, 2, 3, 1).numpy()
    clear = g > 1e-3 * g.reshape(len(g), -1).max(1)[:, None, None, None]
    np.testing.assert_allclose(adv[clear], direct[clear], atol=1e-6)


def test_fitted_ensemble_scores_as_minus_probability_of_adversarial(trained):
    """The fit's outputs and the score's formula, −σ(wᵀs + b) on the chosen magnitude's
    pre-processed layer scores. Not asserted: that noise scores below the ID images. A logistic
    combiner fitted on clean vs FGSM copies extrapolates either way far from both (the default
    run's noise gets AUROC 8.6 from it), and which way depends on the training's rounding."""
    model, images, labels = trained
    ensemble = scores.get("mahalanobis_ensemble")
    state = ensemble.fit(
        model,
        (images, labels),
        None,
        layers=LAYERS,
        tune_on="train_holdout",
        n_fit=10,
        magnitudes=[0.0, 0.001],
        augmentation={"crop_padding": 2, "flip": False},
        seed=0,
    )
    assert float(state["magnitude"]) in (0.0, 0.001) and len(state["coef"]) == 3
    assert 0 <= float(state["validation_fpr"]) <= 1
    noise = np.random.default_rng(1).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    for x in (images[:12], noise):
        s = ensemble.score(model, x, state)
        stats = [
            {"means": state[f"means_{i}"], "precision": state[f"precision_{i}"]}
            for i in range(len(LAYERS))
        ]
        layer = me.layer_scores(model, x, stats, LAYERS, [float(state["magnitude"])])[0]
        logit = layer @ state["coef"] + state["intercept"][0]
        assert s.shape == (12,) and ((s <= 0) & (s >= -1)).all()
        np.testing.assert_allclose(s, -0.5 * (1 + np.tanh(logit / 2)), rtol=1e-6, atol=1e-12)
    with pytest.raises(ValueError, match="tuning images"):
        me.fit(
            model,
            (images, labels),
            (images[:5], labels[:5]),
            layers=LAYERS,
            magnitudes=[0.0],
            n_fit=10,
            fgsm_step=0.05,
            augmentation=None,
        )
