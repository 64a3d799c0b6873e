"""`make plan CONFIG=… PROFILE=…`: what a run would submit, one row per rule — its jobs, and what
each asks the scheduler for (GPUs, partition, time limit, memory) — read from Snakemake's dry
run, so a cluster user sees before submitting which jobs will wait for a GPU node.

    snakemake -n … | python -m oodrepro.plan
"""

from __future__ import annotations

import re
import sys

RULE = re.compile(r"^(?:local)?rule (\w+):$")
SHOWN = {"gpu": "0", "slurm_partition": "-", "runtime": "-", "mem_mb": "-"}


def jobs(dry_run: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run lists."""
    found, rule = [], None
    for line in dry_run.splitlines():
        m = RULE.match(line)
        if m:
            rule = m[1]
            found.append((rule, {}))
        elif rule and line.strip().startswith("resources:"):
            pairs = line.split(":", 1)[1].split(", ")
            found[-1][1].update(p.strip().split("=", 1) for p in pairs if "=" in p)
    return found


def table(found: list[tuple[str, dict[str, str]]]) -> str:
    """Markdown: per rule and resource request, the job count."""
    counts: dict[tuple, int] = {}
    for rule, res in found:
        key = (rule, *(res.get(k, default) for k, default in SHOWN.items()))
        counts[key] = counts.get(key, 0) + 1
    rows = [
        "| rule | jobs | gpu | partition | runtime (min) | mem_mb |",
        "|---|---|---|---|---|---|",
    ]
    rows += [f"| {k[0]} | {n} | {' | '.join(k[1:])} |" for k, n in sorted(counts.items())]
    gpu_jobs = sum(n for k, n in counts.items() if k[1] != "0")
    rows.append(f"\n{sum(counts.values())} jobs, {gpu_jobs} of them asking for a GPU")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(jobs(sys.stdin.read())))
