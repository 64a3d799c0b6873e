"""The full Mahalanobis detector (Lee et al. 2018) as Unleashing Mask evaluates it
(docs/unleashing-mask.md): class means and a tied covariance on several layers' pooled
features, input pre-processing toward the closest class, and a logistic-regression
combiner fitted on clean ID images versus their FGSM copies, with the noise magnitude
chosen on a second batch of such pairs. The score is −P(adversarial): higher = more ID.

Layers are named modules of the backbone (their outputs are captured by forward hooks and
average-pooled), or `penultimate`, the vector the classifier reads.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .augmentation import augment
from .inference import image_batches
from .metrics import fpr_at_tpr
from .recipe import Augment


def _pooled(t: torch.Tensor) -> torch.Tensor:
    return t.mean(dim=(2, 3)) if t.dim() == 4 else t


def layer_features(model, x: torch.Tensor, layers: list[str]) -> list[torch.Tensor]:
    """Pooled outputs of the named modules (and/or `penultimate`) for a batch, with autograd."""
    modules = dict(model.named_modules())
    unknown = [n for n in layers if n != "penultimate" and n not in modules]
    if unknown:
        raise KeyError(f"no module named {unknown} in {model.arch}; e.g. {list(modules)[1:8]}")
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        modules[n].register_forward_hook(lambda _m, _i, out, n=n: captured.__setitem__(n, out))
        for n in layers
        if n != "penultimate"
    ]
    try:
        out = model(x, return_blocks=True)
    finally:
        for h in hooks:
            h.remove()
    return [_pooled(out.penultimate if n == "penultimate" else captured[n]) for n in layers]


def fit_class_statistics(
    model,
    images: np.ndarray,
    labels: np.ndarray,
    layers: list[str],
    batch_size: int = 256,
    augmentation: dict | None = None,
    seed: int = 0,
) -> list[dict[str, np.ndarray]]:
    """Per layer: class means and the inverse of the tied (shared, empirical) covariance, from
    one pass over the training images (augmented as the training loader does, when given)."""
    model.eval()
    feats: list[list[np.ndarray]] = [[] for _ in layers]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, x in image_batches(model, images, batch_size):
            if augmentation is not None:
                aug = Augment.of(augmentation)
                x = augment(x, aug.crop_padding, aug.flip, gen)
            for i, f in enumerate(layer_features(model, x, layers)):
                feats[i].append(f.double().cpu().numpy())
    labels = np.asarray(labels)
    classes = np.unique(labels)
    stats = []
    for chunks in feats:
        f = np.concatenate(chunks)
        means = np.stack([f[labels == c].mean(0) for c in classes])
        centred = f - means[np.searchsorted(classes, labels)]
        stats.append(
            {
                "means": means,
                "precision": np.linalg.pinv(centred.T @ centred / len(f), hermitian=True),
            }
        )
    return stats


def _distances(f: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """Squared Mahalanobis distance of every row of f to every class mean (n × classes)."""
    d = f[:, None, :] - means[None]
    return ((d @ precision) * d).sum(-1)


def layer_scores(
    model,
    images: np.ndarray,
    stats: list[dict],
    layers: list[str],
    magnitudes,
    batch_size: int = 256,
) -> np.ndarray:
    """magnitudes × n × layers array of M_ℓ(x̃) = −½ min_c distance,
    x̃ = x − m·sign(∇ₓ min_c distance), x in [0,1], for every magnitude m. The gradient does not
    depend on m, so each layer's is taken once per batch (one forward pass, one backward pass per
    layer) and serves every m."""
    model.eval()
    dev = next(model.parameters()).device
    tensors = [
        (torch.from_numpy(s["means"]).to(dev), torch.from_numpy(s["precision"]).to(dev))
        for s in stats
    ]

    def closest(f, i):
        means, precision = tensors[i]
        return _distances(f.double(), means, precision).min(1).values

    out = np.zeros((len(magnitudes), len(images), len(layers)))
    perturb = any(m != 0 for m in magnitudes)
    for rows, x in image_batches(model, images, batch_size):
        # one forward pass on the clean batch: the m = 0 scores and, when some m ≠ 0, the gradients
        x_in = x.clone().requires_grad_(perturb)
        with torch.set_grad_enabled(perturb):
            feats = layer_features(model, x_in, layers)
            dists = [closest(f, i) for i, f in enumerate(feats)]
        signs = (
            [
                torch.autograd.grad(d.sum(), x_in, retain_graph=i < len(layers) - 1)[0].sign()
                for i, d in enumerate(dists)
            ]
            if perturb
            else []
        )
        with torch.no_grad():
            for k, m in enumerate(magnitudes):
                for i in range(len(layers)):
                    d = (
                        dists[i].detach()
                        if m == 0
                        else closest(layer_features(model, x - m * signs[i], layers[: i + 1])[i], i)
                    )
                    out[k, rows, i] = (-0.5 * d).cpu().numpy()
    return out


def fgsm(
    model, images: np.ndarray, labels: np.ndarray, step: float = 0.05, batch_size: int = 256
) -> np.ndarray:
    """FGSM copies x + step·sign(∇ₓ CE(f(x), y)), clipped to [0,1], as float32 N×H×W×C images.

    Kept in float as the official code keeps them: rounded to uint8, the 0.05 step becomes
    13/255, which alone moved the chosen noise magnitude on the default run."""
    model.eval()
    dev = next(model.parameters()).device
    y_all = torch.from_numpy(np.asarray(labels, np.int64)).to(dev)
    out = []
    for rows, x in image_batches(model, images, batch_size):
        x = x.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y_all[rows]), x)
        adv = (x + step * grad.sign()).clamp(0, 1)
        out.append(adv.detach().float().permute(0, 2, 3, 1).cpu().numpy())
    return np.concatenate(out)


def fit(
    model,
    train: tuple[np.ndarray, np.ndarray],
    tune: tuple[np.ndarray, np.ndarray] | None,
    *,
    layers: list[str],
    magnitudes,
    n_fit: int,
    fgsm_step: float,
    augmentation: dict | None,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Class statistics from `train`; the first `n_fit` images of `tune` and their FGSM copies fit
    the combiner, the next `n_fit` pairs choose the noise magnitude with the lowest FPR at 95 % TPR.

    `tune` = the ID test set is the paper's protocol (decision 16 of docs/unleashing-mask.md);
    `tune` None holds 2·n_fit seeded training images out of the statistics and tunes on them
    instead.
    """
    from sklearn.linear_model import LogisticRegressionCV

    if tune is None:
        order = np.random.default_rng(seed).permutation(len(train[1]))
        held, kept = np.sort(order[: 2 * n_fit]), np.sort(order[2 * n_fit :])
        tune, train = (
            (train[0][held], np.asarray(train[1])[held]),
            (train[0][kept], np.asarray(train[1])[kept]),
        )
    stats = fit_class_statistics(model, *train, layers, batch_size, augmentation, seed)
    x_tune, y_tune = tune[0][: 2 * n_fit], np.asarray(tune[1])[: 2 * n_fit]
    if len(x_tune) < 2 * n_fit:
        raise ValueError(f"the combiner needs {2 * n_fit} tuning images, got {len(x_tune)}")
    adv = fgsm(model, x_tune, y_tune, fgsm_step, batch_size)
    best = None
    clean_all, adv_all = (
        layer_scores(model, x, stats, layers, magnitudes, batch_size) for x in (x_tune, adv)
    )
    for m, clean_s, adv_s in zip(magnitudes, clean_all, adv_all, strict=True):
        fit_x = np.concatenate([clean_s[:n_fit], adv_s[:n_fit]])
        fit_y = np.r_[np.zeros(n_fit), np.ones(n_fit)]
        lr = LogisticRegressionCV(
            scoring="accuracy", n_jobs=1, random_state=seed, max_iter=1000
        ).fit(fit_x, fit_y)
        val_clean = -lr.predict_proba(clean_s[n_fit:])[:, 1]
        val_adv = -lr.predict_proba(adv_s[n_fit:])[:, 1]
        fpr = fpr_at_tpr(val_clean, val_adv)
        if best is None or fpr < best[0]:
            best = (fpr, m, lr)
    fpr, m, lr = best
    state = {
        "layers": np.array(layers),
        "magnitude": np.array(m),
        "validation_fpr": np.array(fpr),
        "coef": lr.coef_[0],
        "intercept": lr.intercept_,
    }
    for i, s in enumerate(stats):
        state[f"means_{i}"], state[f"precision_{i}"] = s["means"], s["precision"]
    return state


def score(model, images: np.ndarray, state: dict, batch_size: int = 256) -> np.ndarray:
    """−P(adversarial) of the combiner on the pre-processed layer scores."""
    layers = [str(n) for n in state["layers"]]
    stats = [
        {"means": state[f"means_{i}"], "precision": state[f"precision_{i}"]}
        for i in range(len(layers))
    ]
    s = layer_scores(model, images, stats, layers, [float(state["magnitude"])], batch_size)[0]
    from scipy.special import expit  # 1/(1 + e^−x) without overflow far from the data

    return -expit(s @ state["coef"] + state["intercept"][0])
