"""The layout: the snakemake-workflows standard (formatting, the catalog file, the test case and the config's
documentation), and the package sdgm as a handful of parts that import one another in one direction only.
(The test case itself runs in tests/test_envs.py, under the import guard.)"""

import ast
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_python_is_ruff_clean():
    """`ruff check` (the small rule set of pyproject.toml) and `ruff format --check` over the repository."""
    for args in (["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]):
        r = subprocess.run([sys.executable, "-m", "ruff", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (
            f"run `ruff {args[0]} {'--fix ' if args[0] == 'check' else ''}.`:\n" + (r.stdout + r.stderr)[-4000:]
        )


def test_workflow_is_snakefmt_clean():
    r = subprocess.run(
        [sys.executable, "-m", "snakefmt", "--check", "--diff", "workflow"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, "run `snakefmt workflow`:\n" + (r.stdout + r.stderr)[-4000:]


def test_catalog_file_names_the_workflow():
    cat = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())
    assert cat["usage"]["software-stack-deployment"]["conda"] is True
    assert cat["usage"]["report"] is True
    assert (REPO / "config" / "README.md").exists() and (REPO / ".test" / "config" / "config.yaml").exists()


def schema_keys(node: dict) -> set[str]:
    keys = set()
    for k, v in node.get("properties", {}).items():
        keys |= {k} | schema_keys(v)
    for k in ("additionalProperties", "items"):
        if isinstance(node.get(k), dict):
            keys |= schema_keys(node[k])
    return keys


def test_config_readme_describes_every_key():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    text = (REPO / "config" / "README.md").read_text()
    missing = sorted(k for k in schema_keys(schema) if f"`{k}`" not in text)
    assert not missing, f"config/README.md does not describe: {missing}"


def test_test_case_config_is_small_and_complete():
    """.test/ runs every rule on one corpus in a short time: few steps, one seed, and the keys the schema needs."""
    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    assert cfg["train"]["max_steps"] <= 50 and cfg["seeds"] == [0] and len(cfg["corpora"]) == 1
    assert cfg["gmm"]["experiments"], "the test case must fit a GMM (rules fit_gmm, interpretability_figures)"
    assert any("ablation_of" in e for e in cfg["experiments"].values()), "the test case must build the ablation table"


# ---- the package: sdgm's parts and the directions they import in --------------------------------------------------
SDGM = REPO / "sdgm"
# each part of sdgm and the parts it may import (sdgm/__init__.py lists the parts, each part's __init__.py says why)
ALLOWED = {
    "common": set(),
    "data": {"common"},
    "reporting": {"common"},
    "models": {"common", "data"},
    "spectral": {"common", "data", "models", "reporting"},
    "harness": {"common", "data", "models", "spectral"},
    "bench": {"common", "data", "models", "spectral", "harness", "reporting"},
    "campaign": {"common", "data", "models", "spectral", "harness", "bench", "reporting"},
}
# the model code's libraries, which the report environment (workflow/envs/report.yaml) does not hold
MODEL_LIBRARIES = {"torch", "triton", "numba", "sklearn", "transformers", "linformer"}
# modules Snakemake imports while it parses the workflow, in an environment that may hold Snakemake alone
LIGHT = ("sdgm.harness.config", "sdgm.models.catalog")


def module_of(path: Path, root: Path = REPO) -> str:
    rel = path.relative_to(root).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


def is_module(name: str, root: Path = REPO) -> bool:
    p = root.joinpath(*name.split("."))
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def imports(path: Path, root: Path = REPO) -> list[tuple[int, str, bool]]:
    """(line, absolute module name, imported when the module is) of every import in a file, those inside functions
    included; `from P import name` counts P.name too where that is a module (from ..models import catalog)."""
    name = module_of(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def visit(node, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((child.lineno, a.name, module_level) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - child.level + 1] + ([base] if base else []))
                found.append((child.lineno, base, module_level))
                found.extend(
                    (child.lineno, f"{base}.{a.name}", module_level)
                    for a in child.names
                    if is_module(f"{base}.{a.name}", root)
                )
            visit(child, module_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), True)
    return found


def part_of(module: str) -> str | None:
    """The part of sdgm a module belongs to; None outside sdgm and for the package itself (sdgm/__init__.py)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "sdgm" and len(parts) > 1 else None


def forbidden_imports(root: Path = REPO) -> list[str]:
    bad = []
    for path in sorted((root / "sdgm").rglob("*.py")):
        own = part_of(module_of(path, root))
        for line, module, _ in imports(path, root) if own else ():
            other = part_of(module)
            if other is not None and other != own and other not in ALLOWED.get(own, ()):
                bad.append(
                    f"{path.relative_to(root)}:{line}: imports {module}, but sdgm.{own} may import "
                    f"{', '.join(f'sdgm.{p}' for p in sorted(ALLOWED.get(own, ()))) or 'no other part'}"
                )
    return bad


def graph(root: Path = REPO, module_level_only: bool = False) -> dict[str, set[str]]:
    """Every module of sdgm -> the modules (of sdgm or not) it imports."""
    return {
        module_of(p, root): {m for _, m, top in imports(p, root) if top or not module_level_only}
        for p in (root / "sdgm").rglob("*.py")
    }


def reached(start: str, edges: dict[str, set[str]], packages: bool = True) -> dict[str, str]:
    """Every module imported from `start`, directly or through modules of sdgm -> the chain of imports to it (with
    `packages`, a module's packages too: importing a module runs their __init__ first)."""
    chains, todo = {start: start}, [start]
    while todo:
        m = todo.pop()
        package = m.rpartition(".")[0]
        for n in edges.get(m, set()) | ({package} if packages and package in edges else set()):
            if n not in chains:
                chains[n] = f"{chains[m]} -> {n}"
                todo += [n] if n in edges else []
    return chains


def test_sdgm_is_a_handful_of_parts_each_saying_what_it_holds():
    # every module of sdgm belongs to a part, but the `sdgm` command (cli.py), which runs the parts' commands
    assert sorted(p.name for p in SDGM.glob("*.py")) == ["__init__.py", "cli.py"], "every module belongs to a part"
    parts = {p.name for p in SDGM.iterdir() if (p / "__init__.py").is_file()}
    assert parts == set(ALLOWED), f"parts {sorted(parts)}; tests/test_layout.py knows {sorted(ALLOWED)}"
    for name in parts:
        doc = ast.get_docstring(ast.parse((SDGM / name / "__init__.py").read_text(encoding="utf-8"))) or ""
        assert "import" in doc, f"sdgm/{name}/__init__.py: its docstring must say what it holds and may import"


def test_the_command_imports_the_parts_only_when_a_command_runs():
    """sdgm/cli.py names each command's module in its table and imports it when that command runs: no import of
    sdgm (or of torch) in the file itself, so that `sdgm --help` is quick in any environment."""
    assert not [m for _, m, _ in imports(SDGM / "cli.py") if m.split(".")[0] in {"sdgm", *MODEL_LIBRARIES}]


def test_parts_import_only_the_parts_below_them():
    """The harness never imports the benchmarks, the reporting or the store; the reporting and the data only the
    common utilities; the model contract never a model (the catalog names them); and so on: ALLOWED."""
    bad = forbidden_imports()
    assert not bad, "imports against the layering of sdgm (ALLOWED in tests/test_layout.py):\n" + "\n".join(bad)


def test_reporting_never_imports_the_model_code():
    """The report environment has no torch: no reporting module imports torch or the model code's libraries,
    directly, inside a function, or through another module of sdgm."""
    edges = graph()
    bad = []
    for module in sorted(m for m in edges if part_of(m) == "reporting"):
        bad += [chain for m, chain in reached(module, edges, False).items() if m.split(".")[0] in MODEL_LIBRARIES]
    assert not bad, "reporting imports the model code's libraries:\n" + "\n".join(sorted(set(bad)))


def test_snakemake_parses_the_workflow_without_torch():
    edges = graph(module_level_only=True)
    for module in LIGHT:
        heavy = [chain for m, chain in reached(module, edges).items() if m.split(".")[0] in MODEL_LIBRARIES]
        assert not heavy, f"importing {module} imports the model code's libraries: {heavy}"


def test_no_import_circles():
    """No module of sdgm imports, directly or through others, a module that imports it back (imports inside
    functions count: they run when called)."""
    everything = graph()
    edges = {m: (ns & set(everything)) - {m} for m, ns in everything.items()}  # a package naming itself: no circle
    circles = sorted({" <-> ".join(sorted([m, n])) for m in edges for n in edges[m] if m in reached(n, edges, False)})
    assert not circles, "import circles (each through the modules between them):\n" + "\n".join(circles)


def test_the_layering_check_sees_every_import(tmp_path):
    """Relative and absolute imports, at module level and inside functions, each named with its file and line."""
    for part in ALLOWED:
        (tmp_path / "sdgm" / part).mkdir(parents=True)
        (tmp_path / "sdgm" / part / "__init__.py").write_text("")
    (tmp_path / "sdgm" / "__init__.py").write_text("")
    (tmp_path / "sdgm" / "reporting" / "tables.py").write_text("import torch\n")
    (tmp_path / "sdgm" / "harness" / "train.py").write_text(
        "from ..common import atomic\nfrom . import evaluate\n\n\ndef f():\n    from ..reporting import tables\n"
        "    import sdgm.campaign.store\n"
    )
    assert forbidden_imports(tmp_path) == [
        "sdgm/harness/train.py:6: imports sdgm.reporting, but sdgm.harness may import sdgm.common, sdgm.data, "
        "sdgm.models, sdgm.spectral",
        "sdgm/harness/train.py:6: imports sdgm.reporting.tables, but sdgm.harness may import sdgm.common, sdgm.data, "
        "sdgm.models, sdgm.spectral",
        "sdgm/harness/train.py:7: imports sdgm.campaign.store, but sdgm.harness may import sdgm.common, sdgm.data, "
        "sdgm.models, sdgm.spectral",
    ]
    edges = graph(tmp_path)
    assert "torch" in reached("sdgm.reporting.tables", edges)
    assert "sdgm.reporting.tables" in reached("sdgm.harness.train", edges)
    assert "sdgm.reporting.tables" not in reached("sdgm.harness.train", graph(tmp_path, module_level_only=True))


# ---- one job per file: no module over MAX_MODULE_LINES, no logic in a package's __init__.py ------------------------
MAX_MODULE_LINES = 450
# __init__.py files that still hold more than re-exports (the package's lazy build_model, the import guard)
INIT_WITH_LOGIC = {"sdgm/__init__.py"}


def long_modules(root: Path = REPO) -> dict[str, int]:
    """Every module of sdgm over MAX_MODULE_LINES -> its lines."""
    lines = {
        p.relative_to(root).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
        for p in (root / "sdgm").rglob("*.py")
    }
    return {name: n for name, n in sorted(lines.items()) if n > MAX_MODULE_LINES}


def init_logic(root: Path = REPO) -> list[str]:
    """Every statement of an __init__.py under sdgm that is not its docstring, an import or __all__."""
    bad = []
    for path in sorted((root / "sdgm").rglob("__init__.py")):
        for i, node in enumerate(ast.parse(path.read_text(encoding="utf-8")).body):
            docstring = i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
            names = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if not (docstring or isinstance(node, (ast.Import, ast.ImportFrom)) or names == ["__all__"]):
                bad.append(f"{path.relative_to(root).as_posix()}:{node.lineno}: {type(node).__name__}")
    return bad


def test_no_module_is_over_the_line_limit():
    over = long_modules()
    assert not over, f"modules over {MAX_MODULE_LINES} lines: split them: " + ", ".join(
        f"{m} ({n})" for m, n in over.items()
    )


def test_package_init_files_hold_only_a_docstring_imports_and_all():
    bad = [b for b in init_logic() if b.split(":")[0] not in INIT_WITH_LOGIC]
    assert not bad, "logic in __init__.py (move it to a named module, re-export it):\n" + "\n".join(bad)
    stale = INIT_WITH_LOGIC - {b.split(":")[0] for b in init_logic()}
    assert not stale, f"no logic left: remove from INIT_WITH_LOGIC: {sorted(stale)}"


def test_the_file_checks_see_long_modules_and_logic_in_init(tmp_path):
    (tmp_path / "sdgm" / "part").mkdir(parents=True)
    (tmp_path / "sdgm" / "__init__.py").write_text('"""The package."""\nfrom .part import f\n\n__all__ = ["f"]\n')
    (tmp_path / "sdgm" / "part" / "__init__.py").write_text(
        '"""A part."""\nimport os\n\nX = 1\n\n\ndef f():\n    pass\n'
    )
    (tmp_path / "sdgm" / "part" / "big.py").write_text("x = 1\n" * (MAX_MODULE_LINES + 1))
    (tmp_path / "sdgm" / "part" / "small.py").write_text("x = 1\n" * MAX_MODULE_LINES)
    assert long_modules(tmp_path) == {"sdgm/part/big.py": MAX_MODULE_LINES + 1}
    assert init_logic(tmp_path) == ["sdgm/part/__init__.py:4: Assign", "sdgm/part/__init__.py:7: FunctionDef"]


# ---- the campaign part: one module per job, one definition per helper ----------------------------------------------
def top_level_names(path: Path) -> list[str]:
    names = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


def test_each_shared_helper_is_defined_once():
    """The files' digest, the clean-up of a killed writer's temporaries and the archive's size limit: one definition
    each in sdgm, which the store, the campaign, the GPU window and the data import."""
    shared = {
        "sha256_file": ["sdgm.common.atomic"],
        "remove_stale_temporaries": ["sdgm.common.atomic"],
        "ARCHIVE_LIMIT": ["sdgm.campaign.archive"],
    }
    found = {name: sorted(module_of(p) for p in SDGM.rglob("*.py") if name in top_level_names(p)) for name in shared}
    assert found == shared


def test_the_campaign_part_is_small_modules_and_short_commands():
    """No module of sdgm.campaign over 450 lines; each command's main at most 40 lines, its subcommands argparse's
    (never picked by hand from argv)."""
    for path in sorted((SDGM / "campaign").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert len(text.splitlines()) <= 450, f"{path.relative_to(REPO)}: {len(text.splitlines())} lines"
        assert "argv[:1]" not in text and "argv[0] ==" not in text, f"{path.relative_to(REPO)}: use add_subparsers"
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef) and node.name == "main":
                assert node.end_lineno - node.lineno < 40, f"{path.relative_to(REPO)}: main is too long"
