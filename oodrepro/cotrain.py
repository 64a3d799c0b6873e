"""LA-OOD's optional co-training: the official `co_train.py`, repaired (docs/la-ood.md, 12).

The trained backbone is fine-tuned so that its ID features sit deeper inside the one-class SVMs
LA-OOD fitted on it, with the SVMs held fixed:

    L = CE − λ · 1/(2|S|) · Σ_{ℓ∈S} Σ_{x∈batch} Σ_j α_ℓj · exp(−γ_ℓ ‖z_ℓ(x) − sv_ℓj‖²)

z_ℓ is layer ℓ's pooled pre-BN output standardised with statistics of the training set taken
at the start of each epoch; ρ is dropped. S is every layer, or `layers` drawn at random per step
(the code's ResNet-34 setting: 10). The original never loads the trained backbone and crashes on
DenseNet; here it starts from the checkpoint the detectors were fitted on, and any backbone's
LA-OOD layers (features.conv_layers, plus the logits where the backbone uses them) take part.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import training
from .features import conv_layers, extract_convs


class CoTraining(training.Trainer):
    """Cross-entropy minus the SVMs' kernel sums of the batch's standardised layer vectors.

    `detector`: the arrays `laood.to_arrays` wrote for this model (layer names, support vectors,
    dual coefficients, γ); `images`: the ID training set (the per-epoch statistics are taken on
    it, unaugmented, in eval mode); `weight`: λ; `layers`: |S| per step (None: the backbone's
    own, `cotrain_layers`: every layer for VGG-16, 10 for the others).
    """

    def __init__(
        self, model, detector: dict, images: np.ndarray, *, weight: float, layers, batch_size
    ):
        convs = conv_layers(model)
        names = [str(n) for n in detector["layer_names"]]
        self.logits = names[-1:] == ["logits"]
        expected = [n for n, _ in convs] + ["logits"] * self.logits
        if names != expected:
            raise ValueError(
                f"the LA-OOD detectors name the layers {names[:3]}… ({len(names)}), this model "
                f"has {expected[:3]}… ({len(expected)}): they were fitted on another backbone"
            )
        dev = next(model.parameters()).device

        def tensor(key):
            return torch.as_tensor(np.asarray(detector[key]), dtype=torch.float32, device=dev)

        self.support = [tensor(f"l{i}_support") for i in range(len(names))]
        self.alpha = [tensor(f"l{i}_dual_coef") for i in range(len(names))]
        self.gamma = [float(g) for g in detector["gamma"]]
        self.weight, self.batch_size, self.images = weight, batch_size, images
        layers = model.cotrain_layers if layers is None else layers
        self.per_step = None if layers is None or layers >= len(names) else int(layers)
        self.model, self.pooled, self.mean, self.std = model, {}, [], []
        self.hooks = [  # removed by `close`
            m.register_forward_hook(lambda _m, _i, out, j=j: self._keep(j, out))
            for j, (_, m) in enumerate(convs)
        ]

    def _keep(self, j: int, out: torch.Tensor) -> None:
        if torch.is_grad_enabled():  # the training steps, not the statistics pass
            self.pooled[j] = out.float().mean((2, 3))

    def epoch_start(self, epoch, gen):
        """Each layer's mean and std over the training set under the current weights."""
        arrays = extract_convs(self.model, self.images, self.batch_size, logits=self.logits)
        dev = self.support[0].device
        vectors = [arrays[f"layer_{j}"] for j in range(len(self.support))]
        self.mean = [torch.as_tensor(v.mean(0), device=dev) for v in vectors]
        # a constant dimension is left unscaled, as StandardScaler does
        self.std = [
            torch.as_tensor(np.where(v.std(0) > 0, v.std(0), 1), device=dev) for v in vectors
        ]

    def loss(self, model, batch):
        self.pooled.clear()
        logits = model(batch.x)
        layers = [self.pooled[j] for j in range(len(self.pooled))] + [logits.float()] * self.logits
        ce = F.cross_entropy(logits.float(), batch.y)
        chosen = range(len(layers))
        if self.per_step is not None:
            chosen = torch.randperm(len(layers), generator=batch.gen)[: self.per_step].tolist()
        inlier = sum(self._kernel_sum(j, layers[j]) for j in chosen)
        return ce - self.weight / (2 * len(chosen)) * inlier, logits

    def _kernel_sum(self, j: int, h: torch.Tensor) -> torch.Tensor:
        """Σ_x Σ_i α_i·exp(−γ‖z(x) − sv_i‖²) for the batch's vectors h of layer j."""
        z = (h - self.mean[j]) / self.std[j]
        sv = self.support[j]  # expanded rather than cdist, whose gradient at distance 0 is NaN
        d2 = ((z**2).sum(1, keepdim=True) + (sv**2).sum(1) - 2 * z @ sv.T).clamp_min(0)
        return (torch.exp(-self.gamma[j] * d2) @ self.alpha[j]).sum()

    def close(self) -> None:
        for hook in self.hooks:
            hook.remove()
