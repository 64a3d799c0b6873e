"""Does bf16 autocast train the default run's base model worse than float32 on this CPU?

Trains the default config's backbone (digits, its recipe, every seed given) once in float32
and once in bf16 autocast, and writes the test accuracy, final loss, training time and the
per-epoch loss curves to bench/results/bf16.{md,png}. This is the measurement behind
`training.bf16: auto` (see the README).

    .venv/bin/python bench/bf16.py [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from oodrepro import config as cfg
from oodrepro import data, derive, inference, training
from oodrepro.plots import pyplot

ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).parent / "results"


def cpu_name() -> str:
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    ):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    config = cfg.load(ROOT / "config.yaml")
    backbone = next(iter(config["backbones"]))
    spec, recipe = derive.model_spec(config, backbone), derive.recipe_of(config, backbone)
    recipe.pop("keep", None)
    torch.set_num_threads(1)  # as the default run's jobs (network_threads: 1)
    rows, curves = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        sets = {}
        for role in ("id_train", "id_test"):
            name = config["benchmark"][role]
            data.build_offline(name, config["offline"], Path(tmp) / f"{name}.npz")
            sets[role] = data.load_dataset(Path(tmp) / f"{name}.npz")
        for seed in args.seeds:
            for bf16 in (False, True):
                run = Path(tmp) / f"s{seed}-{bf16}"
                run.mkdir()
                t0 = time.perf_counter()
                model = training.train_backbone(
                    spec,
                    *sets["id_train"],
                    {**recipe, "bf16": bf16},
                    run / "m.pt",
                    run / "s.pt",
                    run / "log.csv",
                    seed=seed,
                    device="cpu",
                    progress=False,
                )
                seconds = time.perf_counter() - t0
                log = pd.read_csv(run / "log.csv")
                curves[(seed, bf16)] = log["loss"].to_numpy()
                rows.append(
                    {
                        "seed": seed,
                        "precision": "bf16 autocast" if bf16 else "float32",
                        "test accuracy %": 100 * inference.accuracy(model, *sets["id_test"]),
                        "final train loss": log["loss"].iloc[-1],
                        "train accuracy %": 100 * log["accuracy"].iloc[-1],
                        "seconds": seconds,
                    }
                )
    table = pd.DataFrame(rows)
    OUT.mkdir(exist_ok=True)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (seed, bf16), loss in curves.items():
        ax.plot(
            np.arange(1, len(loss) + 1),
            loss,
            ls="--" if bf16 else "-",
            label=f"seed {seed}, {'bf16' if bf16 else 'fp32'}",
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(f"default base model, {cpu_name()}", fontsize=9)
    fig.savefig(OUT / "bf16.png", dpi=110, bbox_inches="tight")
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    native = any(getattr(torch.cpu, p, lambda: False)() for p in probes)
    md = (
        f"# bf16 autocast vs float32, default base model\n\nCPU: {cpu_name()} (native bf16: "
        f"{native}), "
        f"torch {torch.__version__}, 1 thread\n\n{table.round(4).to_string(index=False)}\n"
    )
    (OUT / "bf16.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
