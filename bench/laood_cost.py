"""Measure what LA-OOD's per-layer detector costs on this machine, and extrapolate.

One layer = standardise, SDS edge detection on the 30 % split, 7 OCSVM fits on the 70 %
split, one refit on everything, then decision values for a 10,000-image test set. The
script times that on synthetic standardised features of a CIFAR-scale width (D = 512)
for growing n, and fits a power law to extrapolate to the paper's n = 50,000 and to whole
backbones (13 / 34 / 100 layers). Writes bench/results/laood_cost.{json,md}.

    .venv/bin/python bench/laood_cost.py [--sizes 2000 4000 8000] [--dim 512]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import sklearn

from oodrepro import laood

OUT = Path(__file__).parent / "results"


def time_layer(n: int, dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    # low-rank structure, as real features have, plus noise
    h = rng.normal(size=(n, 16)) @ rng.normal(size=(16, dim)) + 0.3 * rng.normal(size=(n, dim))
    t0 = time.perf_counter()
    det = laood.fit_layer(h)
    fit_s = time.perf_counter() - t0
    test = rng.normal(size=(10_000, 16)) @ rng.normal(size=(16, dim)) + 0.3 * rng.normal(size=(10_000, dim))
    t0 = time.perf_counter()
    det.decision(test)
    return {"n": n, "dim": dim, "fit_s": fit_s, "decide_10k_s": time.perf_counter() - t0,
            "support_vectors": int(len(det.support)), "gamma": det.gamma}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    ap.add_argument("--dim", type=int, default=512)
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        rows.append(time_layer(n, args.dim))
        print(rows[-1], flush=True)
    n = np.array([r["n"] for r in rows], float)
    t = np.array([r["fit_s"] for r in rows])
    slope, intercept = np.polyfit(np.log(n), np.log(t), 1)
    predict = lambda m: float(np.exp(intercept) * m**slope)  # noqa: E731
    extrapolated = {m: predict(m) for m in (10_000, 50_000)}
    result = {
        "machine": {"cpu_count": __import__("os").cpu_count(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "sklearn": sklearn.__version__},
        "measured": rows, "power_law_exponent": slope,
        "extrapolated_fit_s_per_layer": extrapolated,
        "extrapolated_fit_hours_per_backbone_at_50k_one_core": {
            k: v * extrapolated[50_000] / 3600 for k, v in {"vgg16 (13)": 13, "resnet34 (34)": 34, "densenet100 (100)": 100}.items()},
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "laood_cost.json").write_text(json.dumps(result, indent=2))
    lines = ["# LA-OOD detector cost (one layer, D = %d, 7 γ + refit, one core)" % args.dim, "",
             "| n | fit (s) | decide 10k (s) | support vectors |", "|---|---|---|---|"]
    lines += [f"| {r['n']} | {r['fit_s']:.1f} | {r['decide_10k_s']:.2f} | {r['support_vectors']} |" for r in rows]
    lines += ["", f"fit time ∝ n^{slope:.2f}; extrapolated per layer: "
              + ", ".join(f"n = {m}: {v / 60:.1f} min" for m, v in extrapolated.items()),
              "", "Whole backbone at n = 50,000 on one core (layers of equal width assumed): "
              + ", ".join(f"{k}: {v:.1f} h" for k, v in result["extrapolated_fit_hours_per_backbone_at_50k_one_core"].items())]
    (OUT / "laood_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
