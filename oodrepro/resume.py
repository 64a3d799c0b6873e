"""Per-epoch resumable state that can only ever continue the job that wrote it.

A state file carries a fingerprint of everything that decides the run's result: the
recipe, the model spec and its starting weights, the seed, the training data and any
method options. When a job is rerun with a changed config (Snakemake reruns it because a
parameter or an input changed), the old state no longer matches, is discarded with a log
line, and the job starts over instead of silently continuing the old run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from .io import load_torch, save_csv, save_torch

log = logging.getLogger(__name__)


def _feed(h, obj: Any) -> None:
    """Hash `obj` by value: dicts (by sorted key), sequences, numbers, strings, arrays, tensors."""
    if isinstance(obj, dict):
        h.update(b"{")
        for key in sorted(obj, key=str):
            h.update(json.dumps(str(key)).encode())
            _feed(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(obj, np.ndarray):
        h.update(f"nd{obj.dtype.str}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif type(obj).__module__.startswith("torch") and hasattr(obj, "detach"):
        # a tensor, recognised without importing torch
        t = obj.detach().cpu().contiguous()
        h.update(f"t{t.dtype}{tuple(t.shape)}".encode())
        half = t.dtype.is_floating_point and t.dtype.itemsize < 4  # numpy has no bfloat16
        h.update((t.float() if half else t).numpy().tobytes())
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        h.update(json.dumps(obj).encode())
    elif isinstance(obj, Path):
        h.update(json.dumps(str(obj)).encode())
    else:
        raise TypeError(f"cannot fingerprint a {type(obj).__name__}")


def fingerprint(**parts: Any) -> str:
    """SHA-256 over the named parts (recipe, spec, seed, arrays, state dicts, …), by value."""
    h = hashlib.sha256()
    _feed(h, parts)
    return h.hexdigest()


def load(path, expected: str, map_location="cpu") -> dict | None:
    """The state at `path` if it was written by this job (same fingerprint), else None;
    a state from another job is deleted and the reason logged."""
    path = Path(path)
    if not path.exists():
        return None
    state = load_torch(path, map_location=map_location)
    found = state.get("fingerprint") if isinstance(state, dict) else None
    if found == expected:
        log.info("resuming %s after epoch %s", path, state.get("epoch"))
        return state
    log.warning(
        "discarding %s: it was written by a different job (fingerprint %s, this job %s: the "
        "recipe, model, seed or data changed since); starting over",
        path,
        (found or "none")[:12],
        expected[:12],
    )
    path.unlink()
    return None


def save(path, expected: str, state: dict) -> None:
    """Write the state atomically with its fingerprint."""
    save_torch(path, {**state, "fingerprint": expected})


class Epochs:
    """The epoch loop every resumable job shares: training (`training.Run`) and watermark
    learning (`watermark_ood.learn`) differ in their update, not in their bookkeeping.

    Creating it loads the state this job wrote (same fingerprint) into `state` and its
    `history` (one row per epoch done); iterating yields the epochs still to run. After each
    epoch the caller appends that epoch's row to `history` and calls `end_epoch(state)`, which
    saves the state with the history atomically, rewrites the log CSV and logs one line with
    the row's `shown` columns.
    """

    def __init__(
        self,
        state_path,
        job: str,
        epochs: int,
        log_csv,
        *,
        map_location="cpu",
        desc: str,
        progress: bool = True,
        shown: tuple[str, ...] = ("loss",),
    ):
        self.state_path = Path(state_path)
        self.job, self.epochs, self.log_csv = job, epochs, log_csv
        self.desc, self.progress, self.shown = desc, progress, shown
        self.state = load(self.state_path, job, map_location)
        self.history: list[dict] = self.state["history"] if self.state else []

    def __iter__(self):
        self._started = time.perf_counter()
        yield from range(len(self.history), self.epochs)
        self.write_log()

    def end_epoch(self, state: dict) -> None:
        """Save `state` with the history so far (the epoch count is its length) and log one
        line: the epoch, the row's `shown` columns and the time since this job started."""
        row = self.history[-1]
        if self.progress:
            shown = ", ".join(f"{k} {row[k]:.3f}" for k in self.shown if k in row)
            log.info(
                "%s: epoch %d/%d, %s, %.1f s",
                self.desc,
                len(self.history),
                self.epochs,
                shown,
                time.perf_counter() - self._started,
            )
        save(
            self.state_path,
            self.job,
            {**state, "history": self.history, "epoch": len(self.history)},
        )
        self.write_log()

    def write_log(self) -> None:
        import pandas as pd

        save_csv(self.log_csv, pd.DataFrame(self.history))
