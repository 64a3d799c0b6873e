"""LA-OOD: SDS edge points and outward shift, γ choice, the detector arrays, the combined score."""

import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors
from sklearn.svm import OneClassSVM

from oodrepro import cotrain, features, laood, models, scores, training

pytestmark = pytest.mark.fits  # trains or fits, then asserts: CI runs it under two roundings


@pytest.fixture
def grid():
    """A 15×15 grid of points in the unit square: edges are the border, inside is interior."""
    xs = np.linspace(0, 1, 15)
    return np.array([(a, b) for a in xs for b in xs]) + np.random.default_rng(0).normal(
        0, 1e-4, (225, 2)
    )


def test_edge_points_are_on_the_border_with_outward_normals(grid):
    edges = laood.find_edges(grid)
    on_border = (np.abs(grid - 0.5) > 0.45).any(axis=1)
    assert len(edges.index) > 0
    assert on_border[edges.index].all()  # every detected edge point is a border point
    corners = [i for i, p in enumerate(grid) if (np.abs(p - 0.5) > 0.45).all()]
    assert set(corners) <= set(edges.index)
    outward = grid[edges.index] - 0.5
    assert (np.einsum("nd,nd->n", edges.normals, outward) > 0).all()
    shifted = laood.pseudo_outliers(grid, edges)
    assert ((shifted < -1e-3) | (shifted > 1 + 1e-3)).any(axis=1).all()  # pushed out of the square


def test_shift_length_follows_the_official_code(grid):
    edges = laood.find_edges(grid, shift_rule="code")
    k = math.ceil(5 * math.log10(len(grid)))
    dist, _ = NearestNeighbors(n_neighbors=k + 1).fit(grid).kneighbors(grid)
    rows = dist[edges.index[1:]]  # the code drops the first edge point's row, keeps self-distance 0
    assert edges.shift == pytest.approx(rows.mean())
    assert edges.shift == pytest.approx(k / (k + 1) * dist[edges.index[1:], 1:].mean())
    assert laood.find_edges(grid, shift_rule="all").shift == pytest.approx(dist[:, 1:].mean())


def test_choose_gamma():
    assert laood.choose_gamma({0.1: 0.2, 0.01: 0.3, 0.05: 0.1}) == 0.05
    assert laood.choose_gamma({0.1: 0.2, 0.01: 0.2}) == 0.01  # tie → the smaller γ
    assert laood.choose_gamma({0.1: 1.0, 0.01: 1.0}) is None  # nothing beats 1.0: the fallback


def test_gamma_choice_on_a_case_with_a_known_answer():
    """A Gaussian cloud: a tiny γ accepts the pushed-out edge points, a huge one rejects the
    held-out ID points; the moderate γ is the only one that gets both right."""
    x = np.random.default_rng(1).normal(size=(600, 3))
    det = laood.fit_layer(x, gammas=(1e-5, 0.3, 300.0), nu=0.01)
    assert det.gamma == 0.3
    assert det.errors[0.3] < min(det.errors[1e-5], det.errors[300.0])


def test_decision_matches_sklearn():
    rng = np.random.default_rng(2)
    h = rng.normal(2, 3, (300, 4))
    det = laood.fit_layer(h, gammas=(0.05, 0.1), nu=0.05)
    z = (h - h.mean(0)) / h.std(0)
    svm = OneClassSVM(kernel="rbf", gamma=det.gamma, nu=0.05).fit(z)
    test = rng.normal(2, 3, (50, 4))
    np.testing.assert_allclose(
        det.decision(test),
        svm.decision_function((test - h.mean(0)) / h.std(0)),
        rtol=1e-6,
        atol=1e-9,
    )


def test_arrays_round_trip_and_combined_score_is_the_max_over_layers():
    rng = np.random.default_rng(3)
    layers = [rng.normal(size=(200, 3)), rng.normal(size=(200, 5)) * 4]
    dets = laood.fit(layers, gammas=(0.05, 0.1), nu=0.05)
    restored = laood.from_arrays(laood.to_arrays(dets, ["a", "b"]))
    test = [rng.normal(size=(40, 3)), rng.normal(size=(40, 5))]
    d = laood.decisions(restored, test)
    np.testing.assert_allclose(d, laood.decisions(dets, test))
    per_layer_native = -d  # s_ℓ = −d_ℓ, higher = OOD
    np.testing.assert_allclose(laood.score(d), -per_layer_native.max(axis=1))
    state = scores.fit_laood(
        {"layer_names": np.array(["a", "b"]), "layer_0": layers[0], "layer_1": layers[1]},
        gammas=[0.05, 0.1],
        nu=0.05,
    )
    feats = {"layer_names": np.array(["a", "b"]), "layer_0": test[0], "layer_1": test[1]}
    np.testing.assert_allclose(scores.get("laood").score(feats, state), d.min(axis=1))


def test_max_fit_subsamples_reproducibly():
    layers = [np.random.default_rng(4).normal(size=(500, 3))]
    a = laood.fit(layers, max_fit=100, seed=0, gammas=(0.1,), nu=0.05)[0]
    b = laood.fit(layers, max_fit=100, seed=0, gammas=(0.1,), nu=0.05)[0]
    np.testing.assert_array_equal(a.support, b.support)
    assert len(a.support) < 100


@pytest.mark.parametrize(
    "arch,kw,n_layers,last",
    [
        ("resnet34", {}, 34, "logits"),
        ("densenet100", {}, 100, "logits"),
        ("vgg16_bn", {"mlp_head": True}, 13, None),
    ],
)
def test_conv_feature_layer_sets_match_the_paper(arch, kw, n_layers, last):
    model = models.build(arch, width=0.25, **kw).eval()
    f = features.extract_convs(model, np.zeros((2, 32, 32, 3), np.uint8))
    names = list(f["layer_names"])
    assert len(names) == n_layers and not any("shortcut" in n for n in names)
    assert (names[-1] == "logits") == (last == "logits")


def test_conv_features_are_pre_batchnorm_means():
    torch.manual_seed(0)
    model = models.build("resnet18", width=0.125, normalization="half").eval()
    images = np.random.default_rng(5).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    f = features.extract_convs(model, images)
    x = model.normalize(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)
    with torch.no_grad():
        stem_conv = model.stem[0](x)
    np.testing.assert_allclose(f["layer_0"], stem_conv.mean((2, 3)).numpy(), rtol=1e-5, atol=1e-6)


def test_a_fit_split_into_pieces_gathers_into_the_same_detector():
    rng = np.random.default_rng(4)
    names = ["conv1", "conv2", "conv3", "conv4", "logits"]
    convs = {
        "layer_names": np.array(names),
        **{f"layer_{j}": rng.normal(size=(120, 6 + j)) for j in range(5)},
    }
    hp = {"gammas": [0.01, 0.1], "max_fit": 100, "fit_seed": 3}
    whole = scores.fit_laood(convs, **hp)
    pieces = [
        scores.fit_laood(convs, only=part, layers_per_job=2, **hp) for part in ([0, 1], [2, 3], [4])
    ]
    merged = laood.merge_arrays(pieces)
    assert merged.keys() == whole.keys()
    for key in whole:
        same = np.array_equal(merged[key], whole[key], equal_nan=merged[key].dtype.kind == "f")
        assert same, key  # same γ, support vectors, dual coefficients: the same decision values


def test_piece_resources_grow_with_n_and_d():
    full = laood.layer_seconds(50_000, 512)
    assert full == pytest.approx(laood.SECONDS_AT_50K_512)
    assert laood.layer_seconds(25_000, 512) == pytest.approx(full / 2**laood.EXPONENT)
    assert laood.layer_seconds(50_000, 256) == pytest.approx(full / 2)  # linear in D
    assert (
        laood.layer_memory_mb(50_000, 512)
        > laood.layer_memory_mb(10_000, 512)
        > laood.layer_memory_mb(1_000, 64)
    )


def test_laood_layer_names_from_the_meta_model_match_the_dumped_ones():
    from oodrepro import config as cfg

    for spec in (
        {"arch": "vgg16_bn", "num_classes": 10, "normalization": "half", "width": 0.25},
        {"arch": "resnet18", "num_classes": 10, "normalization": "half", "width": 0.25},
    ):
        model = models.build(**spec)
        dumped = features.extract_convs(model, np.zeros((2, 32, 32, 3), np.uint8))
        assert cfg.architecture_names(spec)["laood_layers"] == [
            str(n) for n in dumped["layer_names"]
        ]


def _cotraining_setup(**kw):
    torch.manual_seed(0)
    model = models.build("resnet18", width=0.125, normalization="half")
    images = np.random.default_rng(6).integers(0, 256, (150, 32, 32, 3), dtype=np.uint8)
    convs = features.extract_convs(model, images)
    names = [str(n) for n in convs["layer_names"]]
    detector = laood.to_arrays(laood.fit(laood.layers_of(convs), gammas=[0.01, 0.1]), names)
    return (
        model,
        images,
        detector,
        cotrain.CoTraining(model, detector, images, weight=0.5, batch_size=64, **kw),
    )


def test_the_cotraining_term_is_each_svms_decision_plus_rho_summed_over_the_batch():
    """At the first epoch the per-epoch statistics are the scaler the detectors were fitted with,
    so the loss's kernel sums equal the detectors' own decision values plus ρ (every layer)."""
    model, images, detector, trainer = _cotraining_setup(layers=1000)
    trainer.epoch_start(0, torch.Generator().manual_seed(0))
    model.eval()  # the batch's features in the mode the detectors saw
    batch = training.Batch(
        torch.from_numpy(images[:16]).permute(0, 3, 1, 2).float() / 255,
        torch.zeros(16, dtype=torch.long),
        0,
        torch.Generator().manual_seed(0),
    )
    loss, logits = trainer.loss(model, batch)
    layers = laood.layers_of(features.extract_convs(model, images[:16]))
    detectors = laood.from_arrays(detector)
    inlier = sum(
        (d.decision(h) - d.intercept).sum() for d, h in zip(detectors, layers, strict=True)
    )
    ce = torch.nn.functional.cross_entropy(logits, batch.y).item()
    expected = ce - 0.5 / (2 * len(layers)) * inlier
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    loss.backward()  # differentiable through every layer's pooled output
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    trainer.close()


def test_cotraining_draws_its_layers_per_step_and_refuses_another_backbones_detectors():
    model, images, detector, trainer = _cotraining_setup(layers=None)
    assert trainer.per_step == model.cotrain_layers == 10  # of 18 layers (17 convs + logits)
    assert models.build("vgg16_bn", width=0.125, mlp_head=True).cotrain_layers is None
    other = models.build("resnet34", width=0.125)
    with pytest.raises(ValueError, match="fitted on another backbone"):
        cotrain.CoTraining(other, detector, images, weight=0.5, layers=None, batch_size=64)
    trainer.close()
