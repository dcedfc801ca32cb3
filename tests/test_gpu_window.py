"""The GPU window (python -m sdgm.published.gpu_window) on a CPU: its plan, the GPU tier's skip, installing onto the
machine's own torch, the archive's import, a window killed midway, and (e2e) a whole window on the quick config in a
3-minute budget whose archive holds every part or the part's reason."""
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch

from helpers import REPO
from sdgm.published import campaign, gpu_window

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without CUDA")


def run(cmd, env=None, timeout=600, **kw):
    return subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})}, **kw)


# ---- the GPU tier's marker -------------------------------------------------------------------------------------------
@NO_CUDA
def test_the_gpu_tier_skips_with_its_reason_and_fails_where_required():
    from conftest import REQUIREMENTS, absence

    reason, required = absence(REQUIREMENTS["gpu"], {})
    assert not required and "needs gpu, but a CUDA device" in reason and "SDGM_REQUIRE_GPU=1" in reason
    args = ["-m", "pytest", "tests/test_gpu.py", "-m", "gpu", "-q", "-p", "no:cacheprovider", "-k", "nvml"]
    skipped = run(args, {"SDGM_REQUIRE_GPU": "0"})
    assert skipped.returncode == 0 and "1 skipped" in skipped.stdout, skipped.stdout[-2000:]
    assert "needs gpu, but a CUDA device (torch" in skipped.stdout
    failed = run(args, {"SDGM_REQUIRE_GPU": "1"})
    assert failed.returncode == 1 and "SDGM_REQUIRE_GPU=1: gpu is required" in failed.stdout, failed.stdout[-2000:]


# ---- the plan ---------------------------------------------------------------------------------------------------
def test_the_plan_runs_the_verdict_first_and_gives_the_campaign_the_rest():
    rows = gpu_window.plan(10)
    assert [r["part"] for r in rows] == ["env", "gpu_tier", "scaling", "generation", "memory", "campaign"]
    assert sum(r["budget_s"] for r in rows) == pytest.approx(600 - gpu_window.PACK_RESERVE_S, abs=0.5)
    assert rows[1]["budget_s"] == 180 and rows[-1]["budget_s"] > 150
    text = gpu_window.format_plan(rows, 10)
    assert "6 parts in this order" in text and "campaign" in text.splitlines()[-1]
    out = run(["-m", "sdgm.published.gpu_window", "--minutes", "10", "--plan"], timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == text


# ---- installing onto the machine's torch --------------------------------------------------------------------------------
def test_install_keeps_the_machines_torch():
    reqs = gpu_window.project_requirements()
    names = {r.split("=")[0].split(">")[0] for r in reqs}
    assert "numpy" in names and "snakemake" in names and not names & {"torch", "triton"}
    out = run(["-m", "sdgm.published.gpu_window", "install", "--offline", "--dry-run"], timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"keeping torch=={torch.__version__}" in out.stdout
    would = [line for line in out.stdout.splitlines() if line.startswith("Would install")]
    assert all("torch" not in line and "triton" not in line for line in would), would


# ---- archives ------------------------------------------------------------------------------------------------------
def window_archive(path: Path, device="gpu-x", stamp="20260101T000000Z", summary=None) -> Path:
    summary = summary or {"schema": 1, "kind": "gpu_window", "stamp": stamp, "device": device, "minutes": 10,
                          "configfile": "config.yaml", "parts": [{"part": "env", "status": "ok", "seconds": 3}]}
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("ARCHIVE.json", {"schema": 1, "records": []}),
                           (f"window/{device}/{stamp}/window.json", summary),
                           (f"window/{device}/{stamp}/env/env.json",
                            {"provenance": {"device": "NVIDIA X", "torch": "2.12.0+cu128", "spectral_decoder": [
                                {"device": "cuda:0", "requested": "auto", "used": "triton", "reason": "ok"}]},
                             "versions": {"triton": "3.6.0"}})):
            raw = json.dumps(data).encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def test_a_window_archive_imports_once_and_renders_per_device(tmp_path):
    st = tmp_path / "store"
    res = campaign.import_archives([window_archive(tmp_path / "w.tar.gz")], st)
    assert res["refused"] == [] and res["windows"] == [st / "gpu-x" / "windows" / "20260101T000000Z"]
    assert campaign.import_archives([tmp_path / "w.tar.gz"], st)["refused"] == []  # again: a no-op
    campaign.render_store(st)
    page = (st / "gpu-x" / "windows.md").read_text()
    assert "torch 2.12.0+cu128" in page and "auto -> triton" in page and "| env | ok | 3 |" in page
    assert "gpu-x/windows.md" in (st / "README.md").read_text()
    bad = window_archive(tmp_path / "bad.tar.gz", device="GPU_X")
    res = campaign.import_archives([bad], st)
    assert len(res["refused"]) == 1 and "not a device slug" in res["refused"][0]
    assert not (st / "GPU_X").exists()


# ---- a window killed midway ------------------------------------------------------------------------------------------
def read_window(archive: Path) -> dict:
    with tarfile.open(archive) as tar:
        (name,) = [n for n in tar.getnames() if n.endswith("/window.json")]
        return json.loads(tar.extractfile(name).read())


@pytest.mark.e2e
def test_a_window_killed_midway_leaves_the_archive_of_what_finished(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "sdgm.published.gpu_window", "--minutes", "3", "--configfile",
                             str(REPO / "config" / "quick.yaml"), "--directory", str(tmp_path), "--out", str(out),
                             "--device", "cpu", "--parts", "env,scaling"], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            archives = list(out.glob("window-*.tar.gz"))
            if archives and read_window(archives[0])["parts"][1]["status"] == "running":
                break
            assert proc.poll() is None, "the window ended before it was killed"
            time.sleep(0.5)
        else:
            pytest.fail("the scaling part never started")
        time.sleep(2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    summary = read_window(archives[0])
    assert [(p["part"], p["status"]) for p in summary["parts"]] == [("env", "ok"), ("scaling", "running")]
    time.sleep(1)  # the scaling part died with the window (its parent-death signal)
    alive = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(out).encode() in cmdline.read_bytes():
                alive.append(cmdline.parent.name)
        except OSError:
            pass
    assert not alive, f"parts outlived the window: {alive}"
    res = campaign.import_archives(archives, tmp_path / "store")
    assert res["refused"] == [] and len(res["windows"]) == 1


# ---- a whole window on a CPU ----------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_window_on_cpu_archives_every_part_or_its_reason(tmp_path):
    """The quick config, a 3-minute budget, the CPU: every part is in the archive with its status, and each part
    that did not finish with its reason; the GPU tier skipped for want of CUDA. Imported, it renders a page."""
    out = tmp_path / "out"
    t0 = time.monotonic()
    r = run(["-m", "sdgm.published.gpu_window", "--minutes", "3", "--configfile", str(REPO / "config" / "quick.yaml"),
             "--directory", str(tmp_path), "--out", str(out), "--device", "cpu"], timeout=300)
    seconds = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert seconds < 3 * 60 + 20 and r.stdout.startswith("gpu window: 3 min, 6 parts in this order")
    (archive,) = out.glob("window-*.tar.gz")
    assert archive.stat().st_size <= gpu_window.ARCHIVE_LIMIT
    summary = read_window(archive)
    parts = {p["part"]: p for p in summary["parts"]}
    assert list(parts) == [p.name for p in gpu_window.PARTS]
    for name, p in parts.items():
        assert p["status"] in ("ok", "skipped", "stopped"), (name, p)
        assert p["status"] == "ok" or p["reason"], (name, p)
    assert parts["env"]["status"] == "ok"
    if not torch.cuda.is_available():
        assert parts["gpu_tier"]["status"] == "skipped" and "CUDA" in parts["gpu_tier"]["reason"]
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        (env_name,) = [n for n in names if n.endswith("/env/env.json")]
        env = json.loads(tar.extractfile(env_name).read())
    assert env["provenance"]["torch"] == torch.__version__ and env["decoder_auto"] in ("rotation", "chunked")
    assert any(n.endswith("/gpu_tier/junit.xml") for n in names)
    if parts["scaling"]["status"] == "ok":
        assert any(n.endswith("/scaling/bench/scaling.json") for n in names)
    st = tmp_path / "merged"
    imp = run(["-m", "sdgm.published.campaign", "import", str(archive), "--store", str(st)], timeout=120)
    assert imp.returncode == 0 and "1 GPU window(s)" in imp.stdout, imp.stdout + imp.stderr
    (page,) = st.glob("*/windows.md")
    assert "| gpu_tier | skipped |" in page.read_text() or torch.cuda.is_available()
    print(f"window on cpu: {seconds:.0f} s; " + ", ".join(f"{n} {p['status']} {p.get('seconds', '-')}"
                                                       for n, p in parts.items()))
