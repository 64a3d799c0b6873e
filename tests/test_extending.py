"""docs/extending.md followed as written: its marked code blocks applied to a copy of the project,
the copy's own score, schema and hygiene tests run, then a small DAG that scores the new dataset
with the new score and puts the new method's section in the summary."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.workflow
# ```<lang> <verb> <file> [<where>]: append | create | under <yaml path> | insert before:<line>
BLOCK = re.compile(
    r"^( *)```(\w+) (append|create|under|insert) (\S+)(?: ([^\n]*))?\n(.*?)^\1```$", re.M | re.S
)


def recipe_blocks() -> list[tuple[str, str, str, str]]:
    """(verb, file, where, code) for each marked block of the page, in order."""
    text = (ROOT / "docs" / "extending.md").read_text()
    out = []
    for m in BLOCK.finditer(text):
        indent = len(m[1])
        lines = m[6].splitlines(keepends=True)
        code = "".join(line[indent:] if line.strip() else "\n" for line in lines)
        out.append((m[3], m[4], m[5] or "", code))
    return out


def apply(copy: Path, verb: str, file: str, where: str, code: str) -> None:
    path = copy / file
    if verb == "append":
        path.write_text(path.read_text().rstrip("\n") + "\n\n\n" + code)
    elif verb == "create":
        assert not path.exists(), f"{file} already exists: the page would overwrite it"
        path.write_text(code)
    elif verb == "under":  # a mapping merged at a dotted path of a YAML file
        tree = yaml.safe_load(path.read_text())
        node = tree
        for key in where.split("."):
            node = node[key]
        node.update(yaml.safe_load(code))
        path.write_text(yaml.safe_dump(tree, sort_keys=False, allow_unicode=True))
    elif verb == "insert":
        marker = where.removeprefix("before:")
        text = path.read_text()
        assert text.count(marker + "\n") == 1, f"{marker!r} is not one line of {file}"
        path.write_text(text.replace(marker + "\n", code + marker + "\n"))
    else:
        raise ValueError(verb)


def test_the_page_marks_a_score_a_dataset_and_a_method():
    files = [file for _, file, _, _ in recipe_blocks()]
    assert {"oodrepro/scores.py", "oodrepro/data/specs.py", "Snakefile"} <= set(files)
    assert any(f.startswith("rules/") for f in files)


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    """A copy of the project's tracked files with every block of the page applied."""
    copy = tmp_path_factory.mktemp("extended") / "project"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    for block in recipe_blocks():
        apply(copy, *block)
    # a repository of its own, as a clone is: the hygiene tests list its files with git
    for cmd in (["init", "-q"], ["add", "-A"]):
        subprocess.run(["git", *cmd], cwd=copy, check=True, capture_output=True)
    return copy


def _run(copy: Path, *cmd: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=copy, capture_output=True, text=True, env=env)


def test_the_copys_own_tests_accept_the_additions(extended):
    """The score's docstring and schema default, the registries' enums, the rule file's
    formatting, lint and conda environment: what `make test` checks of every addition."""
    result = _run(
        extended,
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "tests/test_scores.py",
        "tests/test_workflow_hygiene.py",
        "tests/test_config.py::test_the_schemas_enums_are_the_registries",
        "tests/test_rehearsal.py::test_every_jobs_cost_is_registered_under_the_benchmark_folder_its_rule_writes",
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert (
        "logit_margin"
        in _run(
            extended, sys.executable, "-m", "pytest", "-q", "--collect-only", "tests/test_scores.py"
        ).stdout
    )


def test_a_small_dag_runs_the_additions_into_the_summary(extended, tmp_path):
    config = yaml.safe_load((extended / "config.yaml").read_text())
    config.update(results=str(tmp_path / "results"), data=str(tmp_path / "data"), seeds=[0])
    config["benchmark"].update(ood=["stripes"])
    for key in ("outliers", "groups"):
        config["benchmark"].pop(key, None)
    config["offline"].update(n_ood=40)
    config["training"].update(epochs=1, batch_size=128)
    config["scores"] = {"msp": {}, "logit_margin": {"top": 3}}
    config.update(variants=["base"], variant_scores={}, finetunes={}, watermarks={}, claims=[])
    config.pop("watermarknn")
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    result = _run(
        extended,
        sys.executable,
        "-m",
        "snakemake",
        "--directory",
        str(tmp_path),
        "--cores",
        "2",
        "--configfile",
        str(configfile),
        "--replace-workflow-config",
    )
    assert result.returncode == 0, result.stderr[-5000:]
    tidy = pd.read_csv(tmp_path / "results" / "metrics.csv")
    auroc = tidy.query("method == 'logit_margin' and ood_set == 'stripes' and metric == 'auroc'")
    assert len(auroc) == 1 and 0 <= auroc["value"].iloc[0] <= 100
    summary = (tmp_path / "results" / "summary.md").read_text()
    assert "## Logit table: ID test images per predicted class" in summary
    table = pd.read_csv(next((tmp_path / "results").rglob("logit_table/base.csv")))
    labels = np.load(tmp_path / "data" / "datasets" / "digits-test.npz")["labels"]
    assert table["images"].sum() == len(labels)  # every ID test image, in some class
    assert "centred on ID training" in summary  # the score's description, in "Scores"
