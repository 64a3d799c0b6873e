"""Seeded subsamples, one rule for every place that draws one (dataset samples, LA-OOD's
`max_fit`, the attacker's share of WatermarkNN's training set), so a seed means the same
everywhere."""

from __future__ import annotations

import numpy as np


def sample_indices(n_total: int, sample: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a seeded subsample of `sample` items (all of them when None or ≥ n)."""
    if sample is None or sample >= n_total:
        return np.arange(n_total)
    return np.sort(np.random.default_rng(seed).choice(n_total, size=sample, replace=False))
