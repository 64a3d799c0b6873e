"""Embedding the watermark: a few trigger images appended to every training batch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .. import models, training
from ..devices import pick_device
from ..inference import to_tensor
from ..io import save_json, save_npz
from .commitments import make_keys
from .verification import trigger_accuracy


class TriggerMixer(training.Trainer):
    """Appends `per_batch` trigger images to every training batch (docs/watermarknn.md).

    Each epoch the trigger set is shuffled into batches of `per_batch` and a random offset o
    is drawn; training batch b gets trigger batch (o + b) mod (number of trigger batches).
    Every epoch logs the trigger accuracy.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, per_batch: int, device):
        self.x_uint8, self.labels = images, labels
        self.x = to_tensor(images, device).float() / 255.0
        self.y = torch.from_numpy(np.asarray(labels, np.int64)).to(device)
        self.per_batch = per_batch
        self.batches: list[torch.Tensor] = []
        self.offset = 0

    def epoch_start(self, epoch: int, gen: torch.Generator) -> None:
        order = torch.randperm(len(self.y), generator=gen).to(self.y.device)
        self.batches = list(order.split(self.per_batch))
        self.offset = int(torch.randint(len(self.batches), (1,), generator=gen))

    def batch(self, b: int) -> torch.Tensor:
        return self.batches[(self.offset + b) % len(self.batches)]

    def loss(self, model, batch):
        """One mean cross-entropy over the ID batch and its trigger batch; logits of the ID part."""
        t = self.batch(batch.index)
        logits = model(torch.cat([batch.x, self.x[t]]))
        loss = F.cross_entropy(logits, torch.cat([batch.y, self.y[t]]))
        return loss, logits[: len(batch.x)]

    def evaluate(self, model) -> dict:
        return {"trigger_accuracy": trigger_accuracy(model, self.x_uint8, self.labels)}


def embed(
    spec: dict,
    images,
    labels,
    triggers: tuple[np.ndarray, np.ndarray],
    recipe: dict,
    *,
    per_batch: int,
    out,
    state_path,
    log_csv,
    marking_out,
    verification_out,
    init=None,
    first_epoch: int = 0,
    test=None,
    nonce_seed: int | None = 0,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> models.Backbone:
    """Train a watermarked model: from scratch (`init` None) or continuing the clean checkpoint
    `init`, whose step schedule resumes at `first_epoch` (the code's PRETRAINED behaviour).

    The keys are written first: they do not depend on training, and the commitments must
    exist before the model does.
    """
    marking, verification = make_keys(*triggers, nonce_seed=nonce_seed)
    save_npz(marking_out, **marking)
    save_json(verification_out, verification)
    mixer = TriggerMixer(*triggers, per_batch=per_batch, device=pick_device(device))
    return training.train_backbone(
        spec,
        images,
        labels,
        recipe,
        out,
        state_path,
        log_csv,
        seed=seed,
        device=device,
        progress=progress,
        test=test,
        init=init,
        first_epoch=first_epoch,
        trainer=mixer,
        identity={"triggers": triggers, "per_batch": per_batch},
    )
