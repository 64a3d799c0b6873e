"""Images/s of every trainer against what the cores do on wide convolutions.

Each trainer of the pipeline (backbone, the fine-tunes — flooding, UMAP, OE, Energy-OE, POEM,
DOE, LA-OOD co-training —, input-watermark learning, trigger embedding, the four attacks) runs
one epoch of `--images` synthetic 32×32 images through the library's own entry point, on one
thread as the DAG runs it, with the Fashion-MNIST preset's model (the default's: ResNet-18 at an
eighth of the width), recipe and method settings (co-training: the default config's). The
epoch's seconds come from the trainer's log; its FLOPs from `torch.utils.flop_counter` over the
same epoch rerun. The bound is the GFLOP/s one training step of the full-width ResNet-18 reaches
on the same core (wide convolutions: the best these kernels do here); `of bound` is the share
of it the trainer reaches. Writes bench/results/trainers.{json,md}.

    .venv/bin/python bench/trainers.py [--images 1024] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from torch.utils.flop_counter import FlopCounterMode

from oodrepro import features, models, scores, training, unleashing_mask, watermark_ood, watermarknn

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results"
# the methods' settings as the Fashion-MNIST preset runs them (the speed target is its), each
# trainer for one epoch: DOE perturbs from its first (warm-up 0), the watermark's α decays after it
PRESET = yaml.safe_load((ROOT / "presets" / "fashion-mnist.yaml").read_text())
SPEC = {**next(iter(PRESET["backbones"].values())), "num_classes": 10}
RECIPE = {**PRESET["training"], **PRESET["finetunes"]["um"]["training"], "epochs": 1}
RECIPE.pop("snapshots")
EXPOSURES = {
    name: {**f["exposure"], **({"warmup": 0} if "warmup" in f["exposure"] else {})}
    for name, f in PRESET["finetunes"].items()
    if "exposure" in f and not f.get("flooding")
}
WATERMARK = {**PRESET["watermarks"]["wm-msp"], "epochs": 1, "decay_epoch": 1}
DEFAULT = yaml.safe_load((ROOT / "config.yaml").read_text())  # co-training is the default's
COTRAIN = DEFAULT["finetunes"]["laood-cotrain"]["cotrain"]


def reference_gflops(steps: int = 5) -> float:
    """GFLOP/s of SGD steps of the full-width ResNet-18 (batch 32): wide convolutions."""
    model = models.build(**{**SPEC, "width": 1.0})
    x, y = torch.rand(32, 3, 32, 32), torch.randint(0, 10, (32,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    for i in range(steps + 1):
        if i == 1:
            t0 = time.perf_counter()
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
    return steps * counter.get_total_flops() / (time.perf_counter() - t0) / 1e9


def trainers(data: dict, tmp: Path) -> dict:
    """Name → a call that runs one epoch in `folder` and returns its log's path."""
    images, labels, test = data["images"], data["labels"], data["test"]
    base = tmp / "base.pt"
    models.save_model(base, models.build(**SPEC), SPEC, epoch=1)

    def finetune(**kw):
        def run(folder):
            unleashing_mask.finetune(
                base, images, labels, RECIPE, folder / "m.pt", folder / "s.pt", folder / "log.csv",
                spec=SPEC, progress=False, **{"level": None, **kw},
            )  # fmt: skip
            return folder / "log.csv"

        return run

    def backbone(folder):
        training.train_backbone(
            SPEC, images, labels, RECIPE, folder / "m.pt", folder / "s.pt", folder / "log.csv",
            progress=False,
        )  # fmt: skip
        return folder / "log.csv"

    def watermark(folder):
        watermark_ood.learn_and_save(
            base, folder / "m.pt", images, labels, WATERMARK, folder / "s.pt", folder / "log.csv",
            progress=False, spec=SPEC,
        )  # fmt: skip
        return folder / "log.csv"

    def embed(folder):
        watermarknn.embed(
            SPEC, images, labels, data["triggers"], RECIPE,
            per_batch=PRESET["watermarknn"]["per_batch"], out=folder / "m.pt",
            state_path=folder / "s.pt", log_csv=folder / "log.csv",
            marking_out=folder / "mk.npz", verification_out=folder / "vk.npz", init=base,
            progress=False,
        )  # fmt: skip
        return folder / "log.csv"

    def attack(kind):
        def run(folder):
            owner = tmp / "owner.pt"
            if not owner.exists():
                embed(tmp / "owner")
                os.replace(tmp / "owner" / "m.pt", owner)
            watermarknn.attack(
                owner, kind, images, labels, recipe=RECIPE, out=folder / "m.pt",
                state_path=folder / "s.pt", log_csv=folder / "log.csv",
                triggers=data["triggers"], test=test, spec=SPEC, progress=False,
            )  # fmt: skip
            return folder / "log.csv"

        return run

    def detector():
        path = tmp / "laood.npz"
        if not path.exists():
            convs = features.extract_convs(models.build(**SPEC).eval(), images[:512])
            state = scores.get("laood").bind({"max_fit": 512}).fit(convs)
            np.savez(path, **state)
        return dict(np.load(path))

    runs = {
        "backbone (CE)": backbone,
        "fine-tune, flooding (UM)": finetune(level=0.5),
        "fine-tune, mask (UMAP)": finetune(
            level=0.5, mask_keep=PRESET["finetunes"]["umap"]["mask"]["keep"]
        ),
        **{
            f"fine-tune, {name}": finetune(exposure=exposure, outliers=data["outliers"])
            for name, exposure in EXPOSURES.items()
        },
        "fine-tune, LA-OOD co-training": lambda folder: finetune(
            cotrain=COTRAIN, detector=detector()
        )(folder),
        "input watermark (SAM)": watermark,
        "trigger embedding": embed,
        **{f"attack {kind}": attack(kind) for kind in watermarknn.ATTACKS},
    }
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)

    def uint8(n):
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)

    data = {
        "images": uint8(args.images),
        "labels": rng.integers(0, 10, args.images),
        "outliers": uint8(2 * args.images),
        "test": (uint8(256), rng.integers(0, 10, 256)),
        "triggers": (uint8(100), rng.integers(0, 10, 100)),
    }
    bound = reference_gflops()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, run in trainers(data, tmp).items():
            timed, counted = tmp / f"{len(rows)}t", tmp / f"{len(rows)}c"
            timed.mkdir(), counted.mkdir()
            seconds = float(pd.read_csv(run(timed))["seconds"].iloc[-1])
            with FlopCounterMode(display=False) as counter:
                run(counted)
            gflop = counter.get_total_flops() / 1e9
            rows[name] = {
                "images_per_s": args.images / seconds,
                "gflop_per_image": gflop / args.images,
                "gflops": gflop / seconds,
                "of_bound": gflop / seconds / bound,
            }
            print(name, {k: round(v, 3) for k, v in rows[name].items()}, flush=True)
    result = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
            "platform": platform.platform(),
            "processor": platform.processor(),
        },
        "images_per_epoch": args.images,
        "bound_gflops": bound,
        "trainers": rows,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "trainers.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# Trainers, one epoch of {args.images} images, {args.threads} thread(s)",
        "",
        f"bound: {bound:.1f} GFLOP/s (full-width ResNet-18 training step)",
        "",
        "| trainer | images/s | GFLOP per image | GFLOP/s | of bound |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {k} | {v['images_per_s']:.0f} | {v['gflop_per_image']:.3f} | {v['gflops']:.1f} | "
        f"{v['of_bound']:.0%} |"
        for k, v in rows.items()
    ]
    (OUT / "trainers.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
