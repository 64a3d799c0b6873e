"""Measure the cost estimate's error: rehearse a preset, predict runs at larger budgets from that
rehearsal, run them, and compare per stage (docs/rehearsal.md, "Measured at larger budgets").

The larger runs are the rehearsal's own DAG with the caps on images and epochs multiplied
(`rehearsal.shrink(config, scale)`, stand-ins `scale` times larger), so they run on any machine
in minutes; the estimate predicts each from the scale-1 rehearsal alone, knowing only the
target's config and dataset sizes, as it predicts a preset's full run.

    .venv/bin/python bench/estimate_check.py presets/featurenorm-cvpr23.yaml 4 16
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from oodrepro import config as cfg
from oodrepro import cost, rehearsal
from oodrepro.io import save_text
from oodrepro.report import to_markdown

OUT = Path(__file__).parent / "results"


def run(config: Path) -> float:
    """Run a rehearsal config's DAG as `make run` does; returns its wall seconds."""
    snakemake = Path(sys.executable).with_name("snakemake")
    t0 = time.time()
    subprocess.run(
        [snakemake, "--profile", "profiles/local", "--cores", "all", "--configfile", config]
        + ["--replace-workflow-config", "--quiet", "rules"],
        check=True,
    )
    return time.time() - t0


def measured(config: Path) -> pd.Series:
    """Job-seconds per stage of a finished run, from its benchmark records."""
    jobs = cost.benchmark_records(cfg.read_yaml(config))
    return jobs.groupby(jobs["kind"].map(lambda kind: cost.COSTS[kind].stage))["seconds"].sum()


def compare(preset: Path, scale: int) -> pd.DataFrame:
    """Estimate against measurement per stage for the run at `scale`."""
    target = rehearsal.folder(preset, scale)
    sizes = cost.dataset_sizes(target / "data")
    rehearsed = rehearsal.folder(preset) / "config.yaml"
    per_stage, _, _ = cost.estimate(
        preset, rehearsed, target=target / "config.yaml", target_sizes=sizes
    )
    table = per_stage.set_index("stage")[["rehearsal s", "estimate hours"]]
    table["estimate s"] = table.pop("estimate hours") * 3600
    table["measured s"] = measured(target / "config.yaml")
    table.loc["total"] = table.sum()
    table["estimate / measured"] = table["estimate s"] / table["measured s"]
    return table


def main(argv: list[str]) -> None:
    preset, scales = Path(argv[0]), [int(s) for s in argv[1:]] or [4, 16]
    walls = {}
    for scale in [1, *scales]:
        config = rehearsal.prepare(preset, scale)
        print(f"running {config} ...", flush=True)
        walls[scale] = run(config)
    device = cost.estimate(preset, rehearsal.folder(preset) / "config.yaml")[2]["device"]
    text = [
        f"# Cost estimate against measured runs: {preset.stem}\n",
        f"On {device}. Each estimate is predicted from the scale-1 rehearsal "
        f"({walls[1]:.0f} s wall); job-seconds per stage.\n",
    ]
    for scale in scales:
        text.append(
            f"\n## {scale}x the rehearsal's images and epochs ({walls[scale]:.0f} s wall)\n\n"
            + to_markdown(compare(preset, scale).reset_index())
            + "\n"
        )
    save_text(OUT / f"estimate-check-{preset.stem}.md", "".join(text))
    print("".join(text))


if __name__ == "__main__":
    main(sys.argv[1:])
