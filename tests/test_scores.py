"""Each post-hoc score against a direct computation."""

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from oodrepro import models, scores

pytestmark = pytest.mark.fits  # trains or fits, then asserts: CI runs it under two roundings


@pytest.fixture
def feats():
    rng = np.random.default_rng(0)
    return {
        "logits": rng.normal(0, 3, (50, 4)).astype(np.float32),
        "penultimate": rng.normal(0, 1, (50, 6)).astype(np.float32),
        "labels": rng.integers(0, 4, 50),
    }


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
    assert (
        scores.get("mahalanobis").score(near, state)[0]
        > scores.get("mahalanobis").score(far, state)[0]
    )


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


class _Recording(dict):
    """A feature dict that notes which keys a score reads."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def __getitem__(self, key):
        self.read.add(re.sub(r"^layer_\d+$", "layer_<j>", key))
        return super().__getitem__(key)


def _features(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    h = np.abs(rng.normal(size=(n, 12)))
    w, b = rng.normal(size=(4, 12)), rng.normal(size=4)
    return {
        "logits": h @ w.T + b,
        "penultimate": h,
        "featnorm": np.abs(rng.normal(size=(n, 3))),
        "block_names": np.array(["b0", "b1", "b2"]),
        "arch": np.array("resnet18"),
        "fc_weight": w,
        "fc_bias": b,
        "labels": np.arange(n) % 4,
        "layer_names": np.array(["a", "b"]),
        "layer_0": rng.normal(size=(n, 3)),
        "layer_1": rng.normal(size=(n, 5)),
    }


@pytest.mark.parametrize("name", sorted(scores.SCORES))
def test_each_scores_docstring_names_the_feature_keys_it_reads(name):
    """The `Reads ...` sentence of every registered score is what it really reads."""
    score = scores.get(name)
    doc = inspect.getdoc(score.score)
    sentence = re.search(r"Reads (.*?)\.(\s|$)", doc, re.S)
    assert sentence and "Returns" in doc and "higher = more ID" in doc, doc
    if score.needs == "network":
        assert "network" in sentence[1]
        return
    claimed = set(re.findall(r"`([^`]+)`", sentence[1])) - {".convs", "layer"}
    train = _features(60, 0)
    fit_args = [train for _ in score.fit_inputs]
    hp = {"knn": {"k": 3}, "vim": {"dim": 4}, "laood": {"gammas": [0.1, 1.0], "nu": 0.1}}.get(
        name, {}
    )
    bound = score.bind(hp)
    state = bound.fit(*fit_args) if score.fit else None
    features = _Recording(_features(20, 1))
    out = bound(features, state=state)
    assert out.shape == (20,) and out.dtype == np.float64
    assert features.read == claimed, (
        f"{name} reads {sorted(features.read)}, its docstring says {sorted(claimed)}"
    )


def test_schema_defaults_of_score_options_are_the_functions_defaults():
    """A score option's default lives in its function's signature (the library used alone); where
    the schema also fills one in (so the config records it), the two must agree."""
    import yaml

    schema = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "oodrepro/schema/config.schema.yaml").read_text()
    )
    compared = 0
    for name, options in schema["properties"]["scores"]["properties"].items():
        entry = scores.get(name)
        code = {}
        for fn in (entry.score, entry.fit):
            for p in inspect.signature(fn).parameters.values() if fn else []:
                if p.default is not inspect.Parameter.empty:
                    code.setdefault(p.name, p.default)
        for key, spec in options.get("properties", {}).items():
            if "default" in spec:
                default = code.get(key)
                assert (list(default) if isinstance(default, tuple) else default) == spec[
                    "default"
                ], (name, key)
                compared += 1
    assert compared >= 6
