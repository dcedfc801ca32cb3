"""The GPU window (python -m sdgm.campaign.window) on a CPU: its plan, the GPU tier's skip and its lines per test,
installing onto the machine's own torch, the device benchmark's order and flags, the benchmarks under a budget, the
archive's import into the claims ledger, and (e2e) a window on the quick config killed at 60 % of its budget whose
archive imports and gives the device a claims column with the cost claims judged."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO

from sdgm.campaign import render, window, window_parts, window_records
from sdgm.campaign.archive import import_archives

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without CUDA")


def run(cmd, env=None, timeout=600, **kw):
    return subprocess.run(
        [sys.executable, *cmd],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        **kw,
    )


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
def test_the_plan_measures_first_and_gives_the_campaign_the_rest():
    rows = window.plan(10)
    assert [r["part"] for r in rows] == ["env", "device", "scaling", "gpu_tier", "campaign"]
    assert sum(r["budget_s"] for r in rows) == pytest.approx(600 - window.PACK_RESERVE_S, abs=0.5)
    assert rows[1]["budget_s"] == 210 and rows[-1]["budget_s"] >= 90
    text = window.format_plan(rows, 10)
    assert "5 parts in this order" in text and "campaign" in text.splitlines()[-1]
    out = run(["-m", "sdgm.campaign.window", "--minutes", "10", "--plan"], timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == text


# ---- the device benchmark: what the device lacks first, with the flags of results/cpu ------------------------------
def bench_record(path: Path, kind: str, experiment: str, device: str, corpus="wikitext2", **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "schema": 1,
                "kind": kind,
                "experiment": experiment,
                "model": experiment,
                "corpus": corpus,
                "seed": 0,
                "provenance": {"device": device},
                **extra,
            }
        )
    )
    return path


def test_the_device_benchmark_starts_with_what_the_devices_records_lack(tmp_path):
    root = tmp_path / "results"
    for exp in ("sdgm", "gpt2"):
        bench_record(root / "gpu/bench/throughput/wikitext2" / f"{exp}-s0.json", "throughput", exp, "NVIDIA X (80 GB)")
    bench_record(root / "gpu" / "bench" / "generation" / "wikitext2" / "sdgm-s0.json", "generation", "sdgm", "NVIDIA X")
    bench_record(
        root / "gpu" / "bench" / "throughput" / "ptb" / "lstm-s0.json", "throughput", "lstm", "NVIDIA X", corpus="ptb"
    )
    bench_record(root / "other" / "bench" / "throughput" / "wikitext2" / "lstm-s0.json", "throughput", "lstm", "cpu")
    have, folders = window_parts.committed_records("nvidia-x", root=root)
    assert have == {"throughput": {"sdgm", "gpt2"}, "generation": {"sdgm"}} and folders == ["results/gpu"]
    order, why = window_parts.device_order(REPO / "config" / "config.yaml", "nvidia-x", root=root)
    assert order == ["linformer", "transformer_xl", "lstm", "gpt2", "sdgm"], order
    assert why.startswith("results/gpu: lacking linformer: no throughput or generation")
    assert "gpt2: no generation" in why
    order, why = window_parts.device_order(REPO / "config" / "config.yaml", "nvidia-y", root=root)
    assert order == ["sdgm", "gpt2", "linformer", "transformer_xl", "lstm"] and "no committed records" in why


def test_the_device_benchmark_runs_with_the_flags_results_cpu_was_measured_with():
    command = json.loads((REPO / "results" / "cpu" / "bench" / "device.json").read_text())["command"].split()
    flags = window_parts.DEVICE_FLAGS
    for flag, value in zip(flags[::2], flags[1::2]):
        assert command[command.index(flag) + 1] == value, flag


# ---- the benchmarks under a budget ---------------------------------------------------------------------------------
class Slow(torch.nn.Module):
    """A layer whose call takes 10 ms x (L / 16)^2."""

    def __init__(self, L):
        super().__init__()
        self.L = L
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        time.sleep(0.01 * (self.L / 16) ** 2)
        return x * self.w


def test_the_scaling_benchmark_stops_at_its_deadline_keeping_what_finished(tmp_path):
    from sdgm.bench.scaling import BUDGET_SKIP, scaling_benchmark

    seen = []
    t0 = time.monotonic()
    rec = scaling_benchmark(
        [16, 32, 64, 128, 256],
        256,
        batch_lengths=[16, 256],
        batch_size=1,
        layers={"slow": Slow},
        d_model=4,
        repeats=1,
        warmup=0,
        slope_min_length=16,
        device="cpu",
        rates={"matmul_flops_per_s": 1e10, "sines_per_s": 1e8, "bytes_per_s": 1e10},
        log=lambda *a: None,
        deadline=t0 + 2.0,
        on_case=seen.append,
    )
    assert time.monotonic() - t0 < 4.0  # L = 256 alone would take 2 x 2.6 s a case
    by = {(r["view"], r["L"], r["mode"]): r for r in rec["results"]}
    assert [(r["view"], r["L"]) for r in rec["results"][:4]] == [("tokens", 16)] * 2 + [("batch", 16)] * 2
    assert all(by[("tokens", 16, m)]["status"] == "ok" for m in ("forward", "forward_backward"))
    assert all(
        by[(v, 256, m)]["status"] == "skipped" and by[(v, 256, m)]["reason"].startswith(BUDGET_SKIP)
        for v in ("tokens", "batch")
        for m in ("forward", "forward_backward")
    )
    assert rec["complete"] is False and len(seen) == len(rec["results"]) == 14
    assert [len(r["results"]) for r in seen] == list(range(1, 15)) and not seen[0]["complete"]


def test_a_layers_first_case_is_predicted_from_the_others():
    from sdgm.bench.scaling.measure import _walls_of

    walls = {("a", "forward"): [(16, 1, 1.0)], ("b", "forward"): [(16, 1, 2.0)]}
    assert _walls_of(walls, "a", "forward") == [(16, 1, 1.0)]
    assert _walls_of(walls, "c", "forward") == [(16, 1, 2.0)]  # the slowest other layer
    assert _walls_of(walls, "a", "forward_backward") == [(16, 1, 3.0)]  # three forwards
    assert _walls_of(walls, "c", "forward_backward") == [(16, 1, 6.0)]
    assert _walls_of({}, "a", "forward") == []  # nothing to predict from: it runs


def test_the_device_benchmark_skips_an_experiment_that_would_not_fit():
    from sdgm.bench.device_run import _past_deadline

    options = {"d_model": 64, "n_atoms": 32, "seq_len": 64}
    assert _past_deadline(time.monotonic() + 100, [], "sdgm", 1000, options) is None  # nothing to predict from
    assert "ran out" in _past_deadline(time.monotonic() - 1, [1e-9], "sdgm", 1000, options)
    why = _past_deadline(time.monotonic() + 100, [1e-6, 2e-3], "sdgm", 1000, options)  # 77 k parameters: 155 s
    assert why and why.startswith("not run: predicted") and "left of the budget" in why
    assert _past_deadline(time.monotonic() + 100, [1e-6], "sdgm", 1000, options) is None


# ---- the GPU tier: a line per finished test ------------------------------------------------------------------------
def test_the_gpu_tier_leaves_a_line_per_finished_test_when_killed(tmp_path):
    (tmp_path / "test_some.py").write_text(
        "import time, pytest\n"
        "def test_passes(): pass\n"
        "def test_fails(): assert 1 == 2, 'one is not two'\n"
        "@pytest.mark.skip(reason='no device here')\n"
        "def test_skips(): pass\n"
        "def test_hangs(): time.sleep(120)\n"
    )
    lines = tmp_path / "tests.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            str(tmp_path / "test_some.py"),
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "sdgm.campaign.pytest_lines",
            f"--lines-to={lines}",
            f"--rootdir={tmp_path}",
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        deadline = time.monotonic() + 60
        while "test_hangs" not in (lines.read_text() if lines.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline, "the run never reached test_hangs"
            time.sleep(0.2)
    finally:
        proc.kill()
        proc.wait()
    s = window_parts.lines_summary(lines)
    assert (s["tests"], s["passed"], s["failed"], s["skipped"], s["errors"]) == (3, 1, 1, 1, 0), s
    assert s["skip_reasons"] == ["no device here"] and "one is not two" in s["failures"][0]
    assert s["running"].endswith("test_hangs")
    with open(lines, "a") as fh:
        fh.write('{"event": "result", "test": "cut')  # a line cut by the kill is ignored
    assert window_parts.lines_summary(lines)["tests"] == 3


# ---- installing onto the machine's torch --------------------------------------------------------------------------------
def test_install_keeps_the_machines_torch():
    reqs = window_parts.project_requirements()
    names = {r.split("=")[0].split(">")[0] for r in reqs}
    assert "numpy" in names and "snakemake" in names and not names & {"torch", "triton"}
    out = run(["-m", "sdgm.campaign.window", "install", "--offline", "--dry-run"], timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert f"keeping torch=={torch.__version__}" in out.stdout
    would = [line for line in out.stdout.splitlines() if line.startswith("Would install")]
    assert all("torch" not in line and "triton" not in line for line in would), would


# ---- archives ------------------------------------------------------------------------------------------------------
def window_archive(path: Path, device="gpu-x", stamp="20260101T000000Z", summary=None) -> Path:
    summary = summary or {
        "schema": 1,
        "kind": "gpu_window",
        "stamp": stamp,
        "device": device,
        "minutes": 10,
        "configfile": "config.yaml",
        "parts": [{"part": "env", "status": "ok", "seconds": 3}],
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (
            ("ARCHIVE.json", {"schema": 1, "records": []}),
            (f"window/{device}/{stamp}/window.json", summary),
            (
                f"window/{device}/{stamp}/env/env.json",
                {
                    "provenance": {
                        "device": "NVIDIA X",
                        "torch": "2.12.0+cu128",
                        "spectral_decoder": [
                            {"device": "cuda:0", "requested": "auto", "used": "triton", "reason": "ok"}
                        ],
                    },
                    "versions": {"triton": "3.6.0"},
                },
            ),
        ):
            raw = json.dumps(data).encode()
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def test_a_window_archive_imports_once_and_renders_per_device(tmp_path):
    st = tmp_path / "store"
    res = import_archives([window_archive(tmp_path / "w.tar.gz")], st)
    assert res["refused"] == [] and res["windows"] == [st / "gpu-x" / "windows" / "20260101T000000Z"]
    assert import_archives([tmp_path / "w.tar.gz"], st)["refused"] == []  # again: a no-op
    render.render_store(st)
    page = (st / "gpu-x" / "windows.md").read_text()
    assert "torch 2.12.0+cu128" in page and "auto -> triton" in page and "| env | ok | 3 |" in page
    assert "gpu-x/windows.md" in (st / "README.md").read_text()
    bad = window_archive(tmp_path / "bad.tar.gz", device="GPU_X")
    res = import_archives([bad], st)
    assert len(res["refused"]) == 1 and "not a device slug" in res["refused"][0]
    assert not (st / "GPU_X").exists()


# ---- the window's benchmark records into the ledger ----------------------------------------------------------------
def test_a_windows_benchmark_records_go_where_the_claims_read_them(tmp_path):
    from sdgm.campaign.store import StoreError
    from sdgm.reporting.claims import find_records

    st = tmp_path / "store"

    def window(stamp, complete=True, extra=()):
        w = tmp_path / stamp
        for exp in ("sdgm", "gpt2"):
            bench_record(
                w / "records/bench/throughput/wikitext2" / f"{exp}-s0.json", "throughput", exp, "cpu", window=stamp
            )
        bench_record(w / "records" / "bench" / "scaling.json", "scaling", "-", "cpu", window=stamp, complete=complete)
        for rel, text in extra:
            (w / "records" / rel).parent.mkdir(parents=True, exist_ok=True)
            (w / "records" / rel).write_text(text)
        return w

    def windows_of(found):
        return sorted(json.loads(Path(p).read_text())["window"] for p in found["throughput"] + [found["scaling"]])

    got = window_records.install_records(window("20260101T000000Z"), st, "cpu", "20260101T000000Z")
    assert len(got) == 3
    found = find_records(st / "cpu")
    assert len(found["throughput"]) == 2 and windows_of(found) == ["20260101T000000Z"] * 3
    assert window_records.install_records(window("20260101T000000Z"), st, "cpu", "20260101T000000Z") == []  # again
    # a newer window's records replace them, but not a complete scaling record by a partial one
    got = window_records.install_records(window("20260102T000000Z", complete=False), st, "cpu", "20260102T000000Z")
    assert windows_of(find_records(st / "cpu")) == ["20260101T000000Z"] + ["20260102T000000Z"] * 2
    assert window_records.install_records(window("20251231T000000Z"), st, "cpu", "20251231T000000Z") == []  # older
    for bad, why in (
        (("bench/throughput/wikitext2/../x-s0.json", "{}"), "not a benchmark record's name"),
        (("bench/throughput/wikitext2/Evil-s0.json", "{}"), "not a benchmark record's name"),
        (("bench/generation/wikitext2/sdgm-s0.json", "not json"), "not JSON"),
        (("bench/generation/wikitext2/sdgm-s0.json", json.dumps({"kind": "throughput"})), "not a generation record"),
        (
            (
                "bench/generation/ptb/lstm-s0.json",
                json.dumps({"kind": "generation", "corpus": "ptb", "experiment": "gpt2", "seed": 0}),
            ),
            "ptb/gpt2-s0",
        ),
    ):
        with pytest.raises(StoreError, match=why):
            window_records.install_records(window("20260103T000000Z", extra=[bad]), st, "cpu", "20260103T000000Z")
        shutil.rmtree(tmp_path / "20260103T000000Z")
    assert windows_of(find_records(st / "cpu")) == ["20260101T000000Z"] + ["20260102T000000Z"] * 2  # untouched


def test_the_archive_follows_the_files_of_a_running_part(tmp_path, monkeypatch):
    """While a part runs, each file it finishes reaches the archive within REFRESH_S, so a kill loses none."""
    monkeypatch.setattr(window, "REFRESH_S", 0.3)
    w = window.Window(1, REPO / "config" / "quick.yaml", tmp_path / "out", tmp_path, "cpu", "cpu-test")
    w.dir.mkdir(parents=True)
    w.write()
    record = w.dir / "records" / "bench" / "throughput" / "wikitext2" / "sdgm-s0.json"
    part = (
        "import pathlib, sys, time; p = pathlib.Path(sys.argv[1]); p.parent.mkdir(parents=True); "
        "p.write_text('{}'); time.sleep(60)"
    )
    ticks = []
    rc, seconds = window.run_part(
        [sys.executable, "-c", part, str(record)], tmp_path / "log.txt", 3, tick=lambda: (ticks.append(1), w.refresh())
    )
    assert rc is None and 3 <= seconds < 3 + window.STOP_GRACE_S and len(ticks) >= 5
    with tarfile.open(w.archive) as tar:
        assert f"window/cpu-test/{w.stamp}/records/bench/throughput/wikitext2/sdgm-s0.json" in tar.getnames()


def test_the_campaign_part_is_skipped_without_snakemake_and_gets_its_directory(tmp_path, monkeypatch):
    """The GPU machine has no Snakemake (and no index to get it): the campaign part is skipped with that reason, not
    failed; where Snakemake is here, the campaign's workflow directory (its cwd) is made if it does not exist."""
    import importlib.util

    w = window.Window(5, REPO / "config" / "quick.yaml", tmp_path / "out", tmp_path / "dir", "cpu", "cpu-test")
    cmd, cwd = w.command("campaign", tmp_path / "part", 300)
    assert cwd == tmp_path / "dir" and cwd.is_dir() and "--directory" in cmd
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "snakemake" else real(name, *a))
    assert (
        w.command("campaign", tmp_path / "part", 300)
        == "snakemake is not installed here: the campaign runs the workflow with it"
    )


# ---- a window killed at 60 % of its budget ---------------------------------------------------------------------------
def read_window(archive: Path) -> dict:
    with tarfile.open(archive) as tar:
        (name,) = [n for n in tar.getnames() if n.endswith("/window.json")]
        return json.loads(tar.extractfile(name).read())


def archived_names(out: Path) -> list[str]:
    """The names in the window's archive as it stands (rewritten atomically, so never read half-written)."""
    for archive in out.glob("window-*.tar.gz"):
        try:
            with tarfile.open(archive) as tar:
                return tar.getnames()
        except (OSError, tarfile.TarError, EOFError):  # replaced between the listing and the opening
            return []
    return []


@pytest.mark.e2e
def test_a_window_killed_inside_its_device_part_leaves_an_archive_the_claims_read(tmp_path):
    """The quick config on the CPU, a 3-minute window killed (SIGKILL) inside its device part, as soon as the archive
    holds the device benchmark's first record (whatever the machine's speed: a fixed time killed it after it had
    ended on a fast machine): the archive it left imports, the record lands in the store's device folder, and the
    claims renderer gives that device a column with the cost claims judged. No part outlives the window."""
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdgm.campaign.window",
            "--minutes",
            "3",
            "--configfile",
            str(REPO / "config" / "quick.yaml"),
            "--directory",
            str(tmp_path),
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # one thread: on a shared machine two spinning OpenMP threads per process make the
        # benchmarks ten times slower; what is checked here is the archive, not the speed
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"},
    )
    first = "records/bench/throughput/wikitext2/sdgm-s0.json"
    try:
        deadline = time.monotonic() + 180
        while not any(n.endswith(first) for n in archived_names(out)):
            assert proc.poll() is None, "the window ended before its archive held the device part's first record"
            assert time.monotonic() < deadline, "no device record archived within the window's 3 minutes"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    (archive,) = out.glob("window-*.tar.gz")
    summary = read_window(archive)
    parts = {p["part"]: p for p in summary["parts"]}
    assert parts["env"]["status"] == "ok" and "running" in {parts["device"]["status"], parts["scaling"]["status"]}
    assert parts["device"]["order"][0] == "sdgm" and "results/cpu: lacking nothing" in parts["device"]["order_reason"]
    time.sleep(1)  # the running part died with the window (its parent-death signal)
    alive = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(out).encode() in cmdline.read_bytes():
                alive.append(cmdline.parent.name)
        except OSError:
            pass
    assert not alive, f"parts outlived the window: {alive}"
    st = tmp_path / "store"
    res = import_archives([archive], st)
    assert res["refused"] == [] and len(res["windows"]) == 1, res
    assert st / "cpu" / "bench" / "throughput" / "wikitext2" / "sdgm-s0.json" in res["bench"], res["bench"]
    readme = tmp_path / "README.md"
    readme.write_text(
        "# x\n\n<!-- CLAIMS_BEGIN: rendered by python -m sdgm.reporting.claims; do not edit -->\n<!-- CLAIMS_END -->\n"
    )
    r = run(["-m", "sdgm.reporting.claims", "--records", str(st / "cpu"), "--readme", str(readme)], timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "| claim | paper | cpu |" in readme.read_text()  # the README section: one compact table
    claims = {row.split(",")[0]: row for row in (st / "cpu" / "tables" / "claims.csv").read_text().splitlines()}
    assert ",not reproduced," in claims["params"] or ",reproduced," in claims["params"], claims["params"]
    assert "bench/throughput/wikitext2/sdgm-s0.json" in claims["params"]
