"""Each workflow job may import only what its conda environment provides: a check that runs without conda.

`snakemake --use-conda` runs every rule in its environment from workflow/envs/. Where no conda channel can be
reached (the tests), those environments cannot be built, so a rule that imports a package its environment lacks
would pass here and fail for a user. This module closes that gap: `plan(repo)` reads the rules and the environment
files and lists, for each environment, the third-party modules it lacks (the project's dependencies and everything
they pull in, less what the environment's own packages pull in); with `SDGM_IMPORT_GUARD` naming a file holding that
plan, the workflow-script preamble (sdgm.common.preamble, which every script imports first) installs an import hook in
the Snakemake job that refuses those modules with the rule, the module and the environment file named, as the
environment would.
"""

from __future__ import annotations

import importlib.abc
import importlib.metadata as md
import importlib.util
import json
import os
import re
import sys
import tomllib
from pathlib import Path

import yaml

ENV_VAR = "SDGM_IMPORT_GUARD"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def env_packages(path: Path) -> set[str]:
    """Normalized names of the packages one environment file lists (conda and pip entries)."""
    names = set()
    for dep in yaml.safe_load(path.read_text())["dependencies"]:
        for req in dep.get("pip", []) if isinstance(dep, dict) else [dep]:
            if not req.startswith("-"):
                names.add(_norm(re.split(r"[=<>!~\s\[;]", req.strip(), maxsplit=1)[0]))
    return names - {"python", "pip"}


def rule_environments(repo: Path) -> dict[str, str]:
    """rule name -> the file name of its conda environment, read from workflow/rules/*.smk."""
    out = {}
    for smk in sorted((repo / "workflow" / "rules").glob("*.smk")):
        for block in re.split(r"^rule ", smk.read_text(), flags=re.M)[1:]:
            name = block.split(":", 1)[0].strip()
            m = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
            if m:
                out[name] = Path(m.group(1)).name
    return out


def _closure(dists: set[str]) -> set[str]:
    """The installed distributions named and everything they require (markers evaluated here, extras not taken)."""
    from packaging.requirements import Requirement

    seen, todo = set(), list(dists)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue  # not installed here: it has no modules here to refuse or allow
        seen.add(name)
        for r in map(Requirement, requires):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(_norm(r.name))
    return seen


def _modules_of(dists: set[str]) -> set[str]:
    by_dist: dict[str, set[str]] = {}
    for module, owners in md.packages_distributions().items():
        for d in owners:
            by_dist.setdefault(_norm(d), set()).add(module)
    return {m for d in dists for m in by_dist.get(d, ())}


def project_dependencies(repo: Path) -> set[str]:
    """What the workflow may use anywhere: pyproject's dependencies and its workflow extras, and every environment."""
    meta = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in ("workflow", "slurm"):
        reqs += meta.get("optional-dependencies", {}).get(extra, [])
    names = {_norm(re.split(r"[=<>!~\s\[;]", r.strip(), maxsplit=1)[0]) for r in reqs}
    for env in (repo / "workflow" / "envs").glob("*.yaml"):
        names |= env_packages(env)
    return names


def plan(repo: Path) -> dict:
    """{"rules": {rule: env file}, "blocked": {env file: sorted top-level modules that environment lacks}}."""
    universe = _modules_of(_closure(project_dependencies(repo)))
    envs = {p.name: p for p in sorted((repo / "workflow" / "envs").glob("*.yaml"))}
    # The job script's preamble appends Snakemake's own install path to sys.path in any environment (it unpickles
    # its `snakemake` object with it): Snakemake and what it imports itself are the job's in every environment.
    snakemake = _modules_of(_closure({"snakemake"}))
    blocked = {
        name: sorted(universe - _modules_of(_closure(env_packages(p))) - {"snakemake"}) for name, p in envs.items()
    }
    return {"rules": rule_environments(repo), "blocked": blocked, "snakemake": sorted(snakemake)}


def _current_rule() -> str | None:
    """The rule of the Snakemake job this process runs (its script's `snakemake` object), or None elsewhere."""
    smk = getattr(sys.modules.get("__main__"), "snakemake", None)
    rule = getattr(smk, "rule", None)
    return rule if isinstance(rule, str) and hasattr(smk, "input") else None


class Guard(importlib.abc.MetaPathFinder):
    def __init__(self, plan: dict):
        self.rules = plan["rules"]
        self.blocked = {env: set(mods) for env, mods in plan["blocked"].items()}
        self.snakemake = set(plan["snakemake"])

    @staticmethod
    def _importer(depth: int = 2) -> str | None:
        """Top-level name of the module whose code runs the import being resolved; None inside a probe that
        `probe` below has already answered."""
        frame = sys._getframe(depth)
        while frame is not None and (
            frame.f_code.co_filename.startswith("<frozen")
            or frame.f_globals.get("__name__") in (__name__, "importlib.util")
        ):
            if frame.f_globals.get("__name__") == "importlib.util":
                return None
            frame = frame.f_back
        return (frame.f_globals.get("__name__") or "").partition(".")[0] if frame is not None else ""

    def probe(self, real_find_spec):
        """`importlib.util.find_spec`, which libraries (torch among them) use to see whether a package is installed
        without importing it: None for a module the environment lacks, as it would answer there."""

        def find_spec(name, package=None):
            importer = self._importer(1)
            if not name.startswith(".") and importer is not None and self.refused(name, importer):
                return None
            return real_find_spec(name, package)

        return find_spec

    def refused(self, fullname: str, importer: str = "") -> str | None:
        rule = _current_rule()
        if rule is None or importer in self.snakemake:
            return None
        if rule not in self.rules:
            return f"rule {rule!r} has no conda environment in the import plan (a rule without `conda:`?)"
        env = self.rules[rule]
        if fullname.partition(".")[0] in self.blocked[env]:
            return (
                f"rule {rule!r} imports {fullname!r}, which its conda environment workflow/envs/{env} does not "
                f"provide: add the package to that file, or import it only where it is needed"
            )
        return None

    def find_spec(self, fullname, path=None, target=None):
        importer = self._importer()
        why = importer is not None and self.refused(fullname, importer)
        if why:
            raise ModuleNotFoundError(why, name=fullname)
        return None


def install(plan_file: str | os.PathLike) -> Guard:
    """Put the guard first on sys.meta_path (once). It sees the imports made from then on: every workflow script
    imports sdgm.common.preamble, which calls this, before anything else of its own (a test checks that), so it sees
    all of the job's."""
    for finder in sys.meta_path:
        if isinstance(finder, Guard):
            return finder
    guard = Guard(json.loads(Path(plan_file).read_text()))
    sys.meta_path.insert(0, guard)
    importlib.util.find_spec = guard.probe(importlib.util.find_spec)
    return guard
