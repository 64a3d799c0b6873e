"""LA-OOD: one-class SVMs on every layer's pooled output (Wang et al., PAKDD 2022; docs/la-ood.md).

Per layer: standardise the ID training vectors, choose the RBF γ without OOD data by
self-adaptive data shifting (edge points of a held-out ID split pushed outward become
pseudo-outliers), refit on all training vectors. The score is the maximum over layers of
the negated decision values (native: higher = OOD); the project's score is its negation,
min over layers of the decision values (higher = ID).

Fitted detectors are stored as plain arrays (scaler, support vectors, dual coefficients,
intercept, γ) and evaluated here, so no pickled estimator is ever loaded.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .sampling import sample_indices

if TYPE_CHECKING:
    import pandas as pd

GAMMAS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
NU = 0.001


@dataclass
class Edges:
    """SDS edge points of a sample: their indices, unit outward normals and the shift length."""

    index: np.ndarray
    normals: np.ndarray
    shift: float


def find_edges(x: np.ndarray, edge_threshold: float = 0.01, shift_rule: str = "code") -> Edges:
    """Self-adaptive data shifting: edge points and how far to push them (docs/la-ood.md).

    k = ⌈5·log10 n⌉ neighbours; x_i is an edge point when the fraction l_i of its neighbour
    directions v_ij with v_ij·n_i ≥ 0 exceeds 1 − threshold, n_i = Σ_j v_ij. The shift
    length is the official code's (`code`: the mean of the (k+1)-NN distance rows, self
    distance included, over edge points 2…E) or the original SDS one (`all`: the mean
    kNN distance over all points).
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(x)
    k = math.ceil(5 * math.log10(n))
    if n <= k:
        raise ValueError(f"SDS needs more than k = {k} points, got {n}")
    dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x)
    diff = x[:, None, :] - x[idx[:, 1:]]  # n×k×D, the point itself dropped
    v = diff / (np.linalg.norm(diff, axis=2, keepdims=True) + 1e-8)
    normal = v.sum(axis=1)
    share = (np.einsum("nkd,nd->nk", v, normal) >= 0).mean(axis=1)
    edge = np.flatnonzero(share > 1 - edge_threshold)
    if shift_rule == "code":
        rows = dist[edge[1:]] if len(edge) > 1 else dist[edge]
        shift = float(rows.mean()) if len(rows) else 0.0
    elif shift_rule == "all":
        shift = float(dist[:, 1:].mean())
    else:
        raise ValueError(f"unknown shift rule {shift_rule!r}; 'code' or 'all'")
    unit = normal[edge] / (np.linalg.norm(normal[edge], axis=1, keepdims=True) + 1e-12)
    return Edges(edge, unit, shift)


def pseudo_outliers(x: np.ndarray, edges: Edges) -> np.ndarray:
    """Edge points pushed outward along their normals by the shift length."""
    return x[edges.index] + edges.normals * edges.shift


def choose_gamma(errors: dict[float, float]) -> float | None:
    """The γ with strictly the smallest error (ties → the smaller γ); None if none beats 1.0."""
    best, best_err = None, 1.0
    for gamma in sorted(errors):
        if errors[gamma] < best_err:
            best, best_err = gamma, errors[gamma]
    return best


@dataclass
class LayerDetector:
    mean: np.ndarray
    scale: np.ndarray
    support: np.ndarray
    dual_coef: np.ndarray
    intercept: float
    gamma: float
    nu: float
    errors: dict

    def decision(self, h: np.ndarray, batch: int = 4096) -> np.ndarray:
        """Σ_i α_i·exp(−γ‖z − sv_i‖²) − ρ of standardised z, as sklearn's decision_function."""
        z = (h - self.mean) / self.scale
        out = np.empty(len(z))
        sv_sq = (self.support**2).sum(1)
        for i in range(0, len(z), batch):
            zb = z[i : i + batch]
            d2 = (zb**2).sum(1)[:, None] + sv_sq[None] - 2 * zb @ self.support.T
            out[i : i + batch] = (
                np.exp(-self.gamma * np.maximum(d2, 0)) @ self.dual_coef + self.intercept
            )
        return out


def fit_layer(
    h: np.ndarray,
    gammas=GAMMAS,
    nu: float = NU,
    val_fraction: float = 0.3,
    split_seed: int = 42,
    edge_threshold: float = 0.01,
    shift_rule: str = "code",
) -> LayerDetector:
    """Standardise, choose γ by SDS on a 70/30 split of the ID vectors, refit on all of them."""
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import OneClassSVM

    h = np.asarray(h, np.float64)
    scaler = StandardScaler().fit(h)
    x = scaler.transform(h)
    train_x, val_x = train_test_split(x, test_size=val_fraction, random_state=split_seed)
    edges = find_edges(val_x, edge_threshold, shift_rule)
    outliers = pseudo_outliers(val_x, edges)
    errors = {}
    for gamma in gammas:
        svm = OneClassSVM(kernel="rbf", gamma=gamma, nu=nu).fit(train_x)
        err_o = float(np.mean(svm.predict(outliers) == 1)) if len(outliers) else 0.0
        err_t = float(np.mean(svm.predict(val_x) == -1))
        errors[float(gamma)] = 0.5 * err_o + 0.5 * err_t
    gamma = choose_gamma(errors)
    if gamma is None:  # the code's fallback
        gamma, nu = 1.0 / (train_x.shape[1] * train_x.std()), 0.5
        warnings.warn(
            f"no γ beat error 1.0; falling back to γ = {gamma:.3g}, ν = 0.5", stacklevel=2
        )
    svm = OneClassSVM(kernel="rbf", gamma=gamma, nu=nu).fit(x)
    return LayerDetector(
        scaler.mean_,
        scaler.scale_,
        svm.support_vectors_,
        svm.dual_coef_.ravel(),
        float(svm.intercept_[0]),
        float(gamma),
        float(nu),
        errors,
    )


def fit(
    layers: list[np.ndarray], n_jobs: int = 1, max_fit: int | None = None, seed: int = 0, **kwargs
) -> list[LayerDetector]:
    """One detector per layer, fitted in parallel; `max_fit` subsamples the ID vectors (seeded)."""
    from joblib import Parallel, delayed

    keep = sample_indices(len(layers[0]), max_fit, seed)
    layers = [h[keep] for h in layers]
    return Parallel(n_jobs=n_jobs)(delayed(fit_layer)(h, **kwargs) for h in layers)


def layers_of(features: dict) -> list[np.ndarray]:
    """The per-layer arrays of a conv-features file (features.extract_convs), in layer order."""
    return [features[f"layer_{j}"] for j in range(len(features["layer_names"]))]


def decisions(detectors: list[LayerDetector], layers: list[np.ndarray]) -> np.ndarray:
    """N×L decision values, positive = inlier for that layer."""
    return np.stack([det.decision(h) for det, h in zip(detectors, layers, strict=True)], axis=1)


def score(decision_values: np.ndarray) -> np.ndarray:
    """Project orientation (higher = ID): −max_ℓ(−d_ℓ) = min_ℓ d_ℓ."""
    return decision_values.min(axis=1)


# --------------------------------------------------------------------------- storage as arrays
def to_arrays(detectors: list[LayerDetector], names: list[str]) -> dict[str, np.ndarray]:
    out = {
        "layer_names": np.array(names),
        "gamma": np.array([d.gamma for d in detectors]),
        "nu": np.array([d.nu for d in detectors]),
        "error_grid": np.array([[d.errors.get(g, np.nan) for g in GAMMAS] for d in detectors]),
        "gamma_grid": np.array(GAMMAS),
    }
    for i, d in enumerate(detectors):
        out.update(
            {
                f"l{i}_mean": d.mean,
                f"l{i}_scale": d.scale,
                f"l{i}_support": d.support,
                f"l{i}_dual_coef": d.dual_coef,
                f"l{i}_intercept": np.array(d.intercept),
            }
        )
    return out


def merge_arrays(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The detector file of a whole backbone from the files of its pieces (layers in order):
    exactly what `to_arrays` writes for all layers fitted in one job."""
    out = {"gamma_grid": parts[0]["gamma_grid"]}
    for key in ("layer_names", "gamma", "nu", "error_grid"):
        out[key] = np.concatenate([p[key] for p in parts])
    i = 0
    for part in parts:
        for j in range(len(part["layer_names"])):
            for field in ("mean", "scale", "support", "dual_coef", "intercept"):
                out[f"l{i}_{field}"] = part[f"l{j}_{field}"]
            i += 1
    return out


# --------------------------------------------------------------------------- cost of a piece
# Measured with bench/laood_cost.py on one core of a 2-core AMD EPYC (n = 1,000 … 32,000, D = 512):
# the fit grows as n^2.14, which puts one layer at n = 50,000 at about 32 minutes; time is taken
# as linear in D. A piece asks for twice its estimate plus 5 minutes.
SECONDS_AT_50K_512 = 32 * 60
EXPONENT = 2.14


def layer_seconds(n: int, dim: int) -> float:
    """Expected fit time of one layer (SDS, 7 γ on the 70 % split, refit) on one core."""
    return SECONDS_AT_50K_512 * (n / 50_000) ** EXPONENT * max(dim, 16) / 512


def layer_memory_mb(n: int, dim: int) -> int:
    """Peak memory of one layer's fit: the float64 copies of the data, SDS's n_val × k × D
    neighbour differences (three arrays at once) and libsvm's 200 MB kernel cache."""
    n_val = max(1, round(0.3 * n))
    k = math.ceil(5 * math.log10(max(n_val, 2)))
    data = 8 * n * dim * 4
    sds = 3 * 8 * n_val * k * dim
    return int((data + sds) / 2**20) + 200 + 500


def from_arrays(state: dict[str, np.ndarray]) -> list[LayerDetector]:
    return [
        LayerDetector(
            state[f"l{i}_mean"],
            state[f"l{i}_scale"],
            state[f"l{i}_support"],
            state[f"l{i}_dual_coef"],
            float(state[f"l{i}_intercept"]),
            float(state["gamma"][i]),
            float(state["nu"][i]),
            {},
        )
        for i in range(len(state["layer_names"]))
    ]


def layer_table(state: dict, d_id: np.ndarray, d_ood: dict[str, np.ndarray]) -> "pd.DataFrame":
    """Per layer: γ, each OOD set's AUROC of that layer alone (an oracle view, not the method),
    and how often the layer decides the combined score (attains the min) on ID and OOD inputs."""
    import pandas as pd

    from .metrics import ood_metrics

    names = [str(n) for n in state["layer_names"]]
    decides_id = np.bincount(d_id.argmin(1), minlength=len(names)) / len(d_id)
    decides_ood = np.mean(
        [np.bincount(d.argmin(1), minlength=len(names)) / len(d) for d in d_ood.values()], axis=0
    )
    rows = []
    for j, name in enumerate(names):
        aurocs = {f"auroc {k}": ood_metrics(d_id[:, j], d[:, j])["auroc"] for k, d in d_ood.items()}
        rows.append(
            {
                "layer": name,
                "gamma": float(state["gamma"][j]),
                **aurocs,
                "auroc mean": float(np.mean(list(aurocs.values()))),
                "decides ID": float(decides_id[j]),
                "decides OOD": float(decides_ood[j]),
            }
        )
    return pd.DataFrame(rows)
