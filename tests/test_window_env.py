"""The GPU window's environment (sdgm.campaign.window_env): the carried wheels, their offline unpacking, Triton's
interpreter only without a GPU, and (e2e) the whole window rehearsed in a Python like the GPU machine's
(.ci/window-rehearsal)."""

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import triton_interpreter_defect
from helpers import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from test_envs import ci_pins, pinned

from sdgm.campaign import window_env


# ---- the carried wheels ----------------------------------------------------------------------------------------------
def test_the_carried_wheels_are_exact_hashed_and_cis_versions():
    names = window_env.carried()
    assert {"jsonschema", "linformer", "rpds-py", "referencing"} <= set(names)
    ci = ci_pins()
    for name in ("jsonschema", "linformer"):  # the versions CI tests are the ones the window carries
        assert names[name] == ci[name], (name, names[name], ci[name])
    machine = pinned(REPO / ".ci" / "window-machine.txt")
    assert not set(names) & set(machine), "a carried wheel the GPU machine's environment has already"


def test_a_malformed_wheels_file_is_refused(tmp_path):
    bad = tmp_path / "wheels.txt"
    bad.write_text("jsonschema>=4\n")
    with pytest.raises(window_env.WindowEnvError, match=r"wheels.txt:1: not `name==version --hash"):
        window_env.carried(bad)


def test_the_carried_wheels_need_nothing_the_machine_lacks(tmp_path):
    """Fetched as the GPU machine's Python would take them (cp312, x86_64 Linux, hashes checked): every requirement
    of every carried wheel (Requires-Dist, for Python 3.12 on Linux, no extra) is carried too or is one the machine
    has (.ci/window-machine.txt)."""
    wheels = window_env.fetch(tmp_path / "wheels")
    names = window_env.carried()
    assert len(wheels) == len(names) and sum(w.stat().st_size for w in wheels) < 2_000_000
    have = set(names) | set(pinned(REPO / ".ci" / "window-machine.txt"))
    env = {
        "python_version": "3.12",
        "python_full_version": "3.12.3",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "implementation_name": "cpython",
        "extra": "",
    }
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
            for line in z.read(meta).decode().splitlines():
                if line.startswith("Requires-Dist:"):
                    req = Requirement(line.split(":", 1)[1].strip())
                    if req.marker is None or req.marker.evaluate(env):
                        assert canonicalize_name(req.name) in have, f"{wheel.name} requires {req}, not carried"


def make_wheel(folder: Path, name: str, version: str, body: str) -> tuple[Path, str]:
    """A pure-Python wheel of one module `name`; (its path, its sha256)."""
    files = {
        f"{name}/__init__.py": body,
        f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }

    def digest(text: str) -> str:
        return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()

    record = [f"{path},sha256={digest(text)},{len(text.encode())}" for path, text in files.items()]
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join(record + [f"{name}-{version}.dist-info/RECORD,,"]) + "\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for arc, text in files.items():
            z.writestr(arc, text)
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_unpack_installs_offline_and_refuses_a_wheel_that_is_not_the_listed_one(tmp_path):
    """A wheel this Python lacks goes into the target with pip's --no-index (no index is asked) and imports from
    there in a fresh process; the same file altered is refused by its hash, naming how to fetch it again."""
    wheel, digest = make_wheel(tmp_path / "wheels", "sdgm_window_probe", "1.0", "ANSWER = 42\n")
    listing = tmp_path / "window-wheels.txt"
    listing.write_text(f"# carried\nsdgm_window_probe==1.0 --hash=sha256:{digest}\n")
    target = window_env.unpack(tmp_path / "wheels", tmp_path / "site", listing)
    r = subprocess.run(
        [sys.executable, "-c", "import sdgm_window_probe as p; print(p.ANSWER, p.__file__)"],
        env={**os.environ, "PYTHONPATH": str(target)},
        capture_output=True,
        text=True,
    )
    assert r.stdout.split()[0] == "42" and r.stdout.split()[1].startswith(str(target)), r.stdout + r.stderr
    make_wheel(tmp_path / "wheels", "sdgm_window_probe", "1.0", "ANSWER = 43\n")  # same name, other contents
    with pytest.raises(window_env.WindowEnvError, match="could not install sdgm_window_probe.*window_env fetch"):
        window_env.unpack(tmp_path / "wheels", tmp_path / "site2", listing)


def test_the_window_still_takes_install():
    from sdgm.campaign import window, window_parts

    assert window.install is window_env.install
    assert window_parts.project_requirements is window_env.project_requirements
    out = subprocess.run(
        [sys.executable, "-m", "sdgm.campaign.window", "install", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "--offline" in out.stdout, out.stdout + out.stderr


# ---- Triton's interpreter --------------------------------------------------------------------------------------------
def test_the_interpreter_only_without_a_gpu(monkeypatch):
    """TRITON_INTERPRET=1 only without CUDA; a kernel test on CPU tensors (needs("triton"), not marked gpu) needs the
    interpreter and is skipped without it, naming why."""
    from conftest import REQUIREMENTS, absence

    assert (os.environ.get("TRITON_INTERPRET") == "1") == (not torch.cuda.is_available())
    monkeypatch.setenv("TRITON_INTERPRET", "0")  # as on a CUDA machine
    reason, required = absence(REQUIREMENTS["triton-interpreter"], {})
    assert not required and "Triton's interpreter (TRITON_INTERPRET=1" in reason and "-m gpu" in reason
    compiled = absence(REQUIREMENTS["triton"], {})  # a test marked gpu: the compiled kernels, no interpreter asked
    assert compiled is None or "Python module triton" in compiled[0]


@pytest.mark.parametrize(
    "triton_v,numpy_v,interpreting,broken",
    [
        ("3.6.0", "2.4.6", True, True),
        ("3.6.0", "2.5.2", True, True),
        ("3.6.0", "2.3.5", True, False),
        ("3.7.1", "2.4.6", True, False),
        ("3.6.0", "2.4.6", False, False),
    ],
)
def test_triton_36_with_numpy_24_counts_as_no_interpreter(triton_v, numpy_v, interpreting, broken):
    reason = triton_interpreter_defect(triton_v, numpy_v, interpreting)
    assert (reason is not None) == broken
    if broken:
        assert f"numpy {numpy_v}" in reason and f"triton {triton_v}" in reason and "TypeError" in reason


# ---- the rehearsal ---------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_the_window_rehearsal_passes(tmp_path):
    """.ci/window-rehearsal: the window in a Python 3.12 virtualenv like the GPU machine's (built once, then cached),
    offline, 5 minutes on the quick config; the archive imports and the claims get the device's column. Skipped only
    where there is no python3.12."""
    r = subprocess.run(
        ["bash", str(REPO / ".ci" / "window-rehearsal"), str(tmp_path)],
        cwd=REPO,
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    if r.returncode == 3:
        pytest.skip(r.stderr.strip().splitlines()[-1])
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    print(r.stderr)
