"""Faults at the edges of a run: storage, corpus content, memory, integrity, network deadlines, preemption,
two writers, and what the log shows after a kill.

Each fault is produced for real: a tmpfs that is full or read-only (mounted here, as root), a corpus file with
bytes that are not text, a training that does not fit the memory it is given, weights swapped between runs, an
HTTP server that stalls or trickles, a real SIGTERM and SIGKILL to a training process, and a second process
training a run that another one holds. Each must end in one clear error naming what happened (or in a correct
recovery), with nothing lost and no half-written file under an output's name.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import FAULTS_TRAIN

from sdgm.common.atomic import StorageError, write_json_atomic
from sdgm.data import sources as data_sources
from sdgm.data import tokens as data_tokens
from sdgm.data.checks import ContentError, DataError
from sdgm.data.sources import materialize
from sdgm.harness.config import JOB_MALLOC_ENV
from sdgm.harness.experiment import run_training
from sdgm.harness.memory import MemoryEstimateError, rss_bytes
from sdgm.harness.runlock import RunLocked
from sdgm.harness.train import TrainConfig, Trainer
from sdgm.models.registry import build_model, load_run
from sdgm.reporting import ReportError, build_report

REPO = Path(__file__).resolve().parents[1]


# ============================================================================ helpers

# 105 steps per epoch of the corpus the `tokens` fixture (conftest) gives
TRAIN = {**FAULTS_TRAIN, "checkpoint_every_steps": 50, "log_every_steps": 1000}
MODEL = {"d_model": 16, "n_atoms": 8}


def kw(train: dict, **extra) -> dict:
    return (
        dict(
            corpus="tiny",
            experiment="sdgm",
            model_name="sdgm",
            model_overrides=MODEL,
            train_overrides=train,
            seed=0,
            progress=False,
        )
        | extra
    )


def train(tokens_dir: Path, run: Path, ck: Path, train_cfg: dict = TRAIN, **extra) -> dict:
    return run_training(tokens_dir, run, ck, run / "metrics.json", **kw(train_cfg, **extra))


def parts(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*.part-*"))


# ============================================================================ 1. storage: full, read-only


def test_full_disk_keeps_the_previous_metrics_file(disk):
    d = disk(64 * 1024)
    path = d.path / "run" / "metrics.json"
    write_json_atomic(path, {"val_ppl": 100.0})
    with pytest.raises(StorageError, match=f"no space left on device writing {re.escape(str(path))}"):
        write_json_atomic(path, {"history": "x" * 200_000})
    assert json.loads(path.read_text()) == {"val_ppl": 100.0}  # the previous good file survives
    assert parts(d.path) == []  # no partial file


def test_read_only_disk_is_named(disk):
    d = disk(64 * 1024)
    path = d.path / "metrics.json"
    write_json_atomic(path, {"val_ppl": 100.0})
    d.remount("ro")
    with pytest.raises(StorageError, match=f"read-only file system writing {re.escape(str(path))}"):
        write_json_atomic(path, {"val_ppl": 90.0})
    with pytest.raises(StorageError, match="read-only file system writing .*new/metrics.json"):
        write_json_atomic(d.path / "new" / "metrics.json", {})  # the directory cannot even be made
    assert json.loads(path.read_text()) == {"val_ppl": 100.0}


def test_corpus_copy_on_a_full_disk_then_rerun(disk):
    d = disk(64 * 1024)  # the PTB validation split is 400 kB
    dest = d.path / "corpora" / "ptb" / "valid.txt"
    want = data_sources.shipped_sha256("ptb")["valid"]
    with pytest.raises(StorageError, match=f"no space left on device writing {re.escape(str(dest))}"):
        materialize("valid", {"type": "shipped", "corpus": "ptb"}, dest, want)
    assert list(dest.parent.iterdir()) == []
    d.remount("size=2m")  # space freed
    assert materialize("valid", {"type": "shipped", "corpus": "ptb"}, dest, want) == want


def checkpoint_size(tokens: Path, tmp: Path) -> int:
    """Size of a checkpoint of the run below (model, Adam moments, state), written by a Trainer elsewhere."""
    splits, vocab = data_tokens.load_tokens(tokens)
    torch.manual_seed(0)
    net = build_model("sdgm", len(vocab), seq_len=16, **MODEL)
    t = Trainer(
        net,
        splits["train"],
        splits["valid"],
        TrainConfig(**{**TRAIN, "max_steps": 50}),
        tmp / "measure",
        progress=False,
    )
    t.fit()
    return (tmp / "measure" / "last.pt").stat().st_size


def test_checkpoint_on_a_full_disk_keeps_the_last_good_one_and_resumes(tokens, tmp_path, disk):
    size = checkpoint_size(tokens, tmp_path)
    # room for one checkpoint and half another: the first (step 50) is written, the second (step 100) cannot be
    d = disk((size * 3 // 2 // 4096 + 1) * 4096)
    ck, run = d.path / "ck", tmp_path / "run"
    with pytest.raises(StorageError, match=f"no space left on device writing {re.escape(str(ck / 'last.pt'))}"):
        train(tokens, run, ck)
    assert torch.load(ck / "last.pt", weights_only=False)["state"]["step"] == 50  # the last good one, loadable
    assert parts(ck) == [] and not (run / "metrics.json").exists()
    d.remount(f"size={size * 8}")  # space freed: the same command goes on from step 50
    rec = train(tokens, run, ck)
    assert rec["metrics"]["resumed"] is True and rec["metrics"]["steps"] == 315
    log = [json.loads(line) for line in (ck / "log.jsonl").read_text().splitlines()]
    assert {"event": "resume", "step": 50} in log


def test_checkpoint_on_a_read_only_disk_is_named(tokens, tmp_path, disk):
    d = disk(4 * 1024 * 1024)
    ck = d.path / "ck"
    ck.mkdir()
    d.remount("ro")
    with pytest.raises(StorageError, match="read-only file system writing"):
        train(tokens, tmp_path / "run", ck)
    assert not (tmp_path / "run" / "metrics.json").exists()


# ============================================================================ 2. corpus content

GOOD = "the cat sat\non the mat\n"
BAD_TEXT = {
    "invalid UTF-8": (b"the cat\nsat on\nthe \xff\xfe mat\n", r"line 3, byte 5: not valid UTF-8 .*b'\\xff"),
    "NUL byte": (b"the cat\nsat\x00 on\n", r"line 2, byte 4: NUL byte .*b'\\x00'"),
    "absurd line": (b"ok\n" + b"a " * 600_000 + b"\n", r"line 2, byte 1000001: line longer than 1000000 bytes"),
    "absurd token": (b"ok\nfine\nx" + b"y" * 2000 + b" z\n", r"line 3, byte 1: token of 2001 characters"),
}


def url_source(src: Path, **extra) -> dict:
    return {"type": "url", "urls": {s: (src / f"{s}.txt").as_uri() for s in ("train", "valid", "test")}, **extra}


@pytest.mark.parametrize("case", list(BAD_TEXT))
def test_corpus_that_is_not_text_fails_at_materialization(tmp_path, case):
    text, where = BAD_TEXT[case]
    src = tmp_path / "src"
    src.mkdir()
    (src / "valid.txt").write_bytes(text)
    dest = tmp_path / "corpora" / "valid.txt"
    with pytest.raises(ContentError) as e:
        materialize("valid", url_source(src), dest, None)
    msg = str(e.value)
    assert msg.startswith(f"{dest} (from {(src / 'valid.txt').as_uri()}): ") and re.search(where, msg), msg
    assert list(dest.parent.iterdir()) == []  # never left behind as a finished output
    (src / "valid.txt").write_text(GOOD)  # the source fixed, the same call works
    materialize("valid", url_source(src), dest, None)
    assert dest.read_text() == GOOD


def test_corpus_check_is_configurable(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "valid.txt").write_bytes(b"a\x00b c\n" + b"x" * 3000 + b"\n")
    dest = tmp_path / "valid.txt"
    materialize("valid", url_source(src), dest, None, check={"nul": False, "max_token_chars": 0})
    assert dest.read_bytes().startswith(b"a\x00b")
    with pytest.raises(DataError, match=r"unknown corpus check option\(s\) \['utf8'\]"):
        materialize("valid", url_source(src), dest, None, check={"utf8": False})


def snakemake(*args, cwd, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.e2e  # two Snakemake runs
def test_workflow_rerun_after_fixing_a_bad_corpus_needs_no_deletion(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for s in ("train", "valid", "test"):
        (src / f"{s}.txt").write_text(GOOD)
    (src / "test.txt").write_bytes(b"the cat\n\xc3\x28 sat\n")  # an invalid two-byte sequence on line 2
    cfg = yaml.safe_load((REPO / "config" / "quick.yaml").read_text())
    cfg["corpora"] = {"mine": {"source": url_source(src), "sha256": None}}
    cfg["experiments"] = {"sdgm": {"model": "sdgm"}}
    cfg["gmm"]["experiments"] = []
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    target = "resources/corpora/mine/train.txt"
    r = snakemake(target, "--cores", "1", "--configfile", "c.yaml", cwd=tmp_path)
    assert r.returncode != 0
    log = (tmp_path / "results/logs/fetch_corpus/mine.log").read_text()
    assert re.search(
        r"ContentError: resources/corpora/mine/test\.txt \(from file://\S+/src/test\.txt\): "
        r"line 2, byte 1: not valid UTF-8 \(invalid continuation byte\): b'\\xc3'",
        log,
    ), log[-2000:]
    assert sorted(p.name for p in (tmp_path / "resources").rglob("*") if p.is_file()) == []  # nothing finished
    (src / "test.txt").write_text(GOOD)
    r = snakemake(target, "--cores", "1", "--configfile", "c.yaml", cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (tmp_path / "resources/corpora/mine/test.txt").read_text() == GOOD


# ============================================================================ 3. memory before work


def test_training_that_does_not_fit_is_refused_before_the_first_step(tokens, tmp_path):
    big = {**TRAIN, "batch_size": 64, "seq_len": 64}
    limit = rss_bytes() // 2**20 + 20  # 20 MiB more than this process holds now
    t0 = time.perf_counter()
    with pytest.raises(MemoryEstimateError) as e:
        train(
            tokens,
            tmp_path / "run",
            tmp_path / "ck",
            big,
            model_overrides={"d_model": 256, "n_atoms": 64},
            mem_mb=limit,
        )
    msg = str(e.value)
    assert re.search(
        rf"estimated peak memory \d+ MiB \(this process now \d+ MiB, plus gradients \d+ MiB, optimizer "
        rf"\d+ MiB, activations \d+ MiB, logits backward \d+ MiB(, allocator kept \d+ MiB)?\) exceeds the job's memory {limit} MiB "
        rf"\(job_resources.train.mem_mb\); raise job_resources.train.mem_mb",
        msg,
    ), msg
    assert "job_resources.train.memory_check: false" in msg
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "ck" / "last.pt").exists()
    # the same run with the check off, or enough memory, trains
    rec = train(
        tokens,
        tmp_path / "run",
        tmp_path / "ck",
        {**big, "max_steps": 2},
        model_overrides={"d_model": 256, "n_atoms": 64},
        mem_mb=limit,
        memory_check=False,
    )
    assert rec["metrics"]["steps"] == 2


MEASURE = textwrap.dedent("""
    import json, sys, torch
    from sdgm.common.timing import peak_rss_bytes
    from sdgm.data.tokens import load_tokens
    from sdgm.harness.memory import rss_bytes
    from sdgm.harness.train import TrainConfig, Trainer
    from sdgm.models.registry import build_model
    torch.set_num_threads(1)
    splits, vocab = load_tokens(sys.argv[1])
    vocab = 20000  # a realistic vocabulary: the logits dominate, as in a real run
    ids = splits["train"].repeat(3) * 7 % vocab
    cfg = TrainConfig(seq_len=64, batch_size=32, max_steps=3, epochs=1, checkpoint_every_steps=0, device="cpu",
                      log_every_steps=1000)
    net = build_model("sdgm", vocab, seq_len=64, d_model=64, n_atoms=16)
    t = Trainer(net, ids, splits["valid"], cfg, sys.argv[2], progress=False)
    est = t.check_memory(None)
    # the decoder's compiled CPU kernels loaded first: like torch's import, a fixed cost of the process, not of a step
    from sdgm.spectral.ops.dispatch import resolve_impl
    resolve_impl("auto", t.device)
    before = rss_bytes()
    for _ in range(3):
        x, y = t.batch(t.epoch_order(0), 0)
        loss = t.model.training_loss(x, y)[0]
        t.opt.zero_grad()
        loss.backward()
        t.opt.step()
    # VmHWM, not getrusage's ru_maxrss: that one starts at the parent's peak at the fork (the pytest process, which
    # has grown past this child's peak by the time the whole suite reaches here)
    peak = peak_rss_bytes()
    print(json.dumps({"estimate": est["estimate_bytes"], "parts": est["parts"], "before": before, "peak": peak}))
""")


@pytest.mark.e2e  # long: a fresh process measures its peak memory
def test_memory_estimate_is_close_to_the_measured_peak(tokens, tmp_path):
    """The estimate against the resident memory a few training steps really take (a fresh process)."""
    # with the allocator settings the workflow's jobs run with (freed big blocks kept), and without them
    plain = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    for env in (plain, {**plain, **JOB_MALLOC_ENV}):
        r = subprocess.run(
            [sys.executable, "-c", MEASURE, str(tokens), str(tmp_path / "ck")],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            env={**env, "PYTHONPATH": str(REPO)},
        )
        assert r.returncode == 0, r.stderr[-3000:]
        m = json.loads(r.stdout.strip().splitlines()[-1])
        p = m["parts"]
        measured = m["peak"] - m["before"]  # what the steps added: gradients, Adam moments, activations, logits
        estimated = m["estimate"] - p["parameters"]
        print(f"estimated {estimated / 2**20:.1f} MiB, measured {measured / 2**20:.1f} MiB, parts {p}")
        assert p["logits_backward"] == 2 * 32 * 64 * 20000 * 4 and p["optimizer"] == 2 * p["parameters"]
        assert p["allocator_kept"] == (p["logits_backward"] if "MALLOC_MMAP_THRESHOLD_" in env else 0)
        # the measured peak itself varies from run to run (540-690 MiB without, 680-800 MiB with the kept blocks,
        # seen on a 2-core CPU, busy or idle): the band is wider than that spread, not tuned to one run
        assert 0.65 * measured <= estimated <= 1.5 * measured, (estimated, measured, "MALLOC_MMAP_THRESHOLD_" in env)


# ============================================================================ 4. integrity of trained runs


@pytest.fixture(scope="module")
def two_runs(tokens, tmp_path_factory) -> list[Path]:
    """Two finished runs of the same model and shape, seeds 0 and 1."""
    root = tmp_path_factory.mktemp("runs")
    out = []
    for seed in (0, 1):
        run = root / f"runs/tiny/sdgm-s{seed}"
        train(tokens, run, root / f"ck{seed}", {**TRAIN, "max_steps": 5}, seed=seed)
        out.append(run)
    return out


def copy_run(run: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "runs" / "tiny" / run.name
    shutil.copytree(run, dest)
    return dest


def test_run_json_records_the_weights_digest(two_runs):
    meta = json.loads((two_runs[0] / "run.json").read_text())
    assert meta["weights_sha256"] == data_sources.sha256_file(two_runs[0] / "model.pt")
    model, vocab = load_run(two_runs[0])
    assert len(vocab) == 41


def test_load_run_refuses_weights_of_another_run_of_the_same_shape(two_runs, tmp_path):
    run = copy_run(two_runs[0], tmp_path)
    shutil.copy(two_runs[1] / "model.pt", run / "model.pt")  # loads into the model without complaint
    other = torch.load(run / "model.pt", weights_only=True)
    build_model("sdgm", 41, seq_len=16, **MODEL).load_state_dict(other)
    with pytest.raises(
        ValueError,
        match=r"model\.pt is not this run's weights: its SHA-256 differs from the one in "
        r".*run\.json",
    ):
        load_run(run)


@pytest.mark.parametrize("swap", ["model.pt", "vocab.json", "run.json"])
def test_tables_refuse_a_run_whose_files_do_not_belong_together(two_runs, tmp_path, swap):
    run = copy_run(two_runs[0], tmp_path)
    if swap == "vocab.json":
        vocab = json.loads((run / "vocab.json").read_text())
        (run / "vocab.json").write_text(json.dumps(vocab[::-1]))
    else:
        shutil.copy(two_runs[1] / swap, run / swap)
    why = {
        "model.pt": "model.pt is not the weights run.json records",
        "vocab.json": "vocab.json is not the vocabulary",
        "run.json": "run.json fingerprint",
    }[swap]
    with pytest.raises(
        ReportError,
        match=f"{re.escape(str(run / 'metrics.json'))}: the files of run .* do not belong together: .*{re.escape(why)}",
    ):
        build_report([run / "metrics.json"], tmp_path / "tables", tmp_path / "figures")
    assert not (tmp_path / "tables").exists()


# ============================================================================ 5. network deadlines


class SlowServer(http.server.ThreadingHTTPServer):
    daemon_threads = True


def serve(behaviour):
    """An HTTP server on localhost whose GET does `behaviour(handler)`; returns (url, server)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            try:
                behaviour(self)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    server = SlowServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/valid.txt", server


def trickle(h):
    h.send_response(200)
    h.send_header("Content-Length", "100000")
    h.end_headers()
    for _ in range(1000):  # one byte every 20 ms: never silent long enough for the per-read timeout
        h.wfile.write(b"a")
        h.wfile.flush()
        time.sleep(0.02)


def stall(h):
    h.send_response(200)
    h.send_header("Content-Length", "100000")
    h.end_headers()
    h.wfile.write(b"the cat sat\n" * 10)
    h.wfile.flush()
    time.sleep(10)


@pytest.mark.parametrize(
    "behaviour,match",
    [
        (
            trickle,
            r"download of \S+ did not finish within its deadline of 1 s \(source\.deadline\): \d+ bytes of 100000",
        ),
        (stall, r"download of \S+ stalled: no data for 0\.5 s \(source\.timeout\) after 120 bytes of 100000"),
    ],
    ids=["trickling", "stalled"],
)
def test_slow_server_ends_in_one_error_and_leaves_nothing(tmp_path, behaviour, match):
    url, server = serve(behaviour)
    dest = tmp_path / "corpora" / "valid.txt"
    source = {"type": "url", "urls": {"train": url, "valid": url, "test": url}, "timeout": 0.5, "deadline": 1.0}
    t0 = time.monotonic()
    try:
        with pytest.raises(DataError, match=match):
            materialize("valid", source, dest, None)
    finally:
        server.shutdown()
    assert time.monotonic() - t0 < 4
    assert list(dest.parent.iterdir()) == []  # no empty or partial file


# ============================================================================ 6-8. SIGTERM, one writer, the log after a kill

TRAINING = textwrap.dedent("""
    import json, sys, torch
    from sdgm.harness.experiment import run_training
    torch.set_num_threads(1)
    tokens, run, ck, train = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    run_training(tokens, run, ck, run + "/metrics.json", corpus="tiny", experiment="sdgm", model_name="sdgm",
                 model_overrides={"d_model": 16, "n_atoms": 8}, train_overrides=train, seed=0, progress=True)
""")
LONG = {**TRAIN, "epochs": 4, "checkpoint_every_steps": 1000, "log_every_steps": 5}  # 420 steps, no periodic checkpoint


def start_training(tokens: Path, root: Path, cwd: Path, train_cfg: dict = LONG) -> subprocess.Popen:
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", TRAINING, str(tokens), str(root / "run"), str(root / "ck"), json.dumps(train_cfg)],
        cwd=cwd,
        stderr=open(root / "stderr.log", "w"),
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def logged_step(ck: Path) -> int:
    try:
        lines = (ck / "log.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else -1
    except (OSError, ValueError):
        return -1


def wait_for_step(proc: subprocess.Popen, ck: Path, step: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while logged_step(ck) < step:
        assert proc.poll() is None, f"training ended early (rc {proc.returncode})"
        assert time.time() < deadline, "training did not get there in time"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def uninterrupted(tokens, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("uninterrupted")
    return train(tokens, root / "run", root / "ck", LONG)


@pytest.mark.e2e  # training subprocesses
def test_sigterm_checkpoints_the_current_step_and_the_rerun_loses_nothing(tokens, tmp_path, uninterrupted):
    proc = start_training(tokens, tmp_path, tmp_path / "first")
    wait_for_step(proc, tmp_path / "ck", 60)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143  # 128 + SIGTERM: failed for Snakemake, which keeps no output
    err = (tmp_path / "stderr.log").read_text()
    m = re.search(
        r"training stopped by SIGTERM \(a time limit or preemption\) at step (\d+): checkpoint (\S+) holds "
        r"that step; run the same command again to resume there \(exit status 143\)",
        err,
    )
    assert m and "Traceback" not in err, err[-2000:]
    step = int(m[1])
    assert 60 <= step < 420 and step % LONG["checkpoint_every_steps"] != 0 and Path(m[2]) == tmp_path / "ck/last.pt"
    assert torch.load(tmp_path / "ck/last.pt", weights_only=False)["state"]["step"] == step
    assert not (tmp_path / "run" / "metrics.json").exists()
    rec = train(tokens, tmp_path / "run", tmp_path / "ck", LONG)  # the resubmitted job
    log = [json.loads(line) for line in (tmp_path / "ck/log.jsonl").read_text().splitlines()]
    assert {"event": "resume", "step": step} in log
    assert rec["metrics"]["resumed"] is True and rec["metrics"]["steps"] == uninterrupted["metrics"]["steps"]
    for key in ("val_ppl", "test_ppl", "best_step"):  # no step lost or repeated: bit-identical on CPU
        assert rec["metrics"][key] == uninterrupted["metrics"][key], key


def test_second_writer_of_a_run_stops_naming_the_lock(tokens, tmp_path, monkeypatch):
    proc = start_training(tokens, tmp_path, tmp_path / "pipeline-a")
    try:
        wait_for_step(proc, tmp_path / "ck", 5)
        (tmp_path / "pipeline-b").mkdir()
        monkeypatch.chdir(tmp_path / "pipeline-b")  # another working directory, the same results
        with pytest.raises(RunLocked) as e:
            train(tokens, tmp_path / "run", tmp_path / "ck", LONG)
        msg = str(e.value)
        assert (
            f"run {tmp_path / 'run'} is being trained by pid {proc.pid} on host " in msg
            and f"started in {tmp_path / 'pipeline-a'} at " in msg
            and f"(lock {tmp_path / 'ck' / 'lock'})" in msg
        )
        assert proc.poll() is None  # the first one trains on, undisturbed
    finally:
        proc.kill()
        proc.wait()
    # the lock dies with its holder, even by SIGKILL: the same command now resumes
    rec = train(tokens, tmp_path / "run", tmp_path / "ck", {**LONG, "max_steps": 1})
    assert rec["metrics"]["steps"] >= 1


def test_log_shows_the_last_step_reached_after_a_kill(tokens, tmp_path):
    proc = start_training(tokens, tmp_path, tmp_path / "w")
    wait_for_step(proc, tmp_path / "ck", 100)
    proc.kill()
    proc.wait()
    last = logged_step(tmp_path / "ck")
    steps = [int(s) for s in re.findall(r"^train step (\d+)/420: loss", (tmp_path / "stderr.log").read_text(), re.M)]
    assert steps and steps[-1] == last >= 100  # the job's log is as far as the training got


def test_slurm_profile_asks_for_sigterm_ahead_of_the_time_limit():
    prof = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    extra = prof["set-resources"]["train"]["slurm_extra"]
    m = re.search(r"--signal=TERM@(\d+)", extra)
    assert m and int(m[1]) >= 60, extra
