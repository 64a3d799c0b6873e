"""Watermarking for OOD detection (Wang et al., NeurIPS 2022; docs/watermarking-ood.md).

One additive pattern w (1×3×32×32, in the model's normalised input space) is learned for
a frozen classifier in eval mode, so that watermarked ID images score high and
watermarked Gaussian noise scores low. Each step: a SAM-style L2-normalised ascent of
radius ρ, then a sign-gradient descent step of size α taken with the gradient at the
ascended point and applied at the original one. The network's weights never change.
The learned w becomes part of a model variant (`Backbone.watermark`), so every score
runs on watermarked inputs through the ordinary scoring rules.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import models, resume
from .augmentation import augment, epoch_generator
from .devices import bf16_autocast, pick_device, place_for_training
from .inference import to_tensor
from .io import load_torch, save_torch

OBJECTIVES = ("msp", "energy")


def loss(
    model: models.Backbone,
    z_id: torch.Tensor,
    y: torch.Tensor,
    z_noise: torch.Tensor,
    w: torch.Tensor,
    *,
    objective: str,
    beta: float,
    t_in: float = 1.0,
    t_out: float = 1.0,
) -> torch.Tensor:
    """The watermark objective on normalised ID images z_id and noise z_noise, both shifted by w.

    msp:    CE(f(x+w), y) + β · mean_j [logsumexp f(n_j+w) − mean_k f_k(n_j+w)]  (OE to uniform)
    energy: CE(f(x+w), y) + β · [mean_j mean_k exp(T_out·f_k(n_j+w))
                                 + mean_i mean_k exp(−T_in·f_k(x_i+w))]
    """
    logits_id = model.forward_normalized(z_id + w).float()  # float32 losses under bf16 autocast too
    logits_noise = model.forward_normalized(z_noise + w).float()
    ce = F.cross_entropy(logits_id, y)
    if objective == "msp":
        return ce + beta * (torch.logsumexp(logits_noise, 1) - logits_noise.mean(1)).mean()
    if objective == "energy":
        penalty = (
            torch.exp(t_out * logits_noise).mean(1).mean()
            + torch.exp(-t_in * logits_id).mean(1).mean()
        )
        out = ce + beta * penalty
        if not torch.isfinite(out):
            raise FloatingPointError(
                "the energy watermark loss overflowed (exp of scaled logits); "
                "lower t_in / t_out or beta"
            )
        return out
    raise ValueError(f"objective must be one of {OBJECTIVES}, not {objective!r}")


def sam_sign_step(w: torch.Tensor, loss_at, rho: float, alpha: float) -> tuple[torch.Tensor, float]:
    """One update: δ = ∇L(w)/‖∇L(w)‖₂, g = ∇L(w + ρδ), w ← w − α·sign(g); also returns L(w).

    `loss_at(w)` evaluates the loss on one fixed mini-batch. The norm runs over the whole
    tensor, with no ε (a gradient that is exactly zero gives δ = 0).
    """
    w0 = w.detach().requires_grad_(True)
    value = loss_at(w0)
    (g1,) = torch.autograd.grad(value, w0)
    norm = g1.norm()
    delta = g1 / norm if norm > 0 else torch.zeros_like(g1)
    w1 = (w.detach() + rho * delta).requires_grad_(True)
    (g2,) = torch.autograd.grad(loss_at(w1), w1)
    return (w.detach() - alpha * g2.sign()).detach(), float(value.detach())


def project(w: torch.Tensor, epsilon: float | None) -> torch.Tensor:
    """The optional L∞ budget (a documented deviation; the paper's w is unbounded)."""
    return w if epsilon is None else w.clamp(-epsilon, epsilon)


def _epoch(model, w, x_all, y_all, params: dict, alpha: float, gen, autocast):
    """One pass of SAM sign steps on w over the epoch's seeded order (`learn`); returns w and
    the loss summed over images."""
    n, bs = len(y_all), params["batch_size"]
    extra = {k: params[k] for k in ("t_in", "t_out") if k in params}
    perm = torch.randperm(n, generator=gen).to(x_all.device)
    total = 0.0
    for i in range(0, n, bs):  # the last, partial batch is kept, as in the original
        idx = perm[i : i + bs]
        x = augment(x_all[idx].float() / 255.0, 0, params.get("flip", True), gen)  # flip only
        z_id = model.normalize(x)
        z_noise = params["sigma"] * torch.randn(z_id.shape, generator=gen).to(x_all.device)
        y = y_all[idx]

        def loss_at(v, z_id=z_id, y=y, z_noise=z_noise):  # this batch's, bound now
            with autocast:
                return loss(
                    model,
                    z_id,
                    y,
                    z_noise,
                    v,
                    objective=params["objective"],
                    beta=params["beta"],
                    **extra,
                )

        w, value = sam_sign_step(w, loss_at, params["rho"], alpha)
        w = project(w, params.get("epsilon"))
        total += value * len(idx)
    return w, total


def learn(
    model: models.Backbone,
    images: np.ndarray,
    labels: np.ndarray,
    params: dict,
    state_path,
    log_csv,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> torch.Tensor:
    """Learn w for a frozen `model`; resumable from `state_path` after every epoch, by the
    same job only (the state's fingerprint covers params, seed, the model's weights and the data).

    params: objective, alpha, sigma, rho, beta, (t_in, t_out for energy), epochs,
    decay_epoch (α ÷ 10 from this epoch on), batch_size, flip, epsilon (None = no budget),
    bf16 (autocast of the model's passes, as in training; w and its update stay float32).
    """
    dev = pick_device(device)
    place_for_training(model, dev)
    model.eval()
    autocast = bf16_autocast(params.get("bf16", "auto"), dev)
    for p in model.parameters():
        p.requires_grad_(False)
    job = resume.fingerprint(
        params=params,
        seed=seed,
        model=model.state_dict(),
        arch=model.arch,
        normalization=model.normalization,
        images=np.asarray(images),
        labels=np.asarray(labels, np.int64),
    )
    loop = resume.Epochs(
        state_path,
        job,
        params["epochs"],
        log_csv,
        map_location=dev,
        desc="watermark",
        progress=progress,
        shown=("loss", "w_linf"),
    )
    w = loop.state["w"] if loop.state is not None else torch.zeros(1, 3, 32, 32, device=dev)
    x_all = to_tensor(images, dev)
    y_all = torch.from_numpy(np.asarray(labels, np.int64)).to(dev)
    for epoch in loop:
        t0 = time.time()
        alpha = params["alpha"] * (0.1 if epoch >= params["decay_epoch"] else 1.0)
        w, total = _epoch(
            model, w, x_all, y_all, params, alpha, epoch_generator(seed, epoch), autocast
        )
        loop.history.append(
            {
                "epoch": epoch + 1,
                "alpha": alpha,
                "loss": total / len(y_all),
                "w_linf": w.abs().max().item(),
                "w_l2": w.norm().item(),
                "seconds": time.time() - t0,
            }
        )
        loop.end_epoch({"w": w})
    return w.detach().cpu()


def learn_and_save(
    base_path,
    out,
    images: np.ndarray,
    labels: np.ndarray,
    params: dict,
    state_path,
    log_csv,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
    spec: dict | None,
) -> torch.Tensor:
    """Learn the watermark of the checkpoint at `base_path` (which must carry `spec`) and save
    the watermarked variant to `out`."""
    model = models.load_model(base_path, pick_device(device), spec=spec)
    w = learn(
        model,
        images,
        labels,
        params,
        state_path,
        log_csv,
        seed=seed,
        device=device,
        progress=progress,
    )
    save_watermarked(out, base_path, w, params)
    Path(state_path).unlink(missing_ok=True)
    return w


def save_watermarked(path, base_path, w: torch.Tensor, params: dict) -> None:
    """The base checkpoint with w attached: a model variant every scoring rule can load."""
    ckpt = load_torch(base_path)
    spec = {**ckpt["spec"], "watermark": True}
    state = {**ckpt["state_dict"], "watermark": w.reshape(1, 3, 32, 32).float()}
    save_torch(
        path,
        {
            "spec": spec,
            "state_dict": state,
            "watermark_params": dict(params),
            **{k: v for k, v in ckpt.items() if k not in ("spec", "state_dict")},
        },
    )
