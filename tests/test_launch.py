"""What `make run` says and does at the points a user gets stuck: a missing or invalid config
(one short message, no traceback), and the lock a killed run leaves behind."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = 'rule all:\n    output: "done.txt"\n    shell: "sleep {wait} && touch {{output}}"\n'


def launch(cwd, config, *snakemake):
    return subprocess.run(
        [sys.executable, "-m", "oodrepro.launch", str(config), "--", *snakemake],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_a_missing_config_is_one_line(tmp_path):
    result = launch(tmp_path, "missing.yaml", "true")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "make run: no config file 'missing.yaml' (the default is config.yaml; presets are in "
        "presets/)"
    ]


def test_an_invalid_config_names_the_key_without_a_traceback(tmp_path):
    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    config["training"]["epochz"] = config["training"].pop("epochs")  # a typo in a key
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = launch(tmp_path, "bad.yaml", "true")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "training: unknown key" in result.stderr and "epochz" in result.stderr


def _snakemake(wait):
    return [sys.executable, "-m", "snakemake", "--cores", "1", "-s", "Snakefile"], SNAKEFILE.format(
        wait=wait
    )


def test_a_killed_runs_lock_is_released_and_a_live_run_is_named(tmp_path):
    command, snakefile = _snakemake(wait=60)
    (tmp_path / "Snakefile").write_text(snakefile)
    first = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while not any((tmp_path / ".snakemake" / "locks").glob("*")) and time.time() < deadline:
            time.sleep(0.2)
        assert any((tmp_path / ".snakemake" / "locks").glob("*")), (
            "snakemake never locked the directory"
        )

        busy = launch(tmp_path, ROOT / "config.yaml", *command)  # the first run is still working
        assert (
            busy.returncode != 0
            and f"pid {first.pid}" in busy.stderr
            and "another Snakemake run" in busy.stderr
        )
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # killed hard: its lock stays behind
        first.wait()
    assert any((tmp_path / ".snakemake" / "locks").glob("*"))

    (tmp_path / "Snakefile").write_text(_snakemake(wait=0)[1])
    plain = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert (
        plain.returncode != 0 and "LockException" in plain.stdout + plain.stderr
    )  # what users hit before

    recovered = launch(tmp_path, ROOT / "config.yaml", *command)
    assert recovered.returncode == 0, recovered.stderr[-2000:]
    assert "a killed run left its lock" in recovered.stderr
    assert (tmp_path / "done.txt").exists()


def test_make_run_with_a_missing_config_is_one_line():
    result = subprocess.run(
        ["make", "--no-print-directory", "run", "CONFIG=missing.yaml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    said = [
        line for line in result.stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line)
    ]  # make's own
    assert said == [
        "make run: no config file 'missing.yaml' (the default is config.yaml; presets are in "
        "presets/)"
    ]
