"""The workflow's own hygiene: `snakemake --lint` passes, the Snakefiles are snakefmt-formatted,
every rule names a conda environment, and the environments pin what pyproject.toml pins."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILES = [ROOT / "Snakefile", *sorted((ROOT / "rules").glob("*.smk"))]


def test_snakemake_lint_passes(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "--lint",
            "--directory",
            str(tmp_path),
            "--configfile",
            str(ROOT / "config.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    said = result.stdout + result.stderr
    assert (
        result.returncode == 0 and "Congratulations, your workflow is in a good condition" in said
    ), said[-3000:]


def test_snakefiles_are_snakefmt_formatted():
    result = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", *map(str, SNAKEFILES)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _requirement(spec: str) -> tuple[str, str]:
    name, version = re.match(r"^([A-Za-z0-9_.-]+)\s*(.*)$", spec.strip()).groups()
    name = {"python-lmdb": "lmdb"}.get(name.lower(), name.lower())
    return name, version.replace(" ", "")


def _env_requirements(path: Path) -> dict[str, str]:
    deps = {}
    for dep in yaml.safe_load(path.read_text())["dependencies"]:
        for spec in dep["pip"] if isinstance(dep, dict) else [dep]:
            name, version = _requirement(spec)
            if name not in ("python", "pip"):
                deps[name] = version
    return deps


def test_every_time_limit_grows_with_the_attempt_and_every_network_rule_asks_for_a_gpu():
    """What a cluster run relies on: a job killed at its limit comes back with a longer one, and
    a rule that runs a network (told a `device`) asks for a GPU, on the GPU partition."""
    for f in sorted((ROOT / "rules").glob("*.smk")):
        for block in re.split(r"^rule ", f.read_text(), flags=re.M)[1:]:
            name = block.split(":", 1)[0]
            runtime = re.search(r"^\s+runtime=(.*)$", block, re.M)
            assert runtime and "attempt" in runtime[1], f"{f.name}: rule {name}"
            runs_network = re.search(r"^\s+device=", block, re.M) is not None
            assert runs_network == ("**NETWORK," in block), f"{f.name}: rule {name}"


def test_rule_environments_pin_what_pyproject_pins():
    pinned = dict(
        _requirement(d)
        for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    used = set()
    for env in ("torch", "analysis"):
        deps = _env_requirements(ROOT / "envs" / f"{env}.yaml")
        for name, version in deps.items():
            assert name in pinned, f"envs/{env}.yaml: {name} is not a dependency in pyproject.toml"
            assert version == pinned[name], (
                f"envs/{env}.yaml: {name}{version} but pyproject pins {pinned[name]}"
            )
        used |= set(deps)
    assert used == set(pinned)  # every dependency is in some rule's environment
    assert "torch" not in _env_requirements(ROOT / "envs" / "analysis.yaml")


def test_the_project_environment_pins_what_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = dict(
        _requirement(d) for d in project["dependencies"] + project["optional-dependencies"]["test"]
    )
    assert _env_requirements(ROOT / "envs" / "oodrepro.yaml") == pinned


def test_every_rule_names_one_of_the_environments():
    for path in SNAKEFILES:
        text = path.read_text()
        rules = re.findall(r"^rule (\w+):", text, re.M)
        envs = re.findall(r'^    conda:\n        "(?:\.\./)?envs/(\w+)\.yaml"', text, re.M)
        expected = [r for r in rules if r != "all"]
        assert len(envs) == len(expected), (
            f"{path.name}: {len(expected)} rules, {len(envs)} conda directives"
        )
        assert set(envs) <= {"torch", "analysis"}


BASELINES = {"maxlogit", "react", "dice", "ash", "knn", "vim", "rmds", "gen"}


def _planned_scores(config: Path, workdir: Path) -> set[str]:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "Snakefile"),
            "--dry-run",
            "--directory",
            str(workdir),
            "--configfile",
            str(config),
            "--replace-workflow-config",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return set(re.findall(r"method=([a-z_]+)", result.stdout))


def test_the_default_config_and_both_presets_plan_the_post_hoc_baselines(tmp_path):
    assert BASELINES <= _planned_scores(ROOT / "config.yaml", tmp_path / "default")
    assert BASELINES <= _planned_scores(
        ROOT / "presets" / "openood-cifar10-resnet18.yaml", tmp_path / "openood"
    )
    assert {"react", "dice"} <= _planned_scores(
        ROOT / "presets" / "featurenorm-cvpr23.yaml", tmp_path / "fn"
    )


def test_no_file_points_outside_the_repository():
    """A clone has no sibling specification folder and no design document: the project's
    own docs/ say what it needs."""
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    # the names are assembled so that this file does not itself point outside the repository; the
    # specification's conventions.md is refused, docs/conventions.md (and a link beside it) is not
    outside = ["\\.\\./" + "shared", "shared" + "/methods", "design" + "\\.md"]
    pattern = re.compile(
        "|".join([*outside, r"methods/[a-z-]+\.md", r"(?<![/\[(])conventions\.md", "spec §"])
    )
    offenders = [
        f
        for f in tracked
        if (ROOT / f).is_file()
        and f != "tests/test_workflow_hygiene.py"
        and pattern.search((ROOT / f).read_text(errors="ignore"))
    ]
    assert offenders == []
    for page in re.findall(
        r"docs/[a-z-]+\.md",
        "".join(
            (ROOT / f).read_text(errors="ignore")
            for f in tracked
            if f.endswith((".py", ".yaml", ".md"))
        ),
    ):
        assert (ROOT / page).is_file(), page


def test_ruff_finds_nothing():
    """The linter the project configures (pyproject.toml, [tool.ruff]) passes on every file."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def test_python_files_are_ruff_formatted():
    """One layout everywhere, 100 columns (`ruff format` fixes what this reports)."""
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-1000:]


def test_the_readmes_library_example_runs(capsys):
    """The README's ten lines of scoring without Snakemake run as printed."""
    section = (ROOT / "README.md").read_text().split("## The library without Snakemake")[1]
    code = section.split("```python\n")[1].split("```")[0]
    exec(compile(code, "README.md", "exec"), {})
    assert "'auroc':" in capsys.readouterr().out


def test_every_decision_a_preset_records_is_on_its_method_page():
    """A preset's header numbers its decisions; the method page it names lists each number in its
    Decisions table (default and alternative), so the page stays the complete reference."""
    import re

    checked = 0
    for preset in sorted((ROOT / "presets").glob("*.yaml")):
        header = preset.read_text().split("\nresults:")[0]
        page = re.search(r"Method page: (docs/[\w-]+\.md)", header)
        if page is None:
            continue
        numbers = {int(n) for n in re.findall(r"^#\s*(\d+)\.\s", header, re.M)}
        numbers |= {
            int(n)
            for n in re.findall(r"\s(\d+)\.\s+[A-Z][^.]*\.", header)
            if int(n) in range(1, 40)
        }
        table = (ROOT / page[1]).read_text().split("## Decisions")[1].split("\n## ")[0]
        rows = {int(n) for n in re.findall(r"^\| (\d+) \|", table, re.M)}
        assert numbers and numbers <= rows, (
            f"{preset.name}: decisions {sorted(numbers - rows)} missing on {page[1]}"
        )
        checked += 1
    assert checked == 11  # every paper preset except the OpenOOD anchors


def _library_imports() -> dict[str, set[str]]:
    """Each module of the package → the package's modules it imports (at any depth)."""
    import ast

    modules = {
        str(p.relative_to(ROOT).with_suffix("")).replace("/", ".").removesuffix(".__init__"): p
        for p in (ROOT / "oodrepro").rglob("*.py")
    }
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                target = f"{base}.{node.module}" if node.level and node.module else node.module
                target = target or base
                # `from pkg import module` needs the module; `from module import name`, the module
                found |= {
                    f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target
                    for a in node.names
                }
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {t for t in found if t in modules and t != name}
    return graph


def test_the_package_has_no_import_circle():
    """No module reaches itself through the modules it imports (directly or through others):
    each can be read, tested and changed from the bottom up."""
    graph = _library_imports()
    for start in graph:
        seen, stack = set(), list(graph[start])
        while stack:
            here = stack.pop()
            assert here != start, f"{start} imports itself through {sorted(seen)}"
            if here not in seen:
                seen.add(here)
                stack.extend(graph[here])


def test_modules_and_functions_stay_short():
    """A module a newcomer reads in one sitting (≤ 600 lines), a function on one screen or two
    (≤ 80 lines)."""
    import ast

    long = []
    for path in sorted((ROOT / "oodrepro").rglob("*.py")):
        text = path.read_text()
        if len(text.splitlines()) > 600:
            long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > 80:
                    long.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert not long, long
