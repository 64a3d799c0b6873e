"""Measure what LA-OOD's per-layer detector costs on this machine, and extrapolate.

One layer = standardise, SDS edge detection on the 30 % split, 7 OCSVM fits on the 70 %
split, one refit on everything, then decision values for a 10,000-image test set. The
script times that on synthetic standardised features of a CIFAR-scale width (D = 512)
for growing n (with the process's peak memory beside the model in `laood.layer_memory_mb`),
fits a power law to extrapolate to the paper's n = 50,000, and costs whole backbones
(VGG-16, ResNet-34, DenseNet-100: each layer at its own width, assuming time ∝ D): core-hours,
wall time on one 2-core machine and the critical path on N nodes with one job per layer.
Writes bench/results/laood_cost.{json,md}.

    .venv/bin/python bench/laood_cost.py [--sizes 1000 2000 4000 8000 16000] [--dim 512] [--nodes
    100]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import sklearn

from oodrepro import features, laood, models

OUT = Path(__file__).parent / "results"


def time_layer(n: int, dim: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    # low-rank structure, as real features have, plus noise
    h = rng.normal(size=(n, 16)) @ rng.normal(size=(16, dim)) + 0.3 * rng.normal(size=(n, dim))
    t0 = time.perf_counter()
    det = laood.fit_layer(h)
    fit_s = time.perf_counter() - t0
    test = rng.normal(size=(10_000, 16)) @ rng.normal(size=(16, dim)) + 0.3 * rng.normal(
        size=(10_000, dim)
    )
    t0 = time.perf_counter()
    det.decision(test)
    import resource

    peak_mb = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )  # sizes grow: the peak is this fit's
    return {
        "n": n,
        "dim": dim,
        "fit_s": fit_s,
        "decide_10k_s": time.perf_counter() - t0,
        "support_vectors": int(len(det.support)),
        "gamma": det.gamma,
        "peak_rss_mb": peak_mb,
        "modelled_mb": laood.layer_memory_mb(n, dim),
    }


BACKBONES = {
    "vgg16_bn": {"arch": "vgg16_bn", "num_classes": 10, "normalization": "hendrycks-cifar"},
    "resnet34": {"arch": "resnet34", "num_classes": 10, "normalization": "hendrycks-cifar"},
    "densenet100": {"arch": "densenet100", "num_classes": 10, "normalization": "hendrycks-cifar"},
}


def makespan(times: list[float], workers: int) -> float:
    """Wall time of independent jobs on `workers` workers, longest first to the least loaded."""
    loads = [0.0] * workers
    for t in sorted(times, reverse=True):
        loads[loads.index(min(loads))] += t
    return max(loads)


def backbone_cost(spec: dict, predict, dim: int, nodes: int, n: int = 50_000) -> dict:
    """A backbone's LA-OOD fit at n vectors: every layer's time from the measured power law at
    width `dim`, scaled by the layer's own width; wall time on one 2-core machine and on `nodes`."""
    from oodrepro import config as cfg

    model = models.build(**spec)
    convs = features.conv_layers(model)
    widths = [m.out_channels for _, m in convs] + [spec["num_classes"]] * model.laood_logits
    times = [predict(n) * max(d, 16) / dim for d in widths]
    assert len(widths) == len(cfg.architecture_names(spec)["laood_layers"])
    return {
        "layers": len(widths),
        "core_hours": sum(times) / 3600,
        "two_core_hours": makespan(times, 2) / 3600,
        "nodes_hours": makespan(times, nodes) / 3600,
        "slowest_layer_hours": max(times) / 3600,
        "peak_memory_gb": max(laood.layer_memory_mb(n, d) for d in widths) / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 8000, 16000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument(
        "--nodes", type=int, default=100, help="cluster nodes for the critical-path estimate"
    )
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
    backbones = {
        name: backbone_cost(spec, predict, args.dim, args.nodes) for name, spec in BACKBONES.items()
    }
    result = {
        "machine": {
            "cpu_count": __import__("os").cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "sklearn": sklearn.__version__,
        },
        "measured": rows,
        "power_law_exponent": slope,
        "extrapolated_fit_s_per_layer": extrapolated,
        "backbones_at_50k": backbones,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "laood_cost.json").write_text(json.dumps(result, indent=2))
    lines = [
        "# LA-OOD detector cost (one layer, D = %d, 7 γ + refit, one core)" % args.dim,
        "",
        "| n | fit (s) | decide 10k (s) | support vectors | peak RSS (MB) | modelled (MB) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['n']} | {r['fit_s']:.1f} | {r['decide_10k_s']:.2f} | {r['support_vectors']} | "
        f"{r['peak_rss_mb']:.0f} | {r['modelled_mb']} |"
        for r in rows
    ]
    lines += [
        "",
        f"fit time ∝ n^{slope:.2f}; extrapolated per layer: "
        + ", ".join(f"n = {m}: {v / 60:.1f} min" for m, v in extrapolated.items()),
        "",
        f"Whole backbones at n = 50,000 (each layer's time scaled by its width D / {args.dim}; the "
        f"pieces of `layers_per_job: 1` scheduled longest first):",
        "",
        f"| backbone | layers | core-hours | one 2-core machine (h) | {args.nodes} nodes, critical "
        "path (h) "
        "| slowest layer (h) | peak memory of a piece (GB) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {b['layers']} | {b['core_hours']:.1f} | {b['two_core_hours']:.1f} | "
        f"{b['nodes_hours']:.2f} | {b['slowest_layer_hours']:.2f} | {b['peak_memory_gb']:.1f} |"
        for k, b in backbones.items()
    ]
    (OUT / "laood_cost.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
