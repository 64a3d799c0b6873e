"""The cluster path for real: bring up a single-node SLURM cluster on this machine, run a
small workflow with the README's cluster command, check that its jobs went through SLURM
and that the results equal a local run's."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from slurm_cluster import ClusterUnavailable, SingleNodeCluster

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slurm


def readme_cluster_command() -> list[str]:
    """The single-node cluster command exactly as the README prints it."""
    lines = [
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if line.startswith(".venv/bin/snakemake --profile profiles/slurm ")
    ]
    single = [line for line in lines if "--slurm-status-command" in line]
    assert len(lines) == 2 and len(single) == 1, (
        "the README shows the site command and the single-node one"
    )
    site = [line for line in lines if line not in single][0]
    assert (
        shlex.split(site)[:3] == shlex.split(single[0])[:3]
    )  # the same profile, plus the single-node flags
    return shlex.split(single[0])


def tiny_config(work: Path) -> Path:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.update(results="results", data="data", seeds=[0])
    config["benchmark"]["ood"] = ["gaussian-noise"]
    config["benchmark"].pop("outliers")
    config["offline"].update(n_ood=40)
    config["backbones"]["resnet18-small"]["width"] = 0.125
    config["training"].update(epochs=1, batch_size=128)
    config["scores"] = {"msp": {}, "energy": {"temperature": 1.0}}
    for key in ("watermarks", "finetunes", "variant_scores"):
        config[key] = {}
    config.pop("watermarknn")
    config["variants"] = ["base"]
    config["claims"] = [  # the default's claims name models this config does not make
        {
            "id": "energy",
            "statement": "energy beats MSP",
            "source": "this test",
            "kind": "better",
            "a": "base/energy",
            "b": "base/msp",
        }
    ]
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(cmd: list[str], work: Path, config: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *cmd[1:]]
    cmd[cmd.index("--configfile") + 1] = str(config)
    cmd += ["-s", str(ROOT / "Snakefile"), "--directory", str(work)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    return subprocess.run(
        cmd, capture_output=True, text=True, env={**env, "PYTHONUNBUFFERED": "1"}, timeout=1500
    )


def test_the_readme_cluster_command_runs_the_workflow_through_slurm(tmp_path):
    profile = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
    partition = profile["default-resources"]["slurm_partition"]
    (tmp_path / "slurm").mkdir()
    cluster_work, local_work = tmp_path / "cluster", tmp_path / "local"
    for w in (cluster_work, local_work):
        w.mkdir()
    cmd = readme_cluster_command()
    try:
        cluster = SingleNodeCluster(tmp_path / "slurm", partition)
        with cluster:
            result = snakemake(cmd, cluster_work, tiny_config(cluster_work))
            allocated = cluster.allocations()
    except ClusterUnavailable as err:
        pytest.skip(str(err))
    said = result.stdout + result.stderr
    assert result.returncode == 0, said[-5000:]

    submitted = re.findall(r"SLURM jobid (\d+)", said)
    local_rules = {"write_manifest", "all"}
    stats = said.split("Job stats:")[1]
    planned = {
        m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m[1] != "total"
    }
    assert len(submitted) == sum(n for rule, n in planned.items() if rule not in local_rules)
    assert set(submitted) <= set(
        allocated
    )  # the controller allocated every job the workflow submitted
    assert (
        planned["train_backbone"] == 1 and planned["dump_features"] == 1
    )  # ID test + one OOD set, one job

    local = snakemake(
        [
            "snakemake",
            "--profile",
            str(ROOT / "profiles" / "local"),
            "--cores",
            "2",
            "--max-threads",
            "2",
            "--configfile",
            "x",
        ],
        local_work,
        tiny_config(local_work),
    )
    assert local.returncode == 0, (local.stdout + local.stderr)[-3000:]
    run = Path("results/digits/resnet18-small/seed0")
    for name in ("digits-train", "digits-test", "gaussian-noise"):
        a = np.load(cluster_work / "data" / "datasets" / f"{name}.npz")
        b = np.load(local_work / "data" / "datasets" / f"{name}.npz")
        assert np.array_equal(a["images"], b["images"]) and np.array_equal(a["labels"], b["labels"])
    wa = torch.load(cluster_work / run / "models" / "base.pt", weights_only=True)["state_dict"]
    wb = torch.load(local_work / run / "models" / "base.pt", weights_only=True)["state_dict"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)
    ma = pd.read_csv(cluster_work / "results" / "metrics.csv")
    mb = pd.read_csv(local_work / "results" / "metrics.csv")
    assert ma.drop(columns="value").equals(mb.drop(columns="value"))
    assert np.allclose(ma["value"], mb["value"], atol=1e-3)
    assert (cluster_work / "results" / "manifest.json").exists()
