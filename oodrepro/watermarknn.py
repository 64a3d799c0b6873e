"""WatermarkNN (Adi et al., USENIX Security 2018): an ownership watermark made by training
the model to memorise a secret trigger set, its verification, and removal attacks.

Embedding appends a few trigger images to every training batch (one joint cross-entropy,
no trigger augmentation, shared BatchNorm statistics). The owner commits to every trigger
image and label with a salted SHA-256 hash at embedding time; verification first opens the
commitments, so a tampered key or trigger set is refused before any model is queried.
The ownership threshold comes from clean "null" models: how often they agree with the
secret labels by chance. Attacks fine-tune without triggers (FTLL, FTAL, RTLL, RTAL) or
prune weights by magnitude. Spec: docs/watermarknn.md.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import models, training
from .devices import pick_device
from .inference import accuracy_fraction, predict, to_tensor
from .io import load_npz, save_json, save_npz
from .sampling import sample_indices

ATTACKS = {
    # name: (re-initialise the output layer, train every layer)
    "ftll": (False, False),
    "ftal": (False, True),
    "rtll": (True, False),
    "rtal": (True, True),
}


class VerificationError(RuntimeError):
    """The marking key does not open the published commitments."""


# --------------------------------------------------------------------------- commitments
def _image_bytes(image: np.ndarray) -> bytes:
    return repr(image.shape).encode() + np.ascontiguousarray(image, np.uint8).tobytes()


def _label_bytes(label) -> bytes:
    return str(int(label)).encode()


def commit(payload: bytes, nonce: bytes) -> str:
    """Com(x; r) = SHA-256(r ‖ x): hiding by the 32-byte random nonce r, binding by SHA-256."""
    return hashlib.sha256(nonce + payload).hexdigest()


def make_keys(
    images: np.ndarray, labels: np.ndarray, nonce_seed: int | None = None
) -> tuple[dict, dict]:
    """(marking key, verification key) for a trigger set.

    The marking key (secret) holds the images, labels and every nonce; the verification key
    (published) holds one commitment per image and per label. `nonce_seed` makes the nonces
    reproducible for a research run; None draws them from the OS (a real ownership claim).
    """
    n = len(images)
    if nonce_seed is None:
        nonces = np.frombuffer(secrets.token_bytes(64 * n), np.uint8).reshape(2, n, 32)
    else:
        nonces = np.random.default_rng(nonce_seed).integers(0, 256, (2, n, 32), dtype=np.uint8)
    marking = {
        "images": np.asarray(images, np.uint8),
        "labels": np.asarray(labels, np.int64),
        "image_nonces": nonces[0],
        "label_nonces": nonces[1],
    }
    verification = {
        "scheme": "sha256(nonce || payload)",
        "n": n,
        "images": [commit(_image_bytes(images[i]), nonces[0, i].tobytes()) for i in range(n)],
        "labels": [commit(_label_bytes(labels[i]), nonces[1, i].tobytes()) for i in range(n)],
    }
    return marking, verification


def open_commitments(marking: dict, verification: dict) -> None:
    """Raise VerificationError unless every image and label opens its commitment."""
    n = len(marking["images"])
    if (
        verification.get("n") != n
        or len(verification["images"]) != n
        or len(verification["labels"]) != n
    ):
        raise VerificationError(
            f"the verification key commits to {verification.get('n')} triggers, "
            f"the marking key holds {n}"
        )
    bad_images = [
        i
        for i in range(n)
        if commit(_image_bytes(marking["images"][i]), marking["image_nonces"][i].tobytes())
        != verification["images"][i]
    ]
    bad_labels = [
        i
        for i in range(n)
        if commit(_label_bytes(marking["labels"][i]), marking["label_nonces"][i].tobytes())
        != verification["labels"][i]
    ]
    if bad_images or bad_labels:
        raise VerificationError(
            f"commitments do not open: images {bad_images[:10]}, labels {bad_labels[:10]}"
            f" ({len(bad_images)} + {len(bad_labels)} of {n}); refusing to verify"
        )


def load_keys(marking_path, verification_path) -> tuple[dict, dict]:
    return load_npz(marking_path), json.loads(Path(verification_path).read_text())


# --------------------------------------------------------------------------- embedding
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


# --------------------------------------------------------------------------- verification
def trigger_accuracy(model, images, labels, head: dict | None = None) -> float:
    return float((predict(model, images, head) == np.asarray(labels)).mean())


def ownership_threshold(null_accuracies: list[float], n: int, rule: dict) -> dict:
    """The trigger accuracy from which ownership is claimed, and the chance a clean model reaches
    it.

    `null-models` (default): clean models' agreements are pooled into a chance rate p, taken at
    its one-sided 97.5 % Clopper–Pearson upper bound; the threshold is the smallest count k
    (above every null model's) with P(Binomial(n, p) ≥ k) ≤ alpha, the false-claim probability.
    `fixed`: the threshold is `min_accuracy`; its false-claim probability is reported the same way.
    """
    from scipy import (
        stats,
    )  # here: its import costs every training job of this module half a second

    hits = [round(a * n) for a in null_accuracies]
    m = len(hits)
    if m == 0:
        raise ValueError("the ownership threshold needs at least one null model")
    total = sum(hits)
    p = float(stats.beta.ppf(0.975, total + 1, n * m - total)) if total < n * m else 1.0
    if rule["rule"] == "fixed":
        k = int(np.ceil(rule["min_accuracy"] * n - 1e-9))
    else:
        k = next((k for k in range(n + 1) if stats.binom.sf(k - 1, n, p) <= rule["alpha"]), n + 1)
        k = max(k, max(hits) + 1)
    return {
        "rule": rule["rule"],
        "threshold": k / n,
        "threshold_count": k,
        "n_triggers": n,
        "null_models": m,
        "null_mean": float(np.mean(null_accuracies)),
        "null_max": float(max(null_accuracies)),
        "chance_rate": p,
        "false_claim_probability": float(stats.binom.sf(k - 1, n, p)) if k <= n else 0.0,
    }


def verify(
    model_paths: dict[str, str],
    marking_path,
    verification_path,
    null_paths: list[str],
    test,
    rule: dict,
    device: str = "auto",
    null_cache: dict | None = None,
    *,
    spec: dict | None,
) -> tuple[pd.DataFrame, dict]:
    """Open the commitments, set the threshold from the null models, and query every model.

    Trigger accuracy uses the head the spec prescribes: the model's own, or for RTLL / RTAL
    the owner's original head re-attached on the attacked features; the attacker's-view
    accuracy (own head) is reported beside it. `null_cache` keeps the null models' accuracy
    per trigger set across calls (owners sharing a trigger set query them once). Every
    network and null model must carry `spec`, the model the config names.
    """
    marking, verification = load_keys(marking_path, verification_path)
    open_commitments(marking, verification)
    dev = pick_device(device)
    images, labels = marking["images"], marking["labels"]
    null_cache = {} if null_cache is None else null_cache
    key = hashlib.sha256(
        np.ascontiguousarray(images).tobytes() + np.asarray(labels, np.int64).tobytes()
    ).hexdigest()
    if key not in null_cache:
        null_cache[key] = [
            trigger_accuracy(models.load_model(p, dev, spec=spec), images, labels)
            for p in null_paths
        ]
    null = null_cache[key]
    threshold = ownership_threshold(null, len(labels), rule)
    rows = []
    for name, path in model_paths.items():
        model, ckpt = models.load_checkpoint(path, dev, spec=spec)
        head = ckpt.get("original_head")
        own = trigger_accuracy(model, images, labels)
        acc = (
            own
            if head is None
            else trigger_accuracy(model, images, labels, {k: v.to(dev) for k, v in head.items()})
        )
        rows.append(
            {
                "network": name,
                "test_accuracy": accuracy_fraction(model, *test),
                "trigger_accuracy": acc,
                "trigger_accuracy_own_head": own,
                "claimed": acc >= threshold["threshold"],
            }
        )
    threshold["null_accuracies"] = null
    return pd.DataFrame(rows), threshold


def verify_owners(
    networks: dict[str, str],
    keys: dict[str, tuple],
    null_paths: list[str],
    pruning: dict[str, pd.DataFrame],
    test,
    rule: dict,
    device: str = "auto",
    *,
    spec: dict | None,
):
    """`verify` for every owner with its own key (its networks: the owner and its attacked
    copies); the clean base model is verified under the first key. Returns the per-network
    table, the threshold and the report's attack table (pruning rows included)."""
    tables, threshold, null_cache = [], {}, {}
    for i, (owner, (marking, verification)) in enumerate(keys.items()):
        mine = {
            n: p
            for n, p in networks.items()
            if n.partition(".")[0] == owner or (i == 0 and n == "base")
        }
        table, threshold = verify(
            mine, marking, verification, null_paths, test, rule, device, null_cache, spec=spec
        )
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    return table, threshold, attack_table(table, pruning, threshold)


# --------------------------------------------------------------------------- attacks
class Attacker(training.Trainer):
    """The fine-tuning attack's objective: plain cross-entropy without triggers, logging the
    trigger accuracy every epoch — with the owner's `original_head` where the attack replaced
    it (RT*), and with the attacker's own head. `frozen_eval` puts the layers that do not train
    in eval mode (their BatchNorm statistics then stay)."""

    def __init__(self, triggers, *, original_head: dict | None, frozen_eval: bool):
        self.triggers, self.original_head, self.frozen_eval = triggers, original_head, frozen_eval

    def train_mode(self, model) -> None:
        if self.frozen_eval:
            for module in model.modules():
                module.train(False)
            model.fc.train(True)

    def evaluate(self, model) -> dict:
        own = trigger_accuracy(model, *self.triggers)
        judged = (
            own
            if self.original_head is None
            else trigger_accuracy(model, *self.triggers, self.original_head)
        )
        return {"trigger_accuracy": judged, "trigger_accuracy_own_head": own}


def attack(
    owner_path,
    kind: str,
    images,
    labels,
    recipe: dict,
    out,
    state_path,
    log_csv,
    triggers,
    test,
    *,
    frozen: str = "train",
    seed: int = 0,
    device: str = "auto",
    spec: dict | None,
    progress: bool = True,
) -> models.Backbone:
    """Fine-tune the watermarked model without triggers (docs/watermarknn.md).

    FT*: keep the head; RT*: a fresh `Linear` (PyTorch default init). *LL trains only the
    output layer, *AL everything. "Frozen" layers stay in train mode (`frozen: train`, the
    code's behaviour: BatchNorm statistics drift) or are put in eval mode (`frozen: eval`).
    Every epoch logs test accuracy, trigger accuracy with the spec's head, and with the
    attacker's own head; the attacked checkpoint keeps the owner's head for verification.
    `spec`: the model the config names (checked against the owner checkpoint's).
    """
    reinit, all_layers = ATTACKS[kind]
    dev = pick_device(device)
    model, owner = models.load_checkpoint(owner_path, dev, spec=spec)
    spec = dict(owner["spec"])
    head0 = {"weight": model.fc.weight.detach().clone(), "bias": model.fc.bias.detach().clone()}
    if reinit:
        torch.manual_seed(seed)
        model.fc = torch.nn.Linear(model.fc.in_features, model.fc.out_features).to(dev)
    for p in model.parameters():
        p.requires_grad_(all_layers)
    for p in model.fc.parameters():
        p.requires_grad_(True)

    training.fit(
        model,
        [p for p in model.parameters() if p.requires_grad],
        images,
        labels,
        recipe,
        state_path,
        log_csv,
        seed=seed,
        trainer=Attacker(
            triggers,
            original_head=head0 if reinit else None,
            frozen_eval=frozen == "eval" and not all_layers,
        ),
        test=test,
        desc=kind,
        progress=progress,
        identity={
            "spec": spec,
            "attack": kind,
            "frozen": frozen,
            "triggers": triggers,
            "test": test,
        },
    )
    extra = (
        {"attack": kind, "original_head": {k: v.cpu() for k, v in head0.items()}}
        if reinit
        else {"attack": kind}
    )
    models.save_model(out, model, spec, **extra)
    Path(state_path).unlink(missing_ok=True)
    return model.eval()


def attacker_share(n: int, fraction: float, seed: int) -> np.ndarray:
    """Indices of the attacker's part of the training set (all of it at fraction 1)."""

    return sample_indices(n, None if fraction >= 1 else max(2, round(fraction * n)), seed)


def prune(model: models.Backbone, rate: float) -> models.Backbone:
    """Zero the `rate` fraction of smallest-magnitude weights in every conv and linear layer."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)) and rate > 0:
                w = module.weight
                k = int(round(rate * w.numel()))
                if k:
                    cut = w.abs().flatten().kthvalue(k).values
                    w.mul_((w.abs() > cut).to(w.dtype))
    return model


def pruning_curve(
    owner_path, rates: list[float], triggers, test, device: str = "auto", *, spec: dict | None
) -> pd.DataFrame:
    """Test and trigger accuracy of the watermarked model (carrying `spec`) pruned at each rate."""
    dev = pick_device(device)
    rows = []
    for rate in [0.0, *rates]:
        model = prune(models.load_model(owner_path, dev, spec=spec), rate)
        rows.append(
            {
                "prune_rate": rate,
                "test_accuracy": accuracy_fraction(model, *test),
                "trigger_accuracy": trigger_accuracy(model, *triggers),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- report
def attack_table(
    verification: pd.DataFrame, pruning: dict[str, pd.DataFrame], threshold: dict
) -> pd.DataFrame:
    """Test and trigger accuracy (%) per model and attack, with the ownership decision."""
    rows = []
    for r in verification.itertuples():
        embedding, _, attack_name = r.network.partition(".")
        rows.append(
            {
                "network": embedding,
                "attack": attack_name or "-",
                "test acc.": 100 * r.test_accuracy,
                "trigger acc.": 100 * r.trigger_accuracy,
                "trigger acc. (own head)": 100 * r.trigger_accuracy_own_head,
                "claimed": "✓" if r.claimed else "✗",
            }
        )
    for owner, curve in pruning.items():
        for c in curve.itertuples():
            if c.prune_rate > 0:
                rows.append(
                    {
                        "network": owner,
                        "attack": f"prune {c.prune_rate:.0%}",
                        "test acc.": 100 * c.test_accuracy,
                        "trigger acc.": 100 * c.trigger_accuracy,
                        "trigger acc. (own head)": 100 * c.trigger_accuracy,
                        "claimed": "✓" if c.trigger_accuracy >= threshold["threshold"] else "✗",
                    }
                )
    return pd.DataFrame(rows)
