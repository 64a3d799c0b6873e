"""MaxLogit, GEN, ReAct, DICE, ASH, KNN, ViM and RMDS against direct computations of their
formulas on a toy head, with the edge cases their papers name."""

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

from oodrepro import scores

pytestmark = pytest.mark.fits  # trains or fits, then asserts: CI runs it under two roundings

K, D = 5, 16


def toy(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    w = np.random.default_rng(99).normal(size=(K, D))
    b = np.random.default_rng(98).normal(size=K)
    h = np.maximum(rng.normal(size=(n, D)) + shift, 0)  # post-ReLU penultimate features
    return {
        "penultimate": h.astype(np.float32),
        "logits": (h @ w.T + b).astype(np.float32),
        "labels": rng.integers(0, K, n),
        "fc_weight": w.astype(np.float32),
        "fc_bias": b.astype(np.float32),
    }


@pytest.fixture
def data():
    return toy(300, 0), toy(40, 1), toy(40, 2, shift=2.0)


def run(name, train, test, **hp):
    score = scores.get(name).bind(hp)
    state = score.fit(train) if score.spec.fit else None
    return score(test, state=state)


def energy(z):
    return logsumexp(z, axis=1)


def test_maxlogit_and_gen(data):
    _, test, _ = data
    z = test["logits"].astype(np.float64)
    assert np.allclose(run("maxlogit", None, test), z.max(1))
    p = softmax(z, axis=1)
    top3 = np.sort(p, axis=1)[:, ::-1][:, :3]
    assert np.allclose(
        run("gen", None, test, gamma=0.1, top=3), -(top3**0.1 * (1 - top3) ** 0.1).sum(1)
    )
    assert np.allclose(
        run("gen", None, test, top=100), run("gen", None, test, top=K)
    )  # M is capped at K


def test_react_clips_at_a_percentile_of_id_training_activations(data):
    train, test, _ = data
    c = np.percentile(train["penultimate"].astype(np.float64).ravel(), 90)
    assert float(scores.fit_react(train)["clip"]) == pytest.approx(c)
    w, b = train["fc_weight"].astype(np.float64), train["fc_bias"].astype(np.float64)
    expected = energy(np.minimum(test["penultimate"], c) @ w.T + b)
    assert np.allclose(run("react", train, test), expected)
    # clipping at the 100th percentile clips nothing of the training set: plain Energy there
    assert np.allclose(
        run("react", train, train, percentile=100),
        energy(train["logits"].astype(np.float64)),
        atol=1e-4,
    )
    assert np.allclose(
        run("react", train, test, score="msp"),
        softmax(np.minimum(test["penultimate"], c) @ w.T + b, axis=1).max(1),
    )


def test_dice_keeps_the_largest_weight_times_mean_activation_contributions(data):
    train, test, _ = data
    w, b = train["fc_weight"].astype(np.float64), train["fc_bias"].astype(np.float64)
    mean = train["penultimate"].astype(np.float64).mean(0)
    contribution = np.array([[w[k, j] * mean[j] for j in range(D)] for k in range(K)])
    cut = np.sort(contribution.ravel())[int(np.ceil(0.9 * K * D)) - 1]
    mask = scores.fit_dice(train)["mask"]
    assert (
        mask.sum() == (contribution > np.percentile(contribution, 90)).sum() == round(0.1 * K * D)
    )
    assert (contribution[mask] > cut - 1e-12).all()
    expected = energy(
        np.stack(
            [
                [
                    sum(test["penultimate"][i, j] * w[k, j] * mask[k, j] for j in range(D)) + b[k]
                    for k in range(K)
                ]
                for i in range(len(test["penultimate"]))
            ]
        )
    )
    assert np.allclose(run("dice", train, test), expected)


@pytest.mark.parametrize("variant", ["b", "p", "s"])
def test_ash_prunes_each_sample_and_rescales(data, variant):
    _, test, _ = data
    w, b = test["fc_weight"].astype(np.float64), test["fc_bias"].astype(np.float64)
    h = test["penultimate"].astype(np.float64)
    k = D - int(np.round(D * 0.75))  # percentile 75 keeps 4 of 16
    rows = []
    for x in h:
        top = np.argsort(-x, kind="stable")[:k]
        out = np.zeros(D)
        out[top] = {"b": x.sum() / k, "p": x[top], "s": x[top] * np.exp(x.sum() / x[top].sum())}[
            variant
        ]
        rows.append(out)
    expected = energy(np.array(rows) @ w.T + b)
    assert np.allclose(run("ash", None, test, percentile=75, variant=variant), expected)


def test_knn_is_minus_the_distance_to_the_kth_normalised_neighbour(data):
    train, test, ood = data
    bank = train["penultimate"] / np.linalg.norm(train["penultimate"], axis=1, keepdims=True)
    z = test["penultimate"] / np.linalg.norm(test["penultimate"], axis=1, keepdims=True)
    for k in (1, 7):
        expected = [-np.sort(np.linalg.norm(bank - q, axis=1))[k - 1] for q in z]
        got = run("knn", train, test, k=k, block=16)  # several blocks
        assert np.allclose(got, expected, atol=1e-5)
    # normalisation: scaling a feature vector does not move its score
    scaled = {**test, "penultimate": test["penultimate"] * 3.0}
    assert np.allclose(run("knn", train, scaled, k=7), run("knn", train, test, k=7), atol=1e-5)
    with pytest.raises(ValueError, match="k = 301"):
        run("knn", train, test, k=301)


def test_vim_residual_off_the_principal_subspace_and_alpha(data):
    train, test, _ = data
    w, b = train["fc_weight"].astype(np.float64), train["fc_bias"].astype(np.float64)
    h = train["penultimate"].astype(np.float64)
    u = -np.linalg.pinv(w) @ b
    cov = np.cov((h - u).T, bias=True) + np.outer(
        (h - u).mean(0), (h - u).mean(0)
    )  # E[(h−u)(h−u)ᵀ]
    vals, vecs = np.linalg.eigh(cov)
    ns = vecs[:, np.argsort(-vals)[6:]]
    alpha = (h @ w.T + b).max(1).mean() / np.linalg.norm((h - u) @ ns, axis=1).mean()
    state = scores.fit_vim(train, dim=6)
    assert np.allclose(state["origin"], u) and float(state["alpha"]) == pytest.approx(alpha)
    t = test["penultimate"].astype(np.float64)
    expected = energy(t @ w.T + b) - alpha * np.linalg.norm((t - u) @ ns, axis=1)
    assert np.allclose(run("vim", train, test, dim=6), expected, atol=1e-6)
    residual = state["residual_space"]  # orthonormal, and orthogonal to the 6 principal directions
    assert residual.shape == (D, D - 6) and np.allclose(
        residual.T @ residual, np.eye(D - 6), atol=1e-8
    )
    assert np.allclose(vecs[:, np.argsort(-vals)[:6]].T @ residual, 0, atol=1e-8)
    with pytest.raises(ValueError, match="dim = 16"):
        scores.fit_vim(train, dim=16)


def test_rmds_subtracts_the_background_gaussian(data):
    train, test, _ = data
    f, y = train["penultimate"].astype(np.float64), train["labels"]
    means = np.stack([f[y == c].mean(0) for c in range(K)])
    centred = f - means[y]
    p = np.linalg.pinv(centred.T @ centred / len(f))
    mu0 = f.mean(0)
    p0 = np.linalg.pinv((f - mu0).T @ (f - mu0) / len(f))
    t = test["penultimate"].astype(np.float64)
    md = np.array([[(x - m) @ p @ (x - m) for m in means] for x in t])
    md0 = np.array([(x - mu0) @ p0 @ (x - mu0) for x in t])
    assert np.allclose(run("rmds", train, test), -(md - md0[:, None]).min(1), rtol=1e-6, atol=1e-6)


def test_knn_ranks_features_off_the_id_distribution_as_less_id(data):
    train, test, _ = data
    ood = {**test, "penultimate": np.zeros_like(test["penultimate"])}
    ood["penultimate"][:, :2] = (
        5 * np.random.default_rng(3).random((len(test["penultimate"]), 2)) + 1
    )
    s_id, s_ood = run("knn", train, test), run("knn", train, ood)
    assert np.mean(s_id[:, None] > s_ood[None, :]) > 0.8


def test_feature_files_carry_the_head_that_reproduces_the_logits(tmp_path):
    import torch

    from oodrepro import features, models

    torch.manual_seed(0)
    model = models.build("resnet18", num_classes=K, width=0.25, normalization="half").eval()
    images = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    features.dump(model, images, np.zeros(12, np.int64), tmp_path / "f.npz", progress=False)
    with np.load(tmp_path / "f.npz") as f:
        dumped = {k: f[k] for k in f.files}
    assert np.array_equal(dumped["fc_weight"], model.fc.weight.detach().numpy())
    recomputed = (
        dumped["penultimate"].astype(np.float64) @ dumped["fc_weight"].T + dumped["fc_bias"]
    )
    assert np.allclose(recomputed, dumped["logits"], atol=1e-4)
    # ReAct at a clip above every activation is Energy on the model's own logits
    state = {"clip": np.array(dumped["penultimate"].max() + 1)}
    assert np.allclose(
        scores.react(dumped, state), energy(dumped["logits"].astype(np.float64)), atol=1e-4
    )
