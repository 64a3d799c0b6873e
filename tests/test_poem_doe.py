"""POEM's outlier selection and DOE's steps against the official code's rules, each computed
here directly on a tiny model and compared (POEM's neural_linear_opt.py, DOE's doe_final.py
and utils_awp.py, Unleashing-Mask's main_OE.py)."""

import contextlib
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oodrepro import models, outlier_exposure
from oodrepro.augmentation import augment
from oodrepro.training import Batch

pytestmark = pytest.mark.fits  # trains or fits, then asserts: CI runs it under two roundings

SPEC = {"arch": "resnet18", "num_classes": 4, "width": 0.25, "normalization": "half"}
SIGMA, SIGMA_N, TARGET = 20.0, 0.5, 3.9


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = models.build(**SPEC)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8)
    labels = torch.from_numpy(rng.integers(0, 4, 24))
    outliers = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    return model, images, labels, outliers


def official_targets(n_in, n_out_per_epoch, noise, copies, epochs_out):
    """neural_linear_opt.py's targets: in epoch 0 one scalar noise and the vectors −3.9 + noise
    (ID) and +3.9 + noise (outliers); every later update repeats those epoch-0 vectors."""
    y_in0 = torch.full((n_in,), -TARGET, dtype=torch.float64) + noise
    y_out0 = torch.full((n_out_per_epoch,), TARGET, dtype=torch.float64) + noise
    return torch.cat([y_in0.repeat(copies), y_out0.repeat(epochs_out)]).numpy()


def official_posterior(phi_in, phi_out, noise, copies=1, epochs_out=1):
    """neural_linear_opt.py as the spec gives it: ID rows repeated, the run's targets,
    A = I/σ + ΦᵀΦ/σ_n, μ = A⁻¹Φᵀt/σ_n, sampled covariance σ·A⁻¹."""
    phi = np.concatenate([np.tile(phi_in, (copies, 1)), phi_out]).astype(np.float64)
    t = official_targets(len(phi_in), len(phi_out) // epochs_out, noise, copies, epochs_out)
    a_inv = np.linalg.inv(np.eye(phi.shape[1]) / SIGMA + phi.T @ phi / SIGMA_N)
    a_inv = (a_inv + a_inv.T) / 2
    return a_inv @ phi.T @ t / SIGMA_N, SIGMA * a_inv


def test_posterior_samples_from_sigma_times_a_inverse_with_one_shared_noise_value():  # points 2, 3
    rng = np.random.default_rng(0)
    phi_in, phi_out = rng.normal(-1, 0.3, (50, 3)), rng.normal(1, 0.3, (30, 3))
    head = outlier_exposure.BayesianHead(SIGMA, SIGMA_N, TARGET)
    for copies in (1, 3):
        mu, cov = head.posterior(phi_in, phi_out, 0.42, id_copies=copies)
        mu_ref, cov_ref = official_posterior(phi_in, phi_out, 0.42, copies)
        assert np.allclose(mu, mu_ref) and np.allclose(cov, cov_ref)
    _, cov1 = head.posterior(phi_in, phi_out, 0.42)
    both = np.r_[phi_in, phi_out]
    textbook = np.linalg.inv(np.eye(3) / SIGMA + both.T @ both / SIGMA_N)
    assert np.allclose(cov1, SIGMA * textbook) and not np.allclose(
        cov1, textbook
    )  # 20× wider than A⁻¹
    # one noise value for every target: μ moves along A⁻¹Φᵀ1 only, whatever the value
    mu_a, _ = head.posterior(phi_in, phi_out, -0.4)
    mu_b, _ = head.posterior(phi_in, phi_out, 0.7)
    direction = textbook @ both.sum(0) / SIGMA_N
    assert np.allclose(np.cross(mu_a - mu_b, direction), 0, atol=1e-9)
    # the noise is a draw with variance σ_n (std √σ_n), one scalar
    draws = np.array([head.draw_noise(np.random.default_rng(k)) for k in range(4000)])
    assert abs(draws.var() / SIGMA_N - 1) < 0.1 and abs(draws.mean()) < 0.05


def eval_features(model, uint8_nchw):
    model.eval()
    with torch.no_grad():
        out = model(uint8_nchw.float() / 255, return_blocks=True).penultimate.double().numpy()
    model.train()
    return out


def _make(method, model, outliers, n_select, params, seed):
    """An exposure step with plain CE on the ID batch, crop padding 2 and flips, on the CPU."""
    return outlier_exposure.make(
        method,
        outliers,
        model=model,
        id_loss=lambda z, y: F.cross_entropy(z, y),
        n_select=n_select,
        params=params,
        spec=SPEC,
        crop_padding=2,
        flip=True,
        seed=seed,
        device="cpu",
    )


def select(model, pool, theta, n):
    return np.sort(np.argsort(np.abs(eval_features(model, pool) @ theta), kind="stable")[:n])


def test_poem_selects_from_the_prior_in_epoch_0_and_from_eval_mode_features_after(
    setup,
):  # points 1, 4
    model, images, labels, outliers = setup
    n_select, seed, dim = 16, 5, model.fc.in_features
    exp = _make("poem", model, outliers, n_select, {"weight": 0.1}, seed)
    pool = torch.from_numpy(outliers).permute(0, 3, 1, 2)
    fed_in, fed_out, real = {0: [], 1: []}, {0: [], 1: []}, exp.outlier_batch

    def recording(batch):
        out = real(batch)
        fed_out[exp.epoch].append(out.clone())
        return out

    exp.outlier_batch = recording
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x_all = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255

    def run_epoch(epoch):
        gen = torch.Generator().manual_seed(10 + epoch)
        for b in range(3):
            x = augment(x_all[b * 8 : (b + 1) * 8], 2, True, gen)
            fed_in[epoch].append(x.clone())
            batch = Batch(x, labels[b * 8 : (b + 1) * 8], b, gen)
            exp.step(model, batch, opt, contextlib.nullcontext())

    def uint8(batches):
        return (torch.cat(batches) * 255).round().to(torch.uint8)

    exp.epoch_start(0, torch.Generator().manual_seed(0))
    rng0 = np.random.default_rng([seed, 0])
    theta = rng0.multivariate_normal(np.zeros(dim), SIGMA * np.eye(dim), method="cholesky")
    noise = rng0.normal(0.0, SIGMA_N**0.5)  # drawn once, in epoch 0, for the whole run
    assert np.array_equal(
        exp.selected, select(model, pool, theta, n_select)
    )  # boundary outliers in epoch 0
    assert exp.noise == noise
    run_epoch(0)

    # after epoch 0: the posterior on epoch 0's inputs, featurised now, in eval mode
    exp.epoch_start(1, torch.Generator().manual_seed(1))
    rng = np.random.default_rng([seed, 1])
    mu, cov = official_posterior(
        eval_features(model, uint8(fed_in[0])), eval_features(model, uint8(fed_out[0])), noise
    )
    assert np.array_equal(
        exp.selected,
        select(model, pool, rng.multivariate_normal(mu, cov, method="cholesky"), n_select),
    )
    run_epoch(1)
    saved = copy.deepcopy(exp.state_dict())  # what a resumable fine-tune keeps after epoch 1

    # after epoch 1: epoch 0's ID images counted twice, the outliers of both epochs, and the
    # same noise value: the epoch-0 targets repeated
    exp.epoch_start(2, torch.Generator().manual_seed(2))
    ids, outs = uint8(fed_in[0]), uint8([*fed_out[0], *fed_out[1]])
    assert torch.equal(exp.buffer_in, ids) and len(exp.buffer_out) == 2
    rng = np.random.default_rng([seed, 2])
    mu, cov = official_posterior(
        eval_features(model, ids), eval_features(model, outs), noise, copies=2, epochs_out=2
    )
    assert np.array_equal(
        exp.selected,
        select(model, pool, rng.multivariate_normal(mu, cov, method="cholesky"), n_select),
    )
    # resumed between epochs 1 and 2 (a new process): the same noise, the same selection
    resumed = _make("poem", model, outliers, n_select, {"weight": 0.1}, seed)
    resumed.load_state_dict(saved)
    resumed.epoch_start(2, torch.Generator().manual_seed(2))
    assert resumed.noise == noise and np.array_equal(resumed.selected, exp.selected)
    # train-mode activations (what the training pass sees) are not what the posterior reads
    with torch.no_grad():
        train_mode = model(ids.float() / 255, return_blocks=True).penultimate.double().numpy()
    assert not np.allclose(train_mode, eval_features(model, ids), rtol=0.05)


def _doe(setup, warmup):
    """A DOE exposure on one fixed ID and outlier batch, and a model copy for the official step."""
    model, images, labels, outliers = setup
    official = copy.deepcopy(model)
    exp = _make("doe", model, outliers, 16, {"weight": 1.0, "warmup": warmup}, 0)
    exp.epoch_start(0, torch.Generator().manual_seed(0))
    x = torch.from_numpy(images[:8]).permute(0, 3, 1, 2).float() / 255
    x_out = torch.from_numpy(outliers[:8]).permute(0, 3, 1, 2).float() / 255
    exp.outlier_batch = lambda batch: x_out
    return exp, official, x, x_out, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def test_poem_refuses_to_select_its_whole_pool(setup):
    """The whole pool selected is Energy-OE under another name: an error, not a silent run."""
    model, outliers = setup[0], setup[3]
    with pytest.raises(ValueError, match="whole pool"):
        _make("poem", model, outliers, len(outliers), {"weight": 0.1}, 0)
    _make("energy-oe", model, outliers, len(outliers), {"weight": 0.1}, 0)


def test_doe_warm_up_steps_are_gradient_clipped(setup):  # point 5
    model, _, labels, _ = setup
    exp, official, x, x_out, opt = _doe(setup, warmup=5)
    batch = Batch(x, labels[:8], 0, torch.Generator().manual_seed(1))
    exp.step(model, batch, opt, contextlib.nullcontext())

    ref_opt = torch.optim.SGD(official.parameters(), lr=0.1, momentum=0.9)
    z = official(torch.cat([x, x_out]))
    loss = (
        F.cross_entropy(z[:8], labels[:8])
        + 1.0 * (torch.logsumexp(z[8:], 1) - z[8:].mean(1)).mean()
    )
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(official.parameters(), 1.0)
    assert norm > 1  # the clip acts on this batch
    ref_opt.step()
    for (name, a), b in zip(
        model.state_dict().items(), official.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name


def test_doe_step_after_warm_up_as_the_official_code(setup):  # points 6, 7
    model, _, labels, _ = setup
    exp, official, x, x_out, opt = _doe(setup, warmup=0)
    gen = torch.Generator().manual_seed(3)
    gammas = [1e-1, 1e-2, 1e-3, 1e-4]
    gamma = gammas[int(torch.randint(4, (1,), generator=torch.Generator().manual_seed(3)))]
    exp.step(model, Batch(x, labels[:8], 0, gen), opt, contextlib.nullcontext())

    # doe_final.py, one step: proxy step, perturbed OE step, restored ID step, all on the joint
    # batch
    both, n = torch.cat([x, x_out]), 8
    proxy = copy.deepcopy(official)
    proxy_opt = torch.optim.SGD(proxy.parameters(), lr=1.0, momentum=0.9, weight_decay=1e-4)
    s = torch.ones(1, requires_grad=True)
    zo = proxy(both)[n:] * s
    (g,) = torch.autograd.grad((zo.mean(1) - torch.logsumexp(zo, 1)).mean(), s, create_graph=True)
    g.pow(2).sum().backward()
    proxy_opt.step()
    params, state = dict(official.named_parameters()), proxy.state_dict()
    diff = {}
    for name, w in params.items():
        if "weight" in name and w.dim() > 1:  # utils_awp.py: weight matrices only
            d = state[name] - w.detach()
            diff[name] = d / (d.norm() + 1e-12) * w.detach().norm()
    assert len(diff) < len(params)  # biases and BatchNorm parameters are left alone
    ref_opt = torch.optim.SGD(official.parameters(), lr=0.1, momentum=0.9)
    with torch.no_grad():
        for name, d in diff.items():
            params[name].add_(gamma * d)
    z = official(both)
    (1.0 * (torch.logsumexp(z[n:], 1) - z[n:].mean(1)).mean()).backward()
    torch.nn.utils.clip_grad_norm_(official.parameters(), 1.0)
    ref_opt.step()
    with torch.no_grad():
        for name, d in diff.items():
            params[name].sub_(gamma * d)
    ref_opt.zero_grad()
    F.cross_entropy(official(both)[:n], labels[:8]).backward()
    torch.nn.utils.clip_grad_norm_(official.parameters(), 1.0)
    ref_opt.step()
    assert set(exp.direction) == set(diff)
    for (name, a), b in zip(
        model.state_dict().items(), official.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-6), name
