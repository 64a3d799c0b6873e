"""Each post-hoc score against a direct computation."""

import numpy as np
import pytest
import torch

from oodrepro import models, scores


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    return {"logits": rng.normal(0, 3, (50, 4)).astype(np.float32),
            "penultimate": rng.normal(0, 1, (50, 6)).astype(np.float32),
            "labels": rng.integers(0, 4, 50)}


def test_registry_knows_the_spine_scores():
    assert {"msp", "odin", "energy", "mahalanobis"} <= set(scores.SCORES)
    assert scores.get("odin").needs == "network"
    assert scores.get("mahalanobis").fit is not None
    with pytest.raises(KeyError, match="unknown score"):
        scores.get("nope")


def test_msp(feats):
    z = feats["logits"].astype(np.float64)
    direct = np.array([np.exp(r).max() / np.exp(r).sum() for r in z])
    np.testing.assert_allclose(scores.get("msp").score(feats), direct, rtol=1e-12)


@pytest.mark.parametrize("t", [1.0, 10.0])
def test_energy(feats, t):
    z = feats["logits"].astype(np.float64)
    direct = t * np.log(np.exp(z / t).sum(1))
    np.testing.assert_allclose(scores.get("energy").score(feats, temperature=t), direct, rtol=1e-12)


def test_mahalanobis_against_direct_computation(feats):
    f, y = feats["penultimate"].astype(np.float64), feats["labels"]
    means = np.stack([f[y == c].mean(0) for c in range(4)])
    cov = sum(np.outer(f[i] - means[y[i]], f[i] - means[y[i]]) for i in range(len(f))) / len(f)
    prec = np.linalg.inv(cov)
    direct = np.array([max(-(x - m) @ prec @ (x - m) for m in means) for x in f])
    state = scores.get("mahalanobis").fit(feats)
    np.testing.assert_allclose(state["means"], means, rtol=1e-10)
    np.testing.assert_allclose(scores.get("mahalanobis").score(feats, state), direct, rtol=1e-8)


def test_mahalanobis_prefers_points_near_a_class_mean(feats):
    state = scores.get("mahalanobis").fit(feats)
    near = {"penultimate": state["means"][:1].astype(np.float32)}
    far = {"penultimate": state["means"][:1].astype(np.float32) + 50}
    assert scores.get("mahalanobis").score(near, state)[0] > scores.get("mahalanobis").score(far, state)[0]


def test_odin_against_direct_autograd():
    torch.manual_seed(0)
    model = models.build("resnet18", num_classes=3, width=0.0625, normalization="half").eval()
    images = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    t, eps = 1000.0, 0.0014
    got = scores.get("odin").score(model, images, temperature=t, epsilon=eps, batch_size=2)

    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    direct = []
    for i in range(len(x)):
        xi = x[i : i + 1].clone().requires_grad_(True)
        logits = model(xi) / t
        loss = -torch.log_softmax(logits, 1)[0, logits.argmax()]
        loss.backward()
        x_tilde = xi.detach() - eps * xi.grad.sign()
        direct.append(torch.softmax(model(x_tilde).double() / t, 1).max().item())
    np.testing.assert_allclose(got, direct, rtol=1e-5)


def test_odin_perturbation_raises_the_score_it_targets():
    torch.manual_seed(0)
    model = models.build("resnet18", num_classes=3, width=0.0625, normalization="half").eval()
    images = np.random.default_rng(2).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    plain = scores.get("odin").score(model, images, temperature=1000.0, epsilon=0.0)
    perturbed = scores.get("odin").score(model, images, temperature=1000.0, epsilon=0.0014)
    assert (perturbed >= plain - 1e-9).all() and (perturbed > plain).any()
