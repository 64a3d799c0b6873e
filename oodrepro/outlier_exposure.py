"""Outlier-exposure fine-tuning: OE, Energy-OE, POEM and DOE (unleashing-mask.md Step D).

Every step concatenates an ID batch and an equally large outlier batch and runs one
forward pass; the ID term is plain CE or Unleashing Mask's flooding loss (set by the
caller as `id_loss`), the outlier term is the method's. OE, Energy-OE and DOE draw one
fixed outlier subset; POEM re-selects it every epoch by Thompson sampling on a Bayesian
linear head over penultimate features; DOE perturbs the weights toward the worst-case
outlier loss before each OE step.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import models
from .training import augment, to_tensor

METHODS = ("oe", "energy-oe", "poem", "doe")


def oe_term(z_out: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the uniform distribution: logsumexp(z) − mean_k z_k, averaged."""
    return (torch.logsumexp(z_out, 1) - z_out.mean(1)).mean()


def energy_term(z_in: torch.Tensor, z_out: torch.Tensor, m_in: float, m_out: float) -> torch.Tensor:
    """Squared hinges on the energy E = −logsumexp(z): E_in below m_in, E_out above m_out."""
    e_in, e_out = -torch.logsumexp(z_in, 1), -torch.logsumexp(z_out, 1)
    return F.relu(e_in - m_in).pow(2).mean() + F.relu(m_out - e_out).pow(2).mean()


def doe_proxy_loss(z_out: torch.Tensor) -> torch.Tensor:
    """DOE's proxy objective: (∂/∂s mean_out[mean_k s·z_k − logsumexp(s·z)] at s = 1)², the
    squared sensitivity of the negative OE loss to a logit scale (needs a double backward)."""
    s = torch.ones(1, device=z_out.device, requires_grad=True)
    z = z_out * s
    (g,) = torch.autograd.grad((z.mean(1) - torch.logsumexp(z, 1)).mean(), s, create_graph=True)
    return g.pow(2).sum()


class BayesianHead:
    """POEM's Bayesian linear regression on penultimate features: ID → −target, outliers → +target.

    Prior N(0, σ·I); noise variance σ_n; posterior Σ = (I/σ + ΦᵀΦ/σ_n)⁻¹, μ = Σ Φᵀ t / σ_n.
    """

    def __init__(self, sigma: float, sigma_n: float, target: float):
        self.sigma, self.sigma_n, self.target = sigma, sigma_n, target

    def posterior(self, phi_in: np.ndarray, phi_out: np.ndarray, rng: np.random.Generator):
        phi = np.concatenate([phi_in, phi_out]).astype(np.float64)
        t = np.concatenate([np.full(len(phi_in), -self.target), np.full(len(phi_out), self.target)])
        t = t + rng.normal(0, np.sqrt(self.sigma_n), len(t))  # σ_n read as a variance (decision 19)
        cov = np.linalg.inv(np.eye(phi.shape[1]) / self.sigma + phi.T @ phi / self.sigma_n)
        cov = (cov + cov.T) / 2
        return cov @ phi.T @ t / self.sigma_n, cov

    def thompson(self, phi_in, phi_out, rng: np.random.Generator) -> np.ndarray:
        mu, cov = self.posterior(phi_in, phi_out, rng)
        return rng.multivariate_normal(mu, cov, method="cholesky")


def boundary_outliers(theta: np.ndarray, phi_pool: np.ndarray, n: int) -> np.ndarray:
    """The n candidates closest to the sampled decision boundary: smallest |θᵀφ|."""
    return np.sort(np.argsort(np.abs(phi_pool @ theta), kind="stable")[:n])


class Exposure:
    """A fit() step for one OE-family method; `id_loss(logits, y)` is set by the caller.

    params: weight (the outlier term's), m_in, m_out (energy), and for POEM buffer, target,
    sigma, sigma_n; for DOE warmup, gammas, ema, proxy_lr, clip.
    """

    updates_itself = True  # DOE takes two optimiser steps per batch; the others one

    def __init__(self, method: str, outliers: np.ndarray, n_select: int, params: dict, spec: dict,
                 crop_padding: int, flip: bool, seed: int, device):
        if method not in METHODS:
            raise KeyError(f"unknown outlier-exposure method {method!r}; known: {', '.join(METHODS)}")
        self.method, self.params, self.spec = method, dict(params), dict(spec)
        self.pool = to_tensor(outliers, device)
        self.n_select = min(n_select, len(outliers))
        self.crop_padding, self.flip, self.seed = crop_padding, flip, seed
        self.id_loss = None
        self.epoch = 0
        rng = np.random.default_rng(seed)
        self.fixed = np.sort(rng.choice(len(outliers), self.n_select, replace=False))
        self.selected = self.fixed
        self.order = torch.arange(self.n_select)
        self.buffer: list[dict] = []  # POEM: per-epoch penultimate features (ID, outliers)
        self.proxy = self.proxy_opt = None
        self.direction: dict[str, torch.Tensor] = {}
        self._pending_proxy_opt = None  # a resumed DOE proxy optimiser, restored once the proxy exists
        self.model = None  # bound by the trainer: POEM scores the candidate pool with it

    def bind(self, model) -> None:
        self.model = model

    # ---------------------------------------------------------------- resumable memory
    def state_dict(self) -> dict:
        state = {"selected": torch.from_numpy(self.selected),
                 "buffer": [{k: torch.from_numpy(v) for k, v in e.items()} for e in self.buffer],
                 "direction": dict(self.direction)}
        if self.proxy_opt is not None:
            state["proxy_opt"] = self.proxy_opt.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.selected = state["selected"].numpy()
        self.buffer = [{k: v.numpy() for k, v in e.items()} for e in state["buffer"]]
        self.direction = dict(state["direction"])
        self._pending_proxy_opt = state.get("proxy_opt")

    # ---------------------------------------------------------------- per epoch
    def epoch_start(self, epoch: int, gen: torch.Generator) -> None:
        self.epoch = epoch
        if self.method == "poem" and self.buffer:
            self.selected = self._thompson_selection(epoch)
        self.order = torch.randperm(len(self.selected), generator=gen)
        self.buffer.append({"in": np.zeros((0, 0), np.float32), "out": np.zeros((0, 0), np.float32)})
        self.buffer = self.buffer[-self.params.get("buffer", 4) :] if self.method == "poem" else []

    def _thompson_selection(self, epoch: int) -> np.ndarray:
        filled = [e for e in self.buffer if e["in"].size]
        if not filled:
            return self.selected
        head = BayesianHead(self.params.get("sigma", 20.0), self.params.get("sigma_n", 0.5),
                            self.params.get("target", 3.9))
        rng = np.random.default_rng([self.seed, epoch])
        theta = head.thompson(np.concatenate([e["in"] for e in filled]), np.concatenate([e["out"] for e in filled]),
                              rng)
        phi_pool = pool_features(self.model, self.pool)
        return boundary_outliers(theta, phi_pool, self.n_select)

    def outlier_batch(self, b: int, size: int, gen: torch.Generator) -> torch.Tensor:
        n = len(self.selected)
        rows = self.order[(b * size + torch.arange(size)) % n]
        idx = torch.from_numpy(self.selected)[rows].to(self.pool.device)
        return augment(self.pool[idx].float() / 255.0, self.crop_padding, self.flip, gen)

    # ---------------------------------------------------------------- per batch
    def __call__(self, model, x, y, b, gen, opt):
        x_out = self.outlier_batch(b, len(x), gen)
        if self.method == "doe" and self.epoch >= self.params.get("warmup", 5):
            return self._doe_step(model, x, y, x_out, gen, opt)
        out = model(torch.cat([x, x_out]), return_blocks=self.method == "poem")
        logits = out.logits if self.method == "poem" else out
        z_in, z_out = logits[: len(x)], logits[len(x) :]
        if self.method in ("oe", "doe"):  # DOE's warm-up: CE + 1.0·OE
            term = oe_term(z_out)
        else:
            term = energy_term(z_in, z_out, self.params.get("m_in", -25.0), self.params.get("m_out", -7.0))
        loss = self.id_loss(z_in, y) + self.params["weight"] * term
        if self.method == "poem":
            phi = out.penultimate.detach().float().cpu().numpy()
            last = self.buffer[-1]
            last["in"] = np.concatenate([last["in"], phi[: len(x)]]) if last["in"].size else phi[: len(x)]
            last["out"] = np.concatenate([last["out"], phi[len(x) :]]) if last["out"].size else phi[len(x) :]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach(), z_in.detach()

    def _doe_step(self, model, x, y, x_out, gen, opt):
        """Perturb θ toward the proxy's worst-case OE direction, take an OE step there, undo the
        perturbation, then take an ID step (two optimiser steps, gradient norms clipped)."""
        p = self.params
        gammas = p.get("gammas", [1e-1, 1e-2, 1e-3, 1e-4])
        gamma = gammas[int(torch.randint(len(gammas), (1,), generator=gen))]
        if self.proxy is None:
            spec = {**self.spec, **({"dropout": 0.0} if "dropout" in self.spec else {})}
            self.proxy = models.build(**spec).to(x.device)
            self.proxy_opt = torch.optim.SGD(self.proxy.parameters(), lr=p.get("proxy_lr", 1.0), momentum=0.9,
                                             weight_decay=1e-4)
            if self._pending_proxy_opt:
                self.proxy_opt.load_state_dict(self._pending_proxy_opt)
        self.proxy.load_state_dict(model.state_dict())
        self.proxy.train()
        self.proxy_opt.zero_grad(set_to_none=True)
        doe_proxy_loss(self.proxy(x_out)).backward()
        self.proxy_opt.step()
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, q in self.proxy.named_parameters():
                w = named[name]
                d = q - w
                d = d / (d.norm() + 1e-12) * w.norm()
                prev = self.direction.get(name)
                ema = p.get("ema", 0.6)
                self.direction[name] = d if prev is None else ema * prev.to(d.device) + (1 - ema) * d
                w.add_(gamma * self.direction[name])
        clip = p.get("clip", 1.0)
        loss_out = p["weight"] * oe_term(model(x_out))
        opt.zero_grad(set_to_none=True)
        loss_out.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        with torch.no_grad():
            for name, d in self.direction.items():
                named[name].sub_(gamma * d)
        z_in = model(x)
        loss_in = self.id_loss(z_in, y)
        opt.zero_grad(set_to_none=True)
        loss_in.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        return (loss_in + loss_out).detach(), z_in.detach()


@torch.inference_mode()
def pool_features(model, pool_uint8: torch.Tensor, batch_size: int = 1000) -> np.ndarray:
    """Penultimate features of every outlier candidate, in eval mode (training mode restored)."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(pool_uint8), batch_size):
        out.append(model(pool_uint8[i : i + batch_size].float() / 255.0, return_blocks=True).penultimate.float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy()

