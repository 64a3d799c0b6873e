"""Verification: trigger accuracy against a threshold from clean null models."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from .. import models
from ..devices import pick_device
from ..inference import accuracy_fraction, predict
from .commitments import load_keys, open_commitments
from .tables import attack_table


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
