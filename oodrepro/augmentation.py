"""The training-time image transform and the seeded random stream of each epoch.

Every trainer (backbones, fine-tunes, watermarks, attacks) and the Mahalanobis ensemble's
class statistics augment with the same whole-batch crop and flip; drawing epoch e's choices
from a generator seeded by (seed, e) is what lets a resumed run repeat an uninterrupted one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def augment(batch: torch.Tensor, padding: int, flip: bool, gen: torch.Generator) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip, for a whole float batch at once."""
    n, _, h, w = batch.shape
    if padding:
        padded = F.pad(batch, (padding,) * 4)
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(batch.device)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=gen).to(batch.device)
        rows = (oy[:, None] + torch.arange(h, device=batch.device))[:, :, None]  # n×h×1
        cols = (ox[:, None] + torch.arange(w, device=batch.device))[:, None, :]  # n×1×w
        batch = padded[
            torch.arange(n, device=batch.device)[:, None, None], :, rows, cols
        ]  # n×h×w×c
        batch = batch.permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=gen) < 0.5).to(batch.device)
        batch = torch.where(mask[:, None, None, None], batch.flip(3), batch)
    return batch.contiguous()


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of every random choice of epoch `epoch` of a run seeded `seed`."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)
