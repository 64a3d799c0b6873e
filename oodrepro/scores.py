"""Post-hoc OOD scores: one function each, one registry, higher = more in-distribution.

A score reads either the cached features (`needs="features"`) or the network itself
(`needs="network"`, e.g. ODIN's input perturbation). A score with a `fit` step learns
its statistics from the ID training features once; the fitted state is a dict of arrays
saved as its own artifact.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, softmax

from . import featurenorm, laood
from .layout import CONVS
from .score_registry import SCORES, Score, register


def get(name: str) -> Score:
    """The registered score `name`; an unknown name is an error that lists the known ones."""
    if name not in SCORES:
        raise KeyError(f"unknown score {name!r}; known: {', '.join(sorted(SCORES))}")
    return SCORES[name]


# --------------------------------------------------------------------------- feature scores
@register("msp", "features", description="maximum softmax probability (Hendrycks & Gimpel 2017)")
def msp(features: dict, state=None) -> np.ndarray:
    """max_k softmax_k(z).
    Reads `logits`. Returns one float64 score per image, higher = more ID."""
    return softmax(features["logits"].astype(np.float64), axis=1).max(axis=1)


@register(
    "energy", "features", description="negative free energy T·logsumexp(z/T) (Liu et al. 2020)"
)
def energy(features: dict, state=None, temperature: float = 1.0) -> np.ndarray:
    """T·logsumexp(z/T), the negative free energy.
    Reads `logits`. Returns one float64 score per image, higher = more ID."""
    return _energy(features["logits"].astype(np.float64), temperature)


def _energy(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    return temperature * logsumexp(logits / temperature, axis=1)


def fit_mahalanobis(train: dict, layer: str = "penultimate") -> dict[str, np.ndarray]:
    """Class means and the tied (shared) covariance's pseudo-inverse, from ID training features."""
    f, y = train[layer].astype(np.float64), train["labels"]
    classes = np.unique(y)
    means = np.stack([f[y == c].mean(axis=0) for c in classes])
    centred = f - means[np.searchsorted(classes, y)]
    cov = centred.T @ centred / len(f)
    return {"means": means, "precision": np.linalg.pinv(cov, hermitian=True)}


@register(
    "mahalanobis",
    "features",
    fit=fit_mahalanobis,
    description="−min_c squared Mahalanobis distance, tied covariance, one layer (OpenOOD 'MDS')",
)
def mahalanobis(features: dict, state: dict, layer: str = "penultimate") -> np.ndarray:
    """−min_c (f − μ_c)ᵀ Σ⁺ (f − μ_c) with the tied covariance Σ of `fit_mahalanobis`.
    Reads the `layer` key (`penultimate` by default).
    Returns one float64 score per image, higher = more ID."""
    f = features[layer].astype(np.float64)
    dist = np.stack([_squared_distance(f, mu, state["precision"]) for mu in state["means"]], 1)
    return -dist.min(axis=1)


def _squared_distance(f: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """(f−μ)ᵀ P (f−μ) per row through one matrix product (BLAS), not a 3-operand einsum."""
    return (((f - mean) @ precision) * (f - mean)).sum(1)


def fit_featurenorm(
    train: dict, train_jigsaw: dict, block="auto", jigsaw_seed: int = 0
) -> dict[str, np.ndarray]:
    """NormRatio of every block from ID training images and their jigsaws; the chosen block."""
    names = [str(n) for n in train["block_names"]]
    ratios = featurenorm.norm_ratio(
        train["featnorm"].astype(np.float64), train_jigsaw["featnorm"].astype(np.float64)
    )
    chosen = featurenorm.select_block(ratios, names, block, str(train["arch"]))
    return {
        "normratio": ratios,
        "block": np.array(chosen),
        "block_names": np.array(names),
        "jigsaw_seed": np.array(jigsaw_seed),
    }


@register(
    "featurenorm",
    "features",
    fit=fit_featurenorm,
    fit_inputs=("train", "train_jigsaw"),
    description="FeatureNorm of the block chosen by NormRatio (Yu et al. 2023)",
)
def featurenorm_score(features: dict, state: dict) -> np.ndarray:
    """The FeatureNorm of the block `fit_featurenorm` chose (by NormRatio, or the config's).
    Reads `featnorm` (every block's FeatureNorm, one column each).
    Returns one float64 score per image, higher = more ID.
    """
    return features["featnorm"][:, int(state["block"])].astype(np.float64)


LAOOD_FIT_KEYS = ("gammas", "nu", "val_fraction", "split_seed", "edge_threshold", "shift_rule")


def fit_laood(
    train_convs: dict,
    n_jobs: int = 1,
    max_fit: int | None = None,
    fit_seed: int = 0,
    layers_per_job: int | None = None,
    only: list[int] | None = None,
    **options,
) -> dict[str, np.ndarray]:
    """One RBF one-class SVM per layer, γ chosen by SDS (see oodrepro.laood). `only` fits just
    those layers (one piece of a split fit; `laood.merge_arrays` joins the pieces);
    `layers_per_job` shapes the workflow's split, not the result."""
    unknown = set(options) - set(LAOOD_FIT_KEYS)
    if unknown:
        raise TypeError(f"unknown LA-OOD options {sorted(unknown)}")
    names = [str(n) for n in train_convs["layer_names"]]
    chosen = range(len(names)) if only is None else only
    layers = [train_convs[f"layer_{j}"] for j in chosen]
    detectors = laood.fit(layers, n_jobs=n_jobs, max_fit=max_fit, seed=fit_seed, **options)
    return laood.to_arrays(detectors, [names[j] for j in chosen])


@register(
    "laood",
    "features",
    fit=fit_laood,
    fit_inputs=("train_convs",),
    reads=CONVS,
    keeps_rows=True,  # support vectors
    description="LA-OOD: min over layers of per-layer OCSVM decision values (Wang et al. 2022)",
)
def laood_score(features: dict, state: dict) -> np.ndarray:
    """min over layers of the fitted one-class SVMs' decision values (`fit_laood`).
    Reads `layer_names` and `layer_<j>` of the `.convs` file. Returns one float64 score per image,
    higher = more ID.
    """
    return laood.score(laood.decisions(laood.from_arrays(state), laood.layers_of(features)))


# --------------------------------------------------------------------------- logit and activation
# scores
# These read the logits, the penultimate vector h and the classifier head (W, b), which
# every feature file carries (`fc_weight`, `fc_bias`), so they cost no network pass.


def _head_score(logits: np.ndarray, score: str) -> np.ndarray:
    """The logit-based score a feature-shaping method (ReAct, DICE, ASH) finishes with."""
    if score == "energy":
        return _energy(logits)
    if score == "msp":
        return softmax(logits, axis=1).max(axis=1)
    if score == "maxlogit":
        return logits.max(axis=1)
    raise ValueError(f"unknown head score {score!r}; known: energy, msp, maxlogit")


def _head(features: dict) -> tuple[np.ndarray, np.ndarray]:
    return features["fc_weight"].astype(np.float64), features["fc_bias"].astype(np.float64)


@register(
    "maxlogit",
    "features",
    description="maximum logit max_k z_k (Hendrycks et al. 2022; OpenOOD 'MLS')",
)
def maxlogit(features: dict, state=None) -> np.ndarray:
    """max_k z_k.
    Reads `logits`. Returns one float64 score per image, higher = more ID."""
    return features["logits"].astype(np.float64).max(axis=1)


@register(
    "gen", "features", description="GEN: −Σ_top-M p^γ(1−p)^γ, generalised entropy (Liu et al. 2023)"
)
def gen(features: dict, state=None, gamma: float = 0.1, top: int = 100) -> np.ndarray:
    """−Σ_{j ≤ M} p_(j)^γ (1 − p_(j))^γ over the M largest softmax probabilities (M = min(top, K)).
    Reads `logits`. Returns one float64 score per image, higher = more ID.
    """
    p = softmax(features["logits"].astype(np.float64), axis=1)
    p = -np.sort(-p, axis=1)[:, : min(top, p.shape[1])]
    return -(p**gamma * (1 - p) ** gamma).sum(axis=1)


def fit_react(train: dict, percentile: float = 90.0) -> dict[str, np.ndarray]:
    """ReAct's clip value: the `percentile` of every ID training activation of h."""
    return {"clip": np.array(np.percentile(train["penultimate"].astype(np.float64), percentile))}


@register(
    "react",
    "features",
    fit=fit_react,
    description=(
        "ReAct: h clipped at a percentile of ID training activations, then Energy (Sun et al. 2021)"
    ),
)
def react(
    features: dict, state: dict, percentile: float = 90.0, score: str = "energy"
) -> np.ndarray:
    """score(W·min(h, c) + b), c from `fit_react`; Energy by default (the FeatureNorm paper's
    Energy+ReAct).
    Reads `penultimate`, `fc_weight`, `fc_bias`.
    Returns one float64 score per image, higher = more ID.
    """
    w, b = _head(features)
    h = np.minimum(features["penultimate"].astype(np.float64), float(state["clip"]))
    return _head_score(h @ w.T + b, score)


def fit_dice(train: dict, sparsity: float = 90.0) -> dict[str, np.ndarray]:
    """DICE's weight mask: keep the head weights whose contribution W ⊙ mean_ID(h) lies above
    its `sparsity` percentile (90 keeps the top 10 %)."""
    w, _ = _head(train)
    contribution = w * train["penultimate"].astype(np.float64).mean(axis=0)
    return {"mask": contribution > np.percentile(contribution, sparsity)}


@register(
    "dice",
    "features",
    fit=fit_dice,
    description=(
        "DICE: the head sparsified by weight × mean-activation contribution,"
        " then Energy (Sun & Li 2022)"
    ),
)
def dice(features: dict, state: dict, sparsity: float = 90.0, score: str = "energy") -> np.ndarray:
    """score((W ⊙ M)·h + b) with the mask M from `fit_dice`; Energy by default (Energy+DICE).
    Reads `penultimate`, `fc_weight`, `fc_bias`.
    Returns one float64 score per image, higher = more ID.
    """
    w, b = _head(features)
    return _head_score(
        features["penultimate"].astype(np.float64) @ (w * state["mask"]).T + b, score
    )


@register(
    "ash",
    "features",
    description=(
        "ASH: prune h below its per-sample percentile, rescale, then Energy (Djurisic et al. 2023)"
    ),
)
def ash(
    features: dict, state=None, percentile: float = 90.0, variant: str = "b", score: str = "energy"
) -> np.ndarray:
    """Per sample keep the k = n − round(n·percentile/100) largest entries of h and
    `b`: set them to sum(h)/k; `p`: keep them as they are; `s`: scale them by exp(sum(h)/sum(kept));
    the rest are zeroed; then score(W·h' + b). On the pooled penultimate vector, as OpenOOD does.
    Reads `penultimate`, `fc_weight`, `fc_bias`.
    Returns one float64 score per image, higher = more ID.
    """
    w, b = _head(features)
    h = features["penultimate"].astype(np.float64)
    n = h.shape[1]
    k = n - int(np.round(n * percentile / 100.0))
    top = np.argpartition(-h, k - 1, axis=1)[:, :k]
    kept = np.take_along_axis(h, top, axis=1)
    total = h.sum(axis=1, keepdims=True)
    if variant == "b":
        values = np.broadcast_to(total / k, kept.shape)
    elif variant == "p":
        values = kept
    elif variant == "s":
        values = kept * np.exp(total / kept.sum(axis=1, keepdims=True))
    else:
        raise ValueError(f"unknown ASH variant {variant!r}; known: b, p, s")
    shaped = np.zeros_like(h)
    np.put_along_axis(shaped, top, values, axis=1)
    return _head_score(shaped @ w.T + b, score)


def _unit(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-10)


def fit_knn(train: dict) -> dict[str, np.ndarray]:
    """The L2-normalised penultimate vectors of the ID training set (the neighbours)."""
    return {"bank": _unit(train["penultimate"])}


@register(
    "knn",
    "features",
    fit=fit_knn,
    keeps_rows=True,
    description=(
        "KNN: −distance to the k-th nearest normalised ID training feature (Sun et al. 2022)"
    ),
)
def knn(features: dict, state: dict, k: int = 50, block: int = 1024) -> np.ndarray:
    """−‖z − z_(k)‖₂ with z = h/‖h‖₂ and z_(k) its k-th nearest training vector: exact search by
    blocks of `block` rows (‖z − y‖² = 2 − 2 zᵀy for unit vectors; one matrix product a block).
    Reads `penultimate`. Returns one float64 score per image, higher = more ID.
    """
    bank, z = state["bank"], _unit(features["penultimate"])
    if not 1 <= k <= len(bank):
        raise ValueError(f"knn: k = {k} but the training bank has {len(bank)} vectors")
    out = np.empty(len(z))
    for i in range(0, len(z), block):
        sims = z[i : i + block] @ bank.T
        kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1]  # the k-th largest similarity
        out[i : i + block] = -np.sqrt(np.maximum(2.0 - 2.0 * kth.astype(np.float64), 0.0))
    return out


def fit_vim(train: dict, dim: int = 256) -> dict[str, np.ndarray]:
    """ViM's origin u = −W⁺b, the complement of the `dim`-dimensional principal subspace of
    the centred ID training features, and α = mean max-logit / mean residual norm on them."""
    w, b = _head(train)
    h = train["penultimate"].astype(np.float64)
    if not 0 < dim < h.shape[1]:
        raise ValueError(
            f"vim: dim = {dim} must lie strictly between 0 and the feature size {h.shape[1]}"
        )
    u = -np.linalg.pinv(w) @ b
    centred = h - u
    eigvals, eigvecs = np.linalg.eigh(centred.T @ centred / len(h))
    residual_space = eigvecs[
        :, np.argsort(eigvals)[::-1][dim:]
    ]  # all but the `dim` principal directions
    residual = np.linalg.norm(centred @ residual_space, axis=1)
    alpha = (h @ w.T + b).max(axis=1).mean() / residual.mean()
    return {"origin": u, "residual_space": residual_space, "alpha": np.array(alpha)}


@register(
    "vim",
    "features",
    fit=fit_vim,
    description="ViM: Energy − α·‖residual of h off the principal subspace‖ (Wang et al. 2022)",
)
def vim(features: dict, state: dict, dim: int = 256) -> np.ndarray:
    """Energy(z) − α·‖(h − o) R‖, with R the principal-subspace complement, o the origin and α
    from `fit_vim`.
    Reads `logits`, `penultimate`. Returns one float64 score per image, higher = more ID."""
    h = features["penultimate"].astype(np.float64)
    residual = np.linalg.norm((h - state["origin"]) @ state["residual_space"], axis=1)
    return _energy(features["logits"].astype(np.float64)) - float(state["alpha"]) * residual


def fit_rmds(train: dict) -> dict[str, np.ndarray]:
    """Class means with a tied covariance (as `mahalanobis`), plus one Gaussian over all ID
    training features: the background RMDS subtracts."""
    state = fit_mahalanobis(train, "penultimate")
    f = train["penultimate"].astype(np.float64)
    mean = f.mean(axis=0)
    centred = f - mean
    state.update(
        background_mean=mean,
        background_precision=np.linalg.pinv(centred.T @ centred / len(f), hermitian=True),
    )
    return state


@register(
    "rmds",
    "features",
    fit=fit_rmds,
    description=(
        "RMDS: −min_c (MD_c − MD_background), relative Mahalanobis distance (Ren et al. 2021)"
    ),
)
def rmds(features: dict, state: dict) -> np.ndarray:
    """−min_c (MD_c(h) − MD_background(h)), both squared Mahalanobis distances fitted by `fit_rmds`.
    Reads `penultimate`. Returns one float64 score per image, higher = more ID."""
    background = _squared_distance(
        features["penultimate"].astype(np.float64),
        state["background_mean"],
        state["background_precision"],
    )
    return mahalanobis(features, state, "penultimate") + background


# --------------------------------------------------------------------------- network scores
@register(
    "odin",
    "network",
    description="ODIN: temperature scaling and input perturbation (Liang et al. 2018)",
)
def odin(
    model,
    images: np.ndarray,
    state=None,
    temperature: float = 1000.0,
    epsilon: float = 0.0014,
    batch_size: int = 256,
    progress: bool = True,
) -> np.ndarray:
    """max softmax(f(x̃)/T) with x̃ = x − ε·sign(∇ₓ CE(f(x)/T, ŷ)), x in [0,1], no clipping.
    Reads the network and uint8 images, not cached features. Returns one float64 score per image,
    higher = more ID.
    """
    import torch
    import torch.nn.functional as F

    from .inference import image_batches

    model.eval()
    out = []
    for _, x in image_batches(model, images, batch_size, "odin", progress):
        x = x.requires_grad_(True)
        logits = model(x) / temperature
        loss = F.cross_entropy(logits, logits.argmax(1))
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            z = model(x - epsilon * grad.sign()) / temperature
            out.append(torch.softmax(z.double(), dim=1).max(dim=1).values.cpu())
    return torch.cat(out).numpy()


# Lee et al.'s input-noise magnitudes, among which the Mahalanobis ensemble's fit chooses
MAHALANOBIS_NOISE_GRID = (0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005)


def fit_mahalanobis_ensemble(
    model,
    train,
    tune,
    *,
    layers,
    tune_on: str = "id_test",
    n_fit: int = 500,
    magnitudes=MAHALANOBIS_NOISE_GRID,
    fgsm_step: float = 0.05,
    augment_train: bool = True,
    augmentation: dict | None = None,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """`tune_on`: id_test (the paper: first n_fit fit the combiner, the next n_fit pick the noise)
    or train_holdout (2·n_fit training images held out of the statistics)."""
    from . import mahalanobis_ensemble

    return mahalanobis_ensemble.fit(
        model,
        train,
        tune if tune_on == "id_test" else None,
        layers=list(layers),
        magnitudes=list(magnitudes),
        n_fit=n_fit,
        fgsm_step=fgsm_step,
        augmentation=augmentation if augment_train else None,
        seed=seed,
        batch_size=batch_size,
    )


@register(
    "mahalanobis_ensemble",
    "network",
    fit=fit_mahalanobis_ensemble,
    description="Mahalanobis with input pre-processing and a layer ensemble fitted against FGSM "
    "(Lee et al. 2018)",
)
def mahalanobis_ensemble_score(
    model, images: np.ndarray, state: dict, batch_size: int = 256, progress: bool = True
) -> np.ndarray:
    """The combiner over the fitted layers' Mahalanobis scores at the chosen noise magnitude
    (`fit_mahalanobis_ensemble`, `mahalanobis_ensemble.score`).
    Reads the network and uint8 images, not cached features. Returns one float64 score per image,
    higher = more ID.
    """
    from . import mahalanobis_ensemble

    return mahalanobis_ensemble.score(model, images, state, batch_size)
