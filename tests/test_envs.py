"""The conda environments agree with pyproject.toml: same versions wherever a package is pinned.

No conda channel is reachable in CI, so `--use-conda` itself cannot run here; everything short of solving is
checked: every rule has an environment file that exists and parses, each file pins python, and every version
pinned in an environment equals the pin in pyproject.toml (and vice versa for the packages that file lists).
"""
import re
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ENV_FILES = sorted((REPO / "workflow" / "envs").glob("*.yaml")) + [REPO / "environment.yml"]


def pyproject_pins() -> dict[str, str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"]) + [r for extra in meta.get("optional-dependencies", {}).values() for r in extra]
    pins = {}
    for req in reqs:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^;\s]+)\s*", req)
        if m:
            name, ver = m.group(1).lower(), m.group(2)
            assert pins.setdefault(name, ver) == ver, f"pyproject pins {name} twice, differently"
    return pins


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
    pins = pyproject_pins()
    env = env_pins(path)
    assert env.get("python", "").startswith("3.11"), f"{path.name} must pin python 3.11"
    for name, ver in env.items():
        if name in pins:
            assert ver == pins[name], f"{path.name}: {name} {ver} != pyproject {pins[name]}"
        elif ver is not None and name not in ("python",):
            pytest.fail(f"{path.name} pins {name}={ver}, which pyproject.toml does not pin")


def test_every_rule_has_an_existing_environment():
    rules = (REPO / "workflow" / "rules").glob("*.smk")
    envs_used = set()
    for smk in rules:
        text = smk.read_text()
        for block in re.split(r"^rule ", text, flags=re.M)[1:]:
            name = block.split(":", 1)[0]
            m = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
            assert m, f"rule {name} in {smk.name} has no conda: environment"
            env = (smk.parent / m.group(1)).resolve()
            assert env.exists(), f"rule {name}: {env} does not exist"
            envs_used.add(env.name)
    assert envs_used == {p.name for p in ENV_FILES if p.parent.name == "envs"}, "an environment file is unused"


def test_environment_yml_installs_the_package_and_the_workflow():
    env = env_pins(REPO / "environment.yml")
    pip = [d for d in yaml.safe_load((REPO / "environment.yml").read_text())["dependencies"] if isinstance(d, dict)]
    assert any("-e ." in p.get("pip", []) for p in pip), "environment.yml must install this package (-e .)"
    for needed in ("snakemake", "torch", "pandas", "matplotlib", "scikit-learn", "datasets", "pytest"):
        assert needed in env, f"environment.yml lacks {needed}"
