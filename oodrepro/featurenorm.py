"""FeatureNorm and NormRatio block selection (Yu et al., CVPR 2023; docs/featurenorm.md).

FeatureNorm of a block is the channel mean of the spatial L2 norms of its ReLU'd output:
large means ID. The block is chosen without OOD data, by the largest NormRatio: the mean
over ID training images of FeatureNorm(x) / FeatureNorm(jigsaw(x)), jigsaw puzzles of the
images themselves acting as pseudo-OOD.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch and pandas load only in the functions that use them
    import pandas as pd
    import torch

TILE = 10  # ⌊32 / 3⌋: tiles cover the top-left 30×30, rows and columns 30–31 stay zero
GRID = 3

# The block the paper's evaluation hard-codes, per architecture (docs/featurenorm.md).
PAPER_BLOCK = {"resnet18": "layer4.0"}


def feature_norm(block_output: torch.Tensor) -> torch.Tensor:
    """(1/M) Σ_m ‖ReLU(A_m)‖₂ for a batch of block outputs A (B×M×H×W) → B values."""
    import torch

    return torch.relu(block_output).flatten(2).norm(dim=2).mean(dim=1)


def jigsaw_permutations(n: int, seed: int) -> torch.Tensor:
    """n uniformly random permutations of the 9 tile positions (identity allowed), seeded."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.argsort(torch.rand(n, GRID * GRID, generator=gen), dim=1)


def jigsaw(z: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
    """Shuffle 3×3 tiles of 10×10 px over the top-left 30×30 of each image; the rest is zero.

    `z` is a batch (B×C×H×W, H, W ≥ 30) in the space the network sees; output position d
    of image i receives source tile perms[i, d].
    """
    import torch

    b, c = z.shape[:2]
    span = GRID * TILE
    tiles = z[:, :, :span, :span].unfold(2, TILE, TILE).unfold(3, TILE, TILE)  # B×C×3×3×T×T
    tiles = tiles.reshape(b, c, GRID * GRID, TILE, TILE)
    moved = tiles[torch.arange(b, device=z.device)[:, None], :, perms.to(z.device)]  # B×9×C×T×T
    grid = (
        moved.reshape(b, GRID, GRID, c, TILE, TILE)
        .permute(0, 3, 1, 4, 2, 5)
        .reshape(b, c, span, span)
    )
    out = torch.zeros_like(z)
    out[:, :, :span, :span] = grid
    return out


def jigsaw_transform(n: int, seed: int):
    """A features.extract transform: image i of n is jigsawed with its own permutation."""
    perms = jigsaw_permutations(n, seed)
    return lambda z, rows: jigsaw(z, perms[rows])


def norm_ratio(fn_id: np.ndarray, fn_jigsaw: np.ndarray) -> np.ndarray:
    """Per block, the mean over images of FeatureNorm(x_i) / FeatureNorm(jigsaw(x_i)).

    Both arguments are N×blocks arrays of FeatureNorm values for the same images in the
    same order. A mean of per-image ratios, not a ratio of means.
    """
    if fn_id.shape != fn_jigsaw.shape:
        raise ValueError(f"FeatureNorm arrays differ in shape: {fn_id.shape} vs {fn_jigsaw.shape}")
    return (fn_id / np.maximum(fn_jigsaw, 1e-12)).mean(axis=0)


def select_block(
    ratios: np.ndarray, block_names: list[str], block="auto", arch: str | None = None
) -> int:
    """The block index to score: argmax NormRatio (`auto`), or a pinned index or name.

    With `auto`, a selection that differs from the paper's block for `arch` is warned about.
    """
    if block == "auto":
        chosen = int(np.argmax(ratios))
        expected = PAPER_BLOCK.get(arch or "")
        if expected and expected in block_names and block_names[chosen] != expected:
            warnings.warn(
                f"NormRatio selected {block_names[chosen]}, the paper's {arch} uses {expected}",
                stacklevel=2,
            )
        return chosen
    if isinstance(block, str):
        if block not in block_names:
            raise KeyError(f"no block {block!r}; blocks: {', '.join(block_names)}")
        return block_names.index(block)
    if not 0 <= int(block) < len(block_names):
        raise IndexError(f"block index {block} out of range 0..{len(block_names) - 1}")
    return int(block)


def block_table(
    ratios: np.ndarray,
    names: list[str],
    selected: int,
    fn_id: np.ndarray,
    fn_ood: dict[str, np.ndarray],
) -> "pd.DataFrame":
    """Per block: NormRatio, whether it was selected, and FeatureNorm's AUROC on every OOD set.

    Answers the question the paper leaves to the reader: does the block NormRatio picks
    (without OOD data) land among the blocks that actually separate ID from OOD best?
    """
    import pandas as pd

    from .metrics import ood_metrics

    rows = []
    for j, name in enumerate(names):
        aurocs = {
            f"auroc {k}": ood_metrics(fn_id[:, j], v[:, j])["auroc"] for k, v in fn_ood.items()
        }
        rows.append(
            {
                "block": name,
                "normratio": float(ratios[j]),
                "selected": j == selected,
                **aurocs,
                "auroc mean": float(np.mean(list(aurocs.values()))),
            }
        )
    table = pd.DataFrame(rows)
    table["auroc rank"] = table["auroc mean"].rank(ascending=False, method="min").astype(int)
    return table
