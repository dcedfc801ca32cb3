"""The environments agree: pyproject.toml's lower bounds, the exact versions of constraints.txt (CI) and the conda
environments' pins, and the GPU machine's versions that the window rehearsal uses (.ci/window-machine.txt).

No conda channel is reachable in CI, so `--use-conda` itself cannot run here; everything short of solving is
checked: every rule has an environment file that exists and parses, each file pins python, every version pinned in
an environment equals the pin in constraints.txt (and vice versa for the packages that file lists), and every job of
the workflow's test case (.test/) runs with only its environment's packages importable (sdgm/common/importguard.py).
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sdgm.common.importguard import ENV_VAR, plan, rule_environments
from sdgm.harness.config import runs

REPO = Path(__file__).resolve().parents[1]
ENV_FILES = sorted((REPO / "workflow" / "envs").glob("*.yaml")) + [REPO / "environment.yml"]


def pyproject_requirements() -> list[Requirement]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"]) + [r for extra in meta.get("optional-dependencies", {}).values() for r in extra]
    return [Requirement(r) for r in reqs]


def pinned(path: Path) -> dict[str, str]:
    """name -> version of a requirements or constraints file whose every line is `name==version` (a comment, a
    blank line or a --hash aside)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].split(" --hash", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
            assert m, f"{path.name}: {line!r} is not name==version"
            name = canonicalize_name(m.group(1))
            assert name not in pins, f"{path.name} pins {name} twice"
            pins[name] = m.group(2)
    return pins


def ci_pins() -> dict[str, str]:
    """The exact versions CI installs (constraints.txt)."""
    return pinned(REPO / "constraints.txt")


@pytest.mark.parametrize("versions", ["constraints.txt", ".ci/window-machine.txt", "window-wheels.txt"])
def test_pinned_versions_meet_pyprojects_lower_bounds(versions):
    """Every version CI (constraints.txt), the window rehearsal's GPU-machine environment or the window's carried
    wheels install is one pyproject.toml allows, so the lower bounds are versions something here runs with."""
    pins = pinned(REPO / versions)
    checked = 0
    for req in pyproject_requirements():
        name = canonicalize_name(req.name)
        if name in pins:
            assert req.specifier.contains(pins[name], prereleases=True), (
                f"{versions} has {name}=={pins[name]}, outside pyproject's {req}"
            )
            checked += 1
    assert checked, f"{versions} pins none of pyproject's requirements"


def test_pyproject_states_lower_bounds_and_ci_pins_each_one():
    """pyproject.toml pins nothing exactly (the GPU machine's own versions must satisfy it), and constraints.txt
    pins every requirement that had a tested exact version."""
    pins = ci_pins()
    for req in pyproject_requirements():
        assert all(s.operator == ">=" for s in req.specifier), f"pyproject: {req} is not a lower bound"
        if canonicalize_name(req.name) not in ("numpy", "pyyaml", "pytest", "hypothesis"):  # never pinned
            assert canonicalize_name(req.name) in pins, f"constraints.txt does not pin {req.name}"


def env_pins(path: Path) -> dict[str, str | None]:
    """name -> version (None if unpinned) for conda and pip entries of one environment file."""
    env = yaml.safe_load(path.read_text())
    out: dict[str, str | None] = {}
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            for pip_req in dep.get("pip", []):
                if pip_req.startswith("-"):
                    continue
                m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:==(\S+))?", pip_req.strip())
                assert m, f"{path.name}: cannot read pip requirement {pip_req!r}"
                out[m.group(1).lower()] = m.group(2)
        else:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:=+([^=\s]+))?", dep.strip())
            assert m, f"{path.name}: cannot read conda requirement {dep!r}"
            out[m.group(1).lower()] = m.group(2)
    return out


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_environment_pins_agree_with_pyproject(path):
    pins = ci_pins()
    env = env_pins(path)
    assert env.get("python", "").startswith("3.11"), f"{path.name} must pin python 3.11"
    for name, ver in env.items():
        if name in pins:
            assert ver == pins[name], f"{path.name}: {name} {ver} != constraints.txt {pins[name]}"
        elif ver is not None and name not in ("python",):
            pytest.fail(f"{path.name} pins {name}={ver}, which constraints.txt does not pin")


def test_every_rule_has_an_existing_environment():
    envs = rule_environments(REPO)
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        for name in re.findall(r"^rule (\w+):", smk.read_text(), flags=re.M):
            assert name in envs, f"rule {name} in {smk.name} has no conda: environment"
            assert (REPO / "workflow" / "envs" / envs[name]).exists(), f"rule {name}: {envs[name]} does not exist"
    assert set(envs.values()) == {p.name for p in ENV_FILES if p.parent.name == "envs"}, "an environment file is unused"


def test_environment_yml_installs_the_package_and_the_workflow():
    env = env_pins(REPO / "environment.yml")
    pip = [d for d in yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"] if isinstance(d, dict)]
    assert any("-e ." in p.get("pip", []) for p in pip), "environment.yml must install this package (-e .)"
    for needed in ("snakemake", "torch", "pandas", "matplotlib", "scikit-learn", "datasets", "pytest"):
        assert needed in env, f"environment.yml lacks {needed}"


def write_plan(tmp_path: Path) -> dict[str, str]:
    """The import plan of this repository in a file; the environment variables that put it in force."""
    path = tmp_path / "import-plan.json"
    path.write_text(json.dumps(plan(REPO)))
    return {**os.environ, ENV_VAR: str(path)}


def test_import_plan_refuses_what_an_environment_lacks():
    p = plan(REPO)
    assert p["rules"]["report"] == "report.yaml" and p["rules"]["train"] == "torch.yaml"
    assert "torch" in p["blocked"]["report.yaml"] and "sklearn" in p["blocked"]["report.yaml"]
    assert "pandas" not in p["blocked"]["report.yaml"] and "matplotlib" not in p["blocked"]["report.yaml"]
    assert "torch" not in p["blocked"]["torch.yaml"] and "sklearn" not in p["blocked"]["torch.yaml"]
    for env, mods in p["blocked"].items():
        assert "snakemake" not in mods and "sdgm" not in mods and "json" not in mods, env


@pytest.mark.parametrize("rule,fails", [("report", True), ("train", False)])
def test_guard_stops_a_job_importing_outside_its_environment(tmp_path, rule, fails):
    """A real Snakemake job named like a workflow rule imports the workflow-script preamble, then torch: refused in
    the report environment (with the rule, the module and the file named), allowed in the torch one."""
    (tmp_path / "job.py").write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\nimport sdgm.common.preamble\nimport torch\n"
        "open(snakemake.output[0], 'w').write(torch.__version__)\n"
    )
    (tmp_path / "Snakefile").write_text(
        f'rule {rule}:\n    output:\n        "out.txt"\n    script:\n        "job.py"\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--show-failed-logs"],
        cwd=tmp_path,
        env=write_plan(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = r.stdout + r.stderr
    if fails:
        assert r.returncode != 0 and not (tmp_path / "out.txt").exists(), out[-3000:]
        assert "rule 'report' imports 'torch'" in out and "workflow/envs/report.yaml" in out, out[-3000:]
    else:
        assert r.returncode == 0, out[-3000:]
        assert (tmp_path / "out.txt").read_text()


def test_importing_sdgm_changes_nothing(tmp_path):
    """With an import plan in force, `import sdgm` (and a part of it) leaves the import system as it was: only the
    workflow-script preamble installs the guard."""
    check = (
        "import importlib.util, sys\nbefore = (list(sys.meta_path), importlib.util.find_spec)\n"
        "import sdgm, sdgm.common, sdgm.harness.config\n"
        "assert (list(sys.meta_path), importlib.util.find_spec) == before, 'import sdgm changed the import system'\n"
        "import sdgm.common.preamble\n"
        "assert type(sys.meta_path[0]).__name__ == 'Guard' and importlib.util.find_spec is not before[1]\n"
    )
    (tmp_path / "import-plan.json").write_text(json.dumps({"rules": {}, "blocked": {}, "snakemake": []}))
    r = subprocess.run(
        [sys.executable, "-c", check],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, ENV_VAR: str(tmp_path / "import-plan.json")},
    )
    assert r.returncode == 0, r.stderr[-3000:]


def test_every_script_imports_the_preamble_first():
    """The guard is installed when sdgm.common.preamble is imported, so a script must not import anything
    but the standard library before it."""
    for script in sorted((REPO / "workflow" / "scripts").glob("*.py")):
        for node in ast.parse(script.read_text()).body:
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            if "sdgm.common.preamble" in names:
                break
            assert all(n.split(".")[0] in sys.stdlib_module_names for n in names), (
                f"{script.name}: {names} before sdgm.common.preamble"
            )
        else:
            pytest.fail(f"{script.name} never imports sdgm.common.preamble")


@pytest.mark.e2e
def test_test_case_lints_and_runs_with_each_rule_in_its_environment(tmp_path):
    """The workflow's test case (.test/), as the snakemake-workflows standard runs it: `--lint` finds nothing, then
    the whole DAG, and the publishing of every run (sdgm.campaign asks for it), runs with every job limited to
    the packages of its conda environment; then its readings config (.test/config/readings.yaml, docs/readings.md)
    into the same directory, so that every rule with an environment has run."""
    shutil.copytree(REPO / ".test" / "config", tmp_path / "config")
    base = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path)]

    def lint(cmd: list[str]) -> None:
        r = subprocess.run([*cmd, "--lint"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and "Congratulations" in r.stdout + r.stderr, (r.stdout + r.stderr)[-4000:]

    def build(cmd: list[str], timeout: int) -> str:
        """The command with every job limited to its environment's packages; its output, once it passed."""
        r = subprocess.run(cmd, env=write_plan(tmp_path), capture_output=True, text=True, timeout=timeout)
        assert r.returncode == 0, (r.stdout + r.stderr)[-6000:]
        return r.stdout + r.stderr

    lint(base)
    out = build([*base, "--cores", "2", "--show-failed-logs"], 900)
    # then what a campaign asks for beside the DAG: every finished run published into the store
    cfg = yaml.safe_load((tmp_path / "config" / "config.yaml").read_text())
    receipts = [f"results/published/receipts/{run.corpus}/{run.name}.json" for run in runs(cfg)]
    out += build([*base, "--cores", "2", "--show-failed-logs", *receipts], 300)
    assert all((tmp_path / receipt).exists() for receipt in receipts)
    # then the readings rules, with the readings config (its own results_dir; the corpora and tokens are shared)
    readings = [*base, "--configfile", str(tmp_path / "config" / "readings.yaml")]
    lint(readings)
    out += build([*readings, "--cores", "2", "--show-failed-logs"], 300)
    assert (tmp_path / "results" / "readings" / "tables" / "readings.csv").stat().st_size > 0
    jobs = {m.group(1) for m in re.finditer(r"^(?:local)?rule (\w+):", out, flags=re.M)}
    assert set(rule_environments(REPO)) <= jobs, (
        f"rules the test case does not run: {set(rule_environments(REPO)) - jobs}"
    )
    assert (tmp_path / "results" / "README.md").stat().st_size > 0
