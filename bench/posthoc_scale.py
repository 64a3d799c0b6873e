"""Post-hoc feature scores at CIFAR scale: fit on 50,000 training rows × 512 features, score
10,000 ID test rows plus 60,000 OOD rows (as a CIFAR-10 run with six OOD sets of 10,000), on
synthetic post-ReLU features. Writes bench/results/posthoc_scale.md.

    .venv/bin/python bench/posthoc_scale.py [--scores knn vim ...]

KNN is an exact search (one matrix product per block of test rows), not an approximation.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from oodrepro import scores

OUT = Path(__file__).parent / "results"
N_TRAIN, N_TEST, DIM, CLASSES = 50_000, 70_000, 512, 10
DEFAULTS = {"vim": {"dim": 256}, "knn": {"k": 50}}


def features(n: int, rng: np.random.Generator, head: dict) -> dict:
    labels = rng.integers(0, CLASSES, n)
    centres = np.random.default_rng(7).normal(size=(CLASSES, DIM))
    h = np.maximum(centres[labels] + rng.normal(size=(n, DIM)), 0).astype(np.float32)
    return {
        "labels": labels,
        "penultimate": h,
        "logits": (h @ head["fc_weight"].T + head["fc_bias"]).astype(np.float32),
        **head,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--scores",
        nargs="+",
        default=["knn", "vim", "react", "dice", "ash", "rmds", "gen", "maxlogit"],
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    head = {
        "fc_weight": rng.normal(size=(CLASSES, DIM)).astype(np.float32) / np.sqrt(DIM),
        "fc_bias": rng.normal(size=CLASSES).astype(np.float32),
    }
    train, test = features(N_TRAIN, rng, head), features(N_TEST, rng, head)
    rows = []
    for name in args.scores:
        score, hp = scores.get(name), DEFAULTS.get(name, {})
        t0 = time.perf_counter()
        state = score.bind(hp).fit(train) if score.fit else None
        t1 = time.perf_counter()
        out = score.bind(hp)(test, state=state)
        t2 = time.perf_counter()
        assert out.shape == (N_TEST,) and np.isfinite(out).all()
        rows.append((name, t1 - t0, t2 - t1, t2 - t0, N_TEST / (t2 - t1)))
        print(
            f"{name}: fit {t1 - t0:.1f} s, score {t2 - t1:.1f} s, total {t2 - t0:.1f} s", flush=True
        )
    lines = [
        f"# Post-hoc scores at CIFAR scale ({N_TRAIN:,} train × {DIM}, {N_TEST:,} test rows; "
        f"{os.cpu_count()} CPUs)\n",
        "| score | fit s | score s | total s | test rows/s |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {n} | {a:.1f} | {b:.1f} | {c:.1f} | {d:,.0f} |" for n, a, b, c, d in rows]
    OUT.mkdir(exist_ok=True)
    (OUT / "posthoc_scale.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
