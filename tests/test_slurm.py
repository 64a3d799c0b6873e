"""The cluster path for real: a SLURM cluster on this machine with a CPU and a GPU partition and
a node declaring one GPU as a generic resource (no device behind it), the workflow submitted
with the README's cluster command from this machine, which has no GPU (no nvidia-smi), and
the requests checked from the jobs SLURM received."""

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from slurm_cluster import ClusterUnavailable, SingleNodeCluster

from oodrepro import plan

ROOT = Path(__file__).resolve().parents[1]
PROFILE = yaml.safe_load((ROOT / "profiles" / "slurm" / "config.yaml").read_text())
CPU = PROFILE["default-resources"]["slurm_partition"]
GPU = PROFILE["default-resources"]["gpu_partition"]
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


def network_rules() -> set[str]:
    """Rules whose jobs run a network: those told which device to use (`device` in params)."""
    found = set()
    for f in (ROOT / "rules").glob("*.smk"):
        for block in re.split(r"^rule ", f.read_text(), flags=re.M)[1:]:
            if re.search(r"^\s+device=", block, re.M):
                found.add(block.split(":", 1)[0])
    return found


def tiny_config(work: Path, **changes) -> Path:
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.update(results="results", data="data", seeds=[0])
    config["benchmark"]["ood"] = ["gaussian-noise"]
    for key in ("outliers", "groups"):
        config["benchmark"].pop(key)
    config["offline"].update(n_ood=40)
    config["backbones"]["resnet18-small"]["width"] = 0.125
    config["training"].update(epochs=1, batch_size=128)
    config["training"].pop("snapshots")
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
    for key, value in changes.items():
        section, _, name = key.partition("__")
        (config[section] if name else config).update({name or key: value})
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


# A test's jobs take seconds: SLURM is asked about them every 5 s instead of the plugin's 40 s
# before the first check (a one-job-at-a-time chain would otherwise wait 40 s a job).
QUICK = ("--slurm-init-seconds-before-status-checks", "5", "--seconds-between-status-checks", "5")


def snakemake(cmd: list[str], work: Path, config: Path, *more) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *cmd[1:], *QUICK, *more]
    cmd[cmd.index("--configfile") + 1] = str(config)
    cmd += ["-s", str(ROOT / "Snakefile"), "--directory", str(work)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    return subprocess.run(
        cmd, capture_output=True, text=True, env={**env, "PYTHONUNBUFFERED": "1"}, timeout=1500
    )


def jobs_received(cluster) -> list[dict]:
    """What SLURM holds of every job it started: rule (from the plugin's comment), partition,
    GPUs asked for, time limit, end state and node."""
    out = []
    for job_id in cluster.allocations():
        shown = subprocess.run(
            ["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True
        ).stdout
        fields = dict(f.split("=", 1) for f in shown.split() if "=" in f)
        out.append(
            {
                "id": job_id,
                "rule": fields["Comment"][len("rule_") :].split("_wildcards_")[0],
                "partition": fields["Partition"],
                "gpus": re.findall(r"gpu:(\d+)", fields.get("TresPerJob", "")),
                "limit": fields["TimeLimit"],
                "state": fields["JobState"],
                "node": fields["NodeList"],
            }
        )
    return out


@pytest.fixture
def cluster(tmp_path):
    (tmp_path / "slurm").mkdir()
    try:
        with SingleNodeCluster(tmp_path / "slurm", (CPU, GPU), gpus=1) as c:
            yield c
    except ClusterUnavailable as err:
        pytest.skip(str(err))


def test_from_a_gpu_less_machine_network_jobs_ask_for_a_gpu_on_its_partition(cluster, tmp_path):
    assert not any((Path(p) / "nvidia-smi").exists() for p in os.environ["PATH"].split(":"))
    work = tmp_path / "gpu"
    work.mkdir()
    config = tiny_config(work)  # `device: auto`, as every preset ships
    cmd = readme_cluster_command()

    # the whole plan: a GPU for exactly the jobs that run a network, on the GPU partition
    dry = snakemake(cmd, work, config, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    planned = plan.jobs(dry.stdout)
    networks = network_rules()
    assert {"train_backbone", "dump_features", "finetune_model"} <= networks
    for rule, res in planned:
        wants = rule in networks
        assert res.get("gpu", "0") == ("1" if wants else "0"), (rule, res)
        if rule not in ("all", "write_manifest"):  # local rules: no partition used
            assert res["slurm_partition"] == (GPU if wants else CPU), (rule, res)

    # what SLURM received: the data jobs on the CPU partition without a GPU, the training on the
    # GPU partition with one; the node has none to give, so the training stops, naming it
    run = snakemake(cmd, work, config, "--keep-going", "--retries", "0")
    received = jobs_received(cluster)
    by_rule = {}
    for job in received:
        by_rule.setdefault(job["rule"], []).append(job)
    assert set(by_rule) == {"generate_offline_dataset", "train_backbone"}, received
    for job in received:
        wants = job["rule"] in networks
        assert job["partition"] == (GPU if wants else CPU) and job["gpus"] == (
            ["1"] if wants else []
        ), job
    assert run.returncode != 0
    log = (work / "results/digits/resnet18-small/seed0/logs/train_backbone.log").read_text()
    assert f"asked for 1 GPU(s) but node {cluster.node} gives it none" in log


def test_a_cluster_run_resumes_a_job_killed_at_its_time_limit(cluster, tmp_path, served):
    import fixtures

    root, server = served
    svhn = fixtures.svhn(root)["paths"][0]
    work = tmp_path / "cpu"
    work.mkdir()
    # a training of about 150 s here (7 s an epoch), on CPUs: `device: cpu`
    config = tiny_config(
        work,
        device="cpu",
        training__epochs=20,
        benchmark__ood=["svhn-test"],
        downloads={svhn.name: {"url": server.url(svhn.name), "md5": fixtures.md5(svhn)}},
    )
    yaml_config = yaml.safe_load(config.read_text())
    yaml_config["backbones"]["resnet18-small"]["width"] = 0.5
    config.write_text(yaml.safe_dump(yaml_config))
    cmd = readme_cluster_command()
    # a one-minute limit on the first attempt, growing with each as the rules' own do; the second
    # one's (5 min) is far above what is left of the training, so no attempt ends near its limit
    # (an attempt that finishes its training just as SLURM kills it loses the output and, its
    # resume state already removed, the next attempt starts over)
    run = snakemake(cmd, work, config, "--set-resources", "train_backbone:runtime=4*attempt-3")
    said = run.stdout + run.stderr
    assert run.returncode == 0, said[-5000:]

    received = jobs_received(cluster)
    assert all(j["partition"] == CPU and j["gpus"] == [] for j in received), received
    assert "download_archive" not in {j["rule"] for j in received}  # it ran here, not as a job
    assert (work / "data" / "raw" / svhn.name).exists()
    training = [j for j in received if j["rule"] == "train_backbone"]
    assert len(training) >= 2 and training[0]["state"] == "TIMEOUT", training
    assert [j["limit"] for j in training[:2]] == ["00:01:00", "00:05:00"]
    assert training[-1]["state"] == "COMPLETED"
    run_dir = work / "results" / "digits" / "resnet18-small" / "seed0"
    log = (run_dir / "logs" / "train_backbone.log").read_text()
    resumed = re.search(r"resuming \S+ after epoch (\d+)", log)
    assert resumed and 1 <= int(resumed[1]) < 20, log[:2000]
    assert f"job train_backbone on {cluster.node} (CPU " in log.splitlines()[0]
    assert "\r" not in log and re.search(r"epoch 20/20, loss \d", log)

    manifest = json.loads((work / "results" / "manifest.json").read_text())
    (trained,) = manifest["jobs"]["train_backbone"]
    assert trained["host"].split(".")[0] == cluster.node and trained["cuda_devices"] == 0
    digest = hashlib.sha256(svhn.read_bytes()).hexdigest()
    assert manifest["archives"] == [{"path": f"data/raw/{svhn.name}", "sha256": digest}]
    copied = yaml.safe_load((work / "results" / "config.yaml").read_text())
    assert copied["training"]["epochs"] == 20 and copied["device"] == "cpu"
