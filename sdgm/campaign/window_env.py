"""The GPU window's environment: the machine's own Python, offline, and the few wheels carried to it.

A GPU machine lent for a window has its own Python (a CUDA build of torch, Triton, transformers, numpy, numba, ...)
and no network. The project runs there from its checkout (PYTHONPATH), and what the machine lacks of the window's
needs is carried with the tree as wheels (window-wheels.txt: jsonschema and its dependencies, linformer; exact
versions and sha256 hashes, cp312 for x86_64 Linux; a few hundred KB):

    python -m sdgm.campaign.window_env fetch                     # here, with a package index: into .window-wheels/
    python -m sdgm.campaign.window_env unpack                    # there, offline: into .window-site/
    PYTHONPATH=$PWD/.window-site python -m sdgm.campaign.window --minutes 10

`unpack` installs each carried wheel the machine lacks at its version with pip's --no-index --no-deps --target (the
hashes checked again), then imports every carried module in a fresh process to prove it worked. Both folders are
ignored by git; the wheels folder travels with the working tree.

    python -m sdgm.campaign.window_env install [--offline] [--dry-run]   # the project onto the machine's own torch

`install` is the other way, for a machine with an index: the project (editable, without its dependencies), then its
other requirements under a constraint that keeps the machine's torch and Triton.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from ..common.atomic import write_text_atomic

REPO = Path(__file__).resolve().parents[2]
WHEELS_FILE = REPO / "window-wheels.txt"
WHEELS_DIR = REPO / ".window-wheels"
SITE_DIR = REPO / ".window-site"
# the GPU machine's Python: CPython 3.12 on x86_64 Linux (its glibc takes manylinux wheels up to 2_28)
TARGET = {
    "python_version": "3.12",
    "implementation": "cp",
    "abi": "cp312",
    "platforms": ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"),
}
# a carried distribution -> the module that proves it imports
MODULES = {
    "jsonschema": "jsonschema",
    "referencing": "referencing",
    "jsonschema-specifications": "jsonschema_specifications",
    "rpds-py": "rpds",
    "attrs": "attrs",
    "linformer": "linformer",
}


class WindowEnvError(RuntimeError):
    pass


def carried(path: Path = WHEELS_FILE) -> dict[str, str]:
    """name -> version of the wheels window-wheels.txt lists (each `name==version --hash=sha256:...`)."""
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)(\s+--hash=sha256:[0-9a-f]{64})+", line)
        if not m:
            raise WindowEnvError(f"{path.name}:{n}: not `name==version --hash=sha256:<64 hex>`: {line!r}")
        out[m.group(1).lower()] = m.group(2)
    return out


def _pip(*args: str) -> list[str]:
    return [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]


def _run_pip(step: str, *args: str) -> bool:
    """pip with `args`, its command echoed after `step: `; whether it succeeded (its own output says why not)."""
    cmd = _pip(*args)
    print(f"{step}: " + " ".join(cmd[2:]), flush=True)
    return subprocess.run(cmd).returncode == 0


def fetch(dest: Path = WHEELS_DIR, wheels_file: Path = WHEELS_FILE) -> list[Path]:
    """Download the carried wheels for the GPU machine's Python into `dest` (pip download: binary only, no
    dependencies, every file checked against its hash); the wheel files."""
    carried(wheels_file)  # refuse a malformed file before any download
    dest.mkdir(parents=True, exist_ok=True)
    done = _run_pip(
        "fetch",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--require-hashes",
        "--python-version",
        TARGET["python_version"],
        "--implementation",
        TARGET["implementation"],
        "--abi",
        TARGET["abi"],
        *[a for p in TARGET["platforms"] for a in ("--platform", p)],
        "-r",
        str(wheels_file),
        "-d",
        str(dest),
    )
    if not done:
        raise WindowEnvError("fetch: pip download failed (above); it needs a package index")
    wheels = sorted(dest.glob("*.whl"))
    print(f"fetch: {len(wheels)} wheels, {sum(w.stat().st_size for w in wheels):,} bytes in {dest}", flush=True)
    return wheels


def lacking(names: dict[str, str]) -> dict[str, str]:
    """The carried distributions not installed here at their version."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name, ver in names.items():
        try:
            have = version(name)
        except PackageNotFoundError:
            have = None
        if have != ver:
            out[name] = ver
    return out


def unpack(wheels: Path = WHEELS_DIR, target: Path = SITE_DIR, wheels_file: Path = WHEELS_FILE) -> Path:
    """Offline: install the carried wheels this Python lacks into `target` (pip --no-index --no-deps --target,
    hashes checked), then import every carried module from there in a fresh process. Returns `target`, the folder to
    put on PYTHONPATH."""
    need = lacking(carried(wheels_file))
    target.mkdir(parents=True, exist_ok=True)
    if need:
        with tempfile.TemporaryDirectory(prefix="sdgm-window-") as tmp:
            reqs = Path(tmp, "requirements.txt")
            lines = [ln for ln in wheels_file.read_text().splitlines() if ln.split("==", 1)[0].strip().lower() in need]
            write_text_atomic(reqs, "\n".join(lines) + "\n")
            # --isolated: no pip configuration or PIP_* variable of the machine takes part
            done = _run_pip(
                "unpack",
                "--isolated",
                "install",
                "--no-index",
                "--no-deps",
                "--require-hashes",
                "--upgrade",
                "--find-links",
                str(wheels),
                "--target",
                str(target),
                "-r",
                str(reqs),
            )
            if not done:
                raise WindowEnvError(
                    f"unpack: pip could not install {', '.join(need)} from {wheels} (above); run "
                    f"`python -m sdgm.campaign.window_env fetch` where there is a package index"
                )
    else:
        print("unpack: every carried wheel is installed here already", flush=True)
    mods = [MODULES.get(n, n.replace("-", "_")) for n in carried(wheels_file)]
    probe = subprocess.run(
        [sys.executable, "-c", f"import {', '.join(mods)}"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(target)},
    )
    if probe.returncode != 0:
        raise WindowEnvError(
            f"unpack: {', '.join(mods)} do not import with PYTHONPATH={target}: "
            f"{probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else probe.returncode}"
        )
    print(f"unpack: {', '.join(need) or 'nothing'} into {target}; the window runs with PYTHONPATH={target}", flush=True)
    return target


# ---- installing onto the machine's own torch (a machine with a package index) ----------------------------------------
KEEP = ("torch", "triton")  # the machine's CUDA build brings these two; never replaced


def project_requirements(extras=("workflow", "test")) -> list[str]:
    """The project's requirements and those of `extras` from pyproject.toml, without torch and triton."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project.get("optional-dependencies", {}).get(extra, [])
    out = []
    for r in reqs:
        name = re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip().lower()
        if name not in KEEP and r not in out:
            out.append(r)
    return out


def install(offline: bool = False, dry_run: bool = False, extras=("workflow", "test")) -> int:
    """pip-install the project (editable) onto the torch and Triton already here: the project itself without its
    dependencies, then its other requirements (pyproject's lower bounds) under a constraint that pins torch and Triton
    to the installed versions (so nothing may replace them). offline: no index (--no-index): only what is here
    counts."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in KEEP:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            if name == "torch":
                print(
                    "install: torch is not installed here; install the machine's CUDA build of torch first",
                    file=sys.stderr,
                )
                return 2
    print("install: keeping " + ", ".join(pins), flush=True)
    with tempfile.TemporaryDirectory(prefix="sdgm-install-") as tmp:
        constraints, reqs = Path(tmp, "constraints.txt"), Path(tmp, "requirements.txt")
        write_text_atomic(constraints, "\n".join(pins) + "\n")
        write_text_atomic(reqs, "\n".join(project_requirements(extras)) + "\n")
        common = _pip("install") + (["--no-index"] if offline else []) + (["--dry-run"] if dry_run else [])
        for cmd in (
            common + ["--no-deps", "--no-build-isolation", "-e", str(REPO)],
            common + ["-c", str(constraints), "-r", str(reqs)],
        ):
            print("install: " + " ".join(cmd[2:]), flush=True)
            rc = subprocess.run(cmd).returncode
            if rc != 0:
                print(
                    f"install: pip exited with status {rc}"
                    + (
                        " (offline: a requirement above is not installed here and there is no index)" if offline else ""
                    ),
                    file=sys.stderr,
                )
                return rc
    return 0


def add_install_options(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `install`, here and as `python -m sdgm.campaign.window install`."""
    p.add_argument("--offline", action="store_true", help="no package index: install only from what is here")
    p.add_argument("--dry-run", action="store_true", help="say what pip would do")
    return p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdgm.campaign.window_env", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="here: download the carried wheels (needs a package index)")
    f.add_argument("--dest", type=Path, default=WHEELS_DIR)
    u = sub.add_parser("unpack", help="there, offline: install the carried wheels the machine lacks into --target")
    u.add_argument("--wheels", type=Path, default=WHEELS_DIR)
    u.add_argument("--target", type=Path, default=SITE_DIR)
    add_install_options(
        sub.add_parser(
            "install",
            help="the project onto the machine's own torch, with a package index",
            description=install.__doc__,
        )
    )
    a = ap.parse_args(argv)
    if a.cmd == "install":
        return install(a.offline, a.dry_run)
    try:
        if a.cmd == "fetch":
            fetch(a.dest)
        else:
            unpack(a.wheels, a.target)
    except WindowEnvError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
