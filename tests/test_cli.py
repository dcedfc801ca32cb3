"""The `sdgm` command (sdgm/cli.py): every command listed with one line, each command's --help its module's own,
no torch imported to list them, and every `python -m` entry point of the package either a command or named as a
child process the package starts itself."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sdgm.cli import COMMANDS, NO_ARGV, NOT_COMMANDS

REPO = Path(__file__).resolve().parents[1]


def sdgm(*args: str) -> subprocess.CompletedProcess:
    """The command as the installed script runs it (its entry point is sdgm.cli:main)."""
    return subprocess.run(
        [sys.executable, "-m", "sdgm.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def test_the_console_script_is_the_cli():
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"sdgm": "sdgm.cli:main"}


def test_help_lists_every_command_with_one_line_and_imports_no_torch():
    check = (
        "import sys\nfrom sdgm.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
        "    assert e.code == 0, e.code\nassert 'torch' not in sys.modules, 'sdgm --help imported torch'\n"
    )
    r = subprocess.run([sys.executable, "-c", check], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for words, (_, line) in COMMANDS.items():
        assert re.search(rf"^  sdgm {' '.join(words)} +{re.escape(line)}$", r.stdout, flags=re.M), (
            f"sdgm --help does not list `sdgm {' '.join(words)}` with its line:\n{r.stdout}"
        )


@pytest.mark.parametrize("words", list(COMMANDS), ids=" ".join)
def test_each_command_answers_help(words):
    """`sdgm <command> --help` reaches the command's own parser (its options or subcommands), or for a command
    without arguments (sass) the help the table gives it, and exits 0."""
    r = sdgm(*words, "--help")
    assert r.returncode == 0 and r.stdout.startswith("usage:"), (r.stdout + r.stderr)[-3000:]
    module, line = COMMANDS[words]
    if module in NO_ARGV:
        assert line in r.stdout.replace("\n", " "), r.stdout
    else:
        assert re.search(r"--(?!help\b)[a-z]|\{[a-z]", r.stdout), f"not {module}'s own help:\n{r.stdout}"


def test_the_python_m_form_is_the_same_command():
    alias = subprocess.run(
        [sys.executable, "-m", "sdgm.bench.untrained", "--help"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert alias.returncode == 0 and alias.stdout == sdgm("bench", "untrained", "--help").stdout


def test_an_unknown_command_is_one_clear_error():
    r = sdgm("bench", "nope")
    assert r.returncode == 2 and "invalid choice: 'nope'" in r.stderr, r.stderr


def entry_points() -> dict[str, str]:
    """Every module `python -m` runs as a program -> the module whose main it calls (a package's __main__.py:
    the module it imports main from)."""
    found = {}
    for path in sorted((REPO / "sdgm").rglob("*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if path.name == "__main__.py":
            package = name.rpartition(".")[0]
            froms = [
                f"{package}.{n.module}"
                for n in tree.body
                if isinstance(n, ast.ImportFrom) and n.level == 1 and any(a.name == "main" for a in n.names)
            ]
            assert froms, f"{path}: its main comes from no module of its package"
            found[package] = froms[0]
        elif '__name__ == "__main__"' in path.read_text(encoding="utf-8") and name != "sdgm.cli":
            found[name.removesuffix(".__init__")] = name.removesuffix(".__init__")
    return found


def test_every_python_m_entry_point_is_a_command_or_a_child_process():
    modules = {module for module, _ in COMMANDS.values()}
    found = entry_points()
    assert len(found) >= 12, found
    missing = sorted(entry for entry, module in found.items() if module not in modules and entry not in NOT_COMMANDS)
    assert not missing, f"python -m entry points that no `sdgm` command runs (sdgm/cli.py: COMMANDS): {missing}"
    assert set(NOT_COMMANDS) <= set(found), (
        f"sdgm/cli.py NOT_COMMANDS names no entry point: {set(NOT_COMMANDS) - set(found)}"
    )
    stale = sorted(module for module in modules if not (REPO / Path(*module.split("."))).with_suffix(".py").is_file())
    assert not stale, f"sdgm/cli.py COMMANDS names modules that do not exist: {stale}"
