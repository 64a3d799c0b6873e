"""Measure the pipeline's speed on this machine; writes bench/results/performance.{json,md}.

1. Training throughput (images/s) of ResNet-18 at 32×32, same model and batch size:
   (a) our path — the dataset as one uint8 tensor on the device, crop + flip on whole
   batches, channels-last, bf16 autocast where the hardware has it (`oodrepro.training.Run.fit`,
   the loop every trainer uses), also forced to float32 to separate precision from the rest;
   (b) the classic torchvision DataLoader with per-image PIL transforms (RandomCrop(32, 4),
   flip, ToTensor, Normalize) and a float32 model, with 0 and with 2 worker processes; the
   ratios against the faster classic one.
2. Inference throughput (images/s) of the default model, one thread: contiguous batches of
   1,000 against `oodrepro.inference`'s forward batches (channels-last, FORWARD_BATCH).
   Scoring throughput (images/s) of every feature-based score from cached features, fit
   included, on CIFAR-sized synthetic features (N × 512 penultimate, 10 classes).
3. The default DAG's wall time from scratch in a scratch folder (with the seconds each rule's
   jobs took, from their benchmark records, and the start-up each paid before its first line of
   work — interpreter, imports, Snakemake's preamble — from the facts every job keeps beside
   its log), then a no-op rerun's.

    .venv/bin/python bench/performance.py [--skip-dag] [--images 2048] [--batch 128] [--steps 12]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from oodrepro import devices, inference, manifest, models, scores, training

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results"
SPEC = {"arch": "resnet18", "num_classes": 10, "normalization": "wrong-std-cifar"}
LAOOD_FIT = 2_000


def our_path(images, labels, batch, steps, device, bf16="auto") -> float:
    """Images/s of `training.Run.fit` over `steps` batches (one epoch of steps·batch images)."""
    n = steps * batch
    recipe = {
        "epochs": 1,
        "batch_size": batch,
        "lr": 0.1,
        "schedule": {"kind": "constant"},
        "augment": {"crop_padding": 4, "flip": True},
        "bf16": bf16,
    }
    model = models.build(**SPEC).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        training.Run(
            model,
            model.parameters(),
            images[: 2 * batch],
            labels[: 2 * batch],
            recipe,
            Path(tmp) / "w.pt",
            Path(tmp) / "w.csv",
            progress=False,
        ).fit()
        sync(device)
        t0 = time.perf_counter()
        training.Run(
            model,
            model.parameters(),
            images[:n],
            labels[:n],
            recipe,
            Path(tmp) / "s.pt",
            Path(tmp) / "l.csv",
            progress=False,
        ).fit()
        sync(device)
        return n / (time.perf_counter() - t0)


def classic_path(images, labels, batch, steps, device, workers: int) -> float:
    """Images/s of the classic loop: a Dataset of PIL images, per-image transforms, a DataLoader."""
    from PIL import Image
    from torchvision import transforms

    mean, std = models.NORMALIZATIONS["wrong-std-cifar"]
    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )

    class Arrays(torch.utils.data.Dataset):
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return tf(Image.fromarray(images[i])), int(labels[i])

    model = models.build(**{**SPEC, "normalization": "none"}).to(
        device
    )  # Normalize is in the transform
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loader = torch.utils.data.DataLoader(
        Arrays(),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    model.train()
    seen, t0 = 0, None
    for step, (x, y) in enumerate(loader):
        if step == 2:  # after two warm-up batches (workers started, kernels chosen)
            sync(device)
            t0, seen = time.perf_counter(), 0
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
        if step == steps + 1:
            break
    sync(device)
    return seen / (time.perf_counter() - t0)


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def scoring_throughput(n: int = 10_000, dim: int = 512, classes: int = 10) -> dict[str, float]:
    """Images/s of every feature-based score in the registry: fit on n training rows, then
    score n test rows. LA-OOD (an RBF one-class SVM per layer, fit time ∝ n²; see
    bench/laood_cost.py) fits on LAOOD_FIT rows of 4 conv layers × 128 through its `max_fit`."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, dim))
    feats = {
        "labels": labels,
        "logits": rng.normal(size=(n, classes)).astype(np.float32) + 3 * np.eye(classes)[labels],
        "penultimate": np.maximum(centres[labels] + rng.normal(size=(n, dim)), 0).astype(
            np.float32
        ),
        "fc_weight": rng.normal(size=(classes, dim)).astype(np.float32) / np.sqrt(dim),
        "fc_bias": rng.normal(size=classes).astype(np.float32),
        "featnorm": np.abs(rng.normal(size=(n, 8))).astype(np.float32),
        "block_names": np.array([f"layer{i // 2 + 1}.{i % 2}" for i in range(8)]),
        "arch": np.array("resnet18"),
        "layer_names": np.array([f"conv{j}" for j in range(4)]),
        **{f"layer_{j}": rng.normal(size=(n, 128)).astype(np.float32) for j in range(4)},
    }
    inputs = {
        "train": feats,
        "train_jigsaw": {**feats, "featnorm": feats["featnorm"] * 0.5},
        "train_convs": feats,
    }
    hp = {"laood": {"max_fit": LAOOD_FIT}}
    out = {}
    for name, score in scores.SCORES.items():
        if score.needs != "features":
            continue
        t0 = time.perf_counter()
        bound, state = score.bind(hp.get(name, {})), None
        if score.fit is not None:
            state = bound.fit(*[inputs[k] for k in score.fit_inputs])
        bound(feats, state=state)
        out[name] = n / (time.perf_counter() - t0)
    return out


def inference_throughput(repeats: int = 3) -> dict[str, float]:
    """Images/s of eval-mode forward passes of the default model (one thread, 2,048 images):
    contiguous batches of 1,000 (the earlier path) against `inference`'s batches, each the best
    of `repeats`."""
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    backbone = next(iter(config["backbones"].values()))
    model = models.build(**backbone, num_classes=10).eval()
    x = torch.rand(2048, 3, 32, 32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    paths = {
        "contiguous, batch 1000": (1000, torch.contiguous_format),
        f"channels-last, batch {inference.FORWARD_BATCH}": (
            inference.FORWARD_BATCH,
            inference.FORWARD_LAYOUT,
        ),
    }
    best = dict.fromkeys(paths, 0.0)
    with torch.inference_mode():
        for _ in range(repeats):
            for name, (batch, layout) in paths.items():
                t0 = time.perf_counter()
                for i in range(0, len(x), batch):
                    model(x[i : i + batch].contiguous(memory_format=layout))
                best[name] = max(best[name], len(x) / (time.perf_counter() - t0))
    torch.set_num_threads(threads)
    return best


def dag_times(cores: int) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Wall time of the default config from scratch, then of a rerun that has nothing to do;
    and per rule, its job count and summed job seconds (from the rules' benchmark records)."""
    with tempfile.TemporaryDirectory(prefix="oodrepro-bench-") as tmp:
        config = yaml.safe_load((ROOT / "config.yaml").read_text())
        config.update(results=f"{tmp}/results", data=f"{tmp}/data")
        cfg = Path(tmp) / "config.yaml"
        cfg.write_text(yaml.safe_dump(config))
        cmd = [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "--directory",
            tmp,
            "--profile",
            str(ROOT / "profiles" / "local"),
            "--cores",
            str(cores),
            "--configfile",
            str(cfg),
            "--replace-workflow-config",
            "--quiet",
        ]
        times = {}
        for label in ("default_dag_s", "noop_rerun_s"):
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            times[label] = time.perf_counter() - t0
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-3000:])
        per_rule: dict[str, list[float]] = {}
        for record in Path(tmp).rglob("benchmarks/**/*.tsv"):  # results/ and data/
            rule = record.as_posix().split("/benchmarks/")[1].split("/")[0].removesuffix(".tsv")
            per_rule.setdefault(rule, []).append(
                float(record.read_text().splitlines()[1].split("\t")[0])
            )
        # per benchmark folder: named after its rule, or after the log folder two rules share
        # (score_features and score_network: score)
        startup: dict[str, list[float]] = {}
        for rule, jobs in manifest.jobs([f"{tmp}/results", f"{tmp}/data/logs"]).items():
            for job in jobs:
                shared = job["log"].split("/logs/")[1].split("/")[0]
                key = rule if rule in per_rule else shared
                startup.setdefault(key, []).append(job["startup_s"])
    rules = {
        rule: {
            "jobs": len(s),
            "job_seconds": sum(s),
            "startup_s_median": float(np.median(startup[rule])) if rule in startup else None,
        }
        for rule, s in sorted(per_rule.items(), key=lambda kv: -sum(kv[1]))
    }
    return times, rules


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-dag", action="store_true")
    args = ap.parse_args()
    device = devices.pick_device(args.device)
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    n = max(args.images, (args.steps + 2) * args.batch)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n)

    result = {
        "machine": {
            "device": str(device),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        }
    }
    result["machine"]["bf16_autocast"] = devices.use_bf16("auto", device)
    ours = our_path(images, labels, args.batch, args.steps, device)
    ours32 = our_path(images, labels, args.batch, args.steps, device, bf16=False)
    classic = {w: classic_path(images, labels, args.batch, args.steps, device, w) for w in (0, 2)}
    best = max(classic.values())
    result["training_images_per_s"] = {
        "ours": ours,
        "ours_float32": ours32,
        "classic_workers0": classic[0],
        "classic_workers2": classic[2],
        "ratio_ours_vs_best_classic": ours / best,
        "ratio_ours_float32_vs_best_classic": ours32 / best,
    }
    result["inference_images_per_s"] = inference_throughput()
    result["scoring_images_per_s"] = scoring_throughput()
    if not args.skip_dag:
        result["snakemake"], result["dag_rules"] = dag_times(os.cpu_count() or 1)
    OUT.mkdir(exist_ok=True)
    (OUT / "performance.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# oodrepro performance",
        "",
        f"machine: {result['machine']}",
        "",
        "| training, ResNet-18 32×32, batch %d | images/s |" % args.batch,
        "|---|---|",
    ]
    lines += [
        f"| {k} | {v:.2f} |" if k.startswith("ratio") else f"| {k} | {v:.1f} |"
        for k, v in result["training_images_per_s"].items()
    ]
    lines += ["", "| inference, default model, 1 thread | images/s |", "|---|---|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in result["inference_images_per_s"].items()]
    lines += [
        "",
        f"| score (fit + score, 10,000 × 512; laood: fit {LAOOD_FIT:,} × 4 layers) | images/s |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:,.0f} |" for k, v in result["scoring_images_per_s"].items()]
    if "snakemake" in result:
        lines += ["", "| Snakemake | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in result["snakemake"].items()]
        lines += [
            "",
            "| rule (default DAG) | jobs | job seconds | per job | start-up per job (median) |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {k} | {v['jobs']} | {v['job_seconds']:.1f} | {v['job_seconds'] / v['jobs']:.2f} | "
            + ("" if v["startup_s_median"] is None else f"{v['startup_s_median']:.2f}")
            + " |"
            for k, v in result["dag_rules"].items()
        ]
    (OUT / "performance.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
