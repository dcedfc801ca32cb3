"""Faults from outside: crafted or damaged archives, replaced checkpoints, two imports at once, a campaign's deadline.

Archives travel between machines and checkpoints may sit on a shared results directory, so neither is trusted:
nothing in them may run code or write outside its folder, and each damaged one ends in one line naming it while the
rest goes on. Every test builds the fault for real (a crafted archive, a pickle that runs code, a second process
holding a lock, a training job that outlives its parent) and runs the real import, resume or campaign code.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from test_campaign import fake_rates, fake_run, publish, tiny_config

from sdgm.campaign import archive, cli, render, store, waves
from sdgm.data import tokens as data_tokens
from sdgm.harness.runlock import run_lock
from sdgm.harness.train import CheckpointError, TrainConfig, Trainer
from sdgm.models.registry import build_model

REPO = Path(__file__).resolve().parents[1]
H100 = "nvidia-h100-80gb-hbm3"


# ---- records and archives, crafted ----------------------------------------------------------------------------------


def published(tmp_path: Path, experiment: str = "sdgm", st: Path | None = None) -> tuple[Path, Path]:
    """A store holding one record (ptb, `experiment`, seed 0, an H100) and the record's directory."""
    st = st or tmp_path / "src"
    target, _ = publish(st, fake_run(tmp_path, "ptb", experiment, 0))
    return st, target


def craft(rec: Path, out: Path, manifest: dict | None = None, metrics=None, files: dict | None = None) -> Path:
    """An archive of the record `rec` under its own (safe) member names, with manifest fields, metrics or files
    changed, and every digest and size recomputed, so that the record matches its manifest as a sender could make
    it."""
    contents = {p.relative_to(rec).as_posix(): p.read_bytes() for p in rec.rglob("*") if p.is_file()}
    m = json.loads(contents.pop("manifest.json"))
    if metrics is not None:
        rec_json = json.loads(contents["metrics.json"])
        metrics(rec_json)
        contents["metrics.json"] = json.dumps(rec_json).encode()
    contents.update(files or {})
    m["files"] = {n: hashlib.sha256(b).hexdigest() for n, b in sorted(contents.items())}
    m["sizes"] = {n: len(b) for n, b in sorted(contents.items())}
    m.update(manifest or {})
    contents["manifest.json"] = json.dumps(m).encode()
    where = rec.relative_to(rec.parents[3]).as_posix()
    with tarfile.open(out, "w:gz") as tar:
        for name, data in contents.items():
            info = tarfile.TarInfo(f"published/{where}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


# ---- 1. a manifest cannot place a record outside the store ---------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("device_slug", "../../../escaped"),
        ("device_slug", "ABSOLUTE"),
        ("corpus", "../../../escaped"),
        ("experiment", "x/../../../../escaped"),
        ("seed", "0/../../../../escaped"),
    ],
)
def test_a_manifest_cannot_place_a_record_outside_the_store(tmp_path, field, value):
    _, rec = published(tmp_path)
    if value == "ABSOLUTE":
        value = str(tmp_path / "elsewhere")
    arch = craft(rec, tmp_path / "evil.tar.gz", manifest={field: value})
    before = tree(tmp_path)
    dest = tmp_path / "dest" / "deeper" / "store"
    res = archive.import_archives([arch], dest)
    assert res["new"] == [] and len(res["refused"]) == 1, res
    assert f"manifest's {field}" in res["refused"][0] and "evil.tar.gz" in res["refused"][0]
    outside = {p for p in tree(tmp_path) - before if not p.startswith("dest/deeper/store")}
    assert outside == {"dest", "dest/deeper"}, outside  # nothing written beside or above the store
    assert store.record_dirs(dest) == [] and store.verify_store(dest) == []


def test_a_manifest_may_list_only_files_a_record_holds(tmp_path):
    _, rec = published(tmp_path)
    arch = craft(rec, tmp_path / "evil.tar.gz", files={"run.sh": b"rm -rf ~\n"})
    res = archive.import_archives([arch], tmp_path / "dest")
    assert res["new"] == [] and "'run.sh', not a file a record may hold" in res["refused"][0]


def test_destinations_are_checked_inside_the_store(tmp_path):
    st = tmp_path / "store"
    (st / H100 / "runs").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (st / H100 / "runs" / "ptb").symlink_to(tmp_path / "elsewhere")  # a link in the store that leads out
    _, rec = published(tmp_path)
    res = archive.import_archives([craft(rec, tmp_path / "a.tar.gz")], st)
    assert res["new"] == [] and "outside the store" in res["refused"][0]
    assert list((tmp_path / "elsewhere").iterdir()) == []


# ---- 2. resuming never runs code from a checkpoint -------------------------------------------------------------------


class Payload:
    """Unpickling this runs open(MARKER, "w"): code a replaced checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


TRAIN = {
    "seq_len": 16,
    "batch_size": 8,
    "epochs": 1,
    "max_steps": 6,
    "lr": 3e-3,
    "eval_every_steps": 0,
    "checkpoint_every_steps": 3,
    "log_every_steps": 3,
    "device": "cpu",
}


def trainer(tokens: Path, ck: Path) -> Trainer:
    splits, vocab = data_tokens.load_tokens(tokens)
    torch.manual_seed(0)
    net = build_model("sdgm", len(vocab), seq_len=16, d_model=16, n_atoms=8)
    return Trainer(net, splits["train"], splits["valid"], TrainConfig(**TRAIN), ck, progress=False)


@pytest.fixture(scope="module")
def trained(grammar_tokens, tmp_path_factory) -> Path:
    """A checkpoint directory with last.pt at step 6."""
    ck = tmp_path_factory.mktemp("trained") / "ck"
    trainer(grammar_tokens, ck).fit()
    return ck


def copy_ck(trained: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained, tmp_path / "ck", ignore=shutil.ignore_patterns("lock"))
    return tmp_path / "ck"


@pytest.mark.parametrize("record", ["kept", "removed"])
def test_a_replaced_checkpoint_is_refused_before_its_code_runs(grammar_tokens, trained, tmp_path, record):
    ck = copy_ck(trained, tmp_path)
    marker = tmp_path / "code-ran"
    state = torch.load(ck / "last.pt", weights_only=False)
    state["state"] = Payload(marker)  # a real checkpoint with one value replaced by code
    torch.save(state, ck / "last.pt")
    if record == "removed":  # the record beside it gone too: the weights-only load still refuses the code
        (ck / "last.pt.json").unlink(missing_ok=True)
    with pytest.raises(CheckpointError, match=f"checkpoint {ck / 'last.pt'} is unreadable"):
        trainer(grammar_tokens, ck).try_resume()
    assert not marker.exists()


def test_a_checkpoint_resumes_under_the_weights_only_load(grammar_tokens, trained, tmp_path):
    ck = copy_ck(trained, tmp_path)
    meta = json.loads((ck / "last.pt.json").read_text())
    assert meta["sha256"][0] == hashlib.sha256((ck / "last.pt").read_bytes()).hexdigest()
    assert meta["step"] == TRAIN["max_steps"]
    (ck / "last.pt.json").unlink()  # a checkpoint from before the record: loaded weights-only all the same
    t = trainer(grammar_tokens, ck)
    assert t.try_resume() is True and t.state.step == TRAIN["max_steps"]


# ---- 3. imports and campaigns share the store's lock; only complete records are installed -------------------------


def test_an_import_refuses_a_store_a_campaign_holds(tmp_path):
    src, _ = published(tmp_path)
    archive.pack(src, store.record_dirs(src), tmp_path / "a.tar.gz")
    dest = tmp_path / "dest"
    dest.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from sdgm.campaign import waves\n"
            f"with waves.campaign_lock(Path({str(dest)!r})):\n"
            "    print('held', flush=True); time.sleep(60)",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cli.main(["import", str(tmp_path / "a.tar.gz"), "--store", str(dest), "--no-render"]) == 2
        assert store.record_dirs(dest) == []
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(["import", str(tmp_path / "a.tar.gz"), "--store", str(dest), "--no-render"]) == 0
    assert len(store.record_dirs(dest)) == 1


def test_a_running_importers_temporary_is_left_alone(tmp_path):
    src, rec = published(tmp_path)
    archive.pack(src, [rec], tmp_path / "a.tar.gz")
    dest = tmp_path / "dest"
    parent = dest / H100 / "runs" / "ptb"
    parent.mkdir(parents=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # an importer at work
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = store.slug(os.uname().nodename)
    live = parent / f"sdgm-s0.part-{host}-{other.pid}-000000000000"
    stale = parent / f"sdgm-s0.part-{host}-{dead.pid}-000000000000"
    for d in (live, stale):
        d.mkdir()
        (d / "metrics.json").write_text("{}")
    try:
        res = archive.import_archives([tmp_path / "a.tar.gz"], dest)
        assert len(res["new"]) == 1 and store.verify_store(dest) == []
        assert (live / "metrics.json").is_file()  # another process's copy in progress is not removed
        assert not stale.exists()  # one whose process has ended is
    finally:
        other.kill()
        other.wait()


def test_a_published_record_missing_a_file_is_named_and_repaired_by_importing_it_again(tmp_path):
    src, rec = published(tmp_path)
    archive.pack(src, [rec], tmp_path / "a.tar.gz")
    dest = tmp_path / "dest"
    (target,) = archive.import_archives([tmp_path / "a.tar.gz"], dest)["new"]
    (target / "samples.txt").unlink()
    (target / "notes.txt").write_text("x")
    (problem,) = store.verify_store(dest)
    assert "missing samples.txt" in problem and "extra notes.txt" in problem
    (target / "notes.txt").unlink()
    res = archive.import_archives([tmp_path / "a.tar.gz"], dest)
    assert res["repaired"] == [target] and res["same"] == []
    assert store.verify_store(dest) == [] and not list(target.parent.glob("*.part-*"))


# ---- 4. a campaign's deadline stops every process it started; a lock without its holder is cleared ----------------

WAVE = """
import os, signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import signal, sys, time
from sdgm.harness.runlock import run_lock
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a job slow to stop: only KILL ends it
with run_lock(sys.argv[1], "run x"):
    open(sys.argv[2], "w").write("locked")
    time.sleep(120)
''', sys.argv[1], sys.argv[2]])
time.sleep(120)
"""


def test_the_deadline_stops_every_process_of_the_wave(tmp_path, monkeypatch):
    lock, ready = tmp_path / "ck" / "lock", tmp_path / "ready"
    monkeypatch.setattr(waves, "snakemake_command", lambda *a: [sys.executable, "-c", WAVE, str(lock), str(ready)])
    monkeypatch.setattr(waves, "STOP_GRACE_S", 2.0, raising=False)
    with open(tmp_path / "log", "w") as log:
        finished = waves.snakemake_wave(
            tmp_path / "c.yaml", tmp_path, ["x"], 1, 1, 4.0, tmp_path / "store", log, [], None
        )
    assert finished is False and ready.read_text() == "locked"
    with run_lock(lock, "run x"):  # the training job is gone with its lock: the next campaign can train the run
        pass


LEFT = """
import os, sys, time
from sdgm.harness.runlock import run_lock
with run_lock(sys.argv[1], "run x"):
    pid = os.fork()  # a worker that inherits the lock's open file
    if pid == 0:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 1), os.dup2(null, 2)  # the caller waits for the holder's output only
        time.sleep(60)
        os._exit(0)
    print(pid, flush=True)
    os._exit(0)  # the holder ends; its worker holds the file on
"""


def test_a_run_lock_whose_holder_is_gone_is_named_and_cleared(tmp_path, capfd):
    lock = tmp_path / "ck" / "lock"
    r = subprocess.run([sys.executable, "-c", LEFT, str(lock)], cwd=REPO, capture_output=True, text=True, timeout=60)
    worker = int(r.stdout)
    holder = json.loads(lock.read_text())
    try:
        with run_lock(lock, "run x") as me:
            assert me["pid"] == os.getpid()
        err = capfd.readouterr().err
        assert f"lock {lock}: its holder (pid {holder['pid']} on host {holder['host']}" in err and "is gone" in err
    finally:
        os.kill(worker, signal.SIGKILL)
    # a lock whose holder runs is still refused, naming it
    with run_lock(lock, "run x"):
        r = subprocess.run(
            [
                sys.executable,
                "-c",
                f"from sdgm.harness.runlock import run_lock\nwith run_lock({str(lock)!r}, 'run x'): pass",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode != 0 and f"run x is being trained by pid {os.getpid()}" in r.stderr


def test_the_closing_summary_counts_failed_runs(tmp_path, monkeypatch, capsys):
    import yaml

    cfg = tiny_config()
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    # every wave ends without publishing anything: each of its runs failed
    monkeypatch.setattr(waves, "snakemake_wave", lambda *a, **k: True)
    monkeypatch.setenv(waves.CLOCK_ENV, "estimate")
    res = waves.run_campaign(
        tmp_path / "config.yaml",
        10,
        directory=tmp_path,
        parallel=2,
        records=None,
        rates_path=fake_rates(tmp_path),
        bench_min=0.0,
    )
    out = capsys.readouterr().out
    assert len(res["failed"]) == 4
    assert "every run of the config is published\n" not in out
    assert "published except 4 that failed in this campaign" in out and "4 run(s) failed" in out


# ---- unclear cases: archive sizes, damaged archives, a full disk, impossible values, missing files, a killed import


def test_an_archive_that_would_unpack_past_the_limit_is_refused_before_unpacking(tmp_path, monkeypatch):
    default = getattr(archive, "UNPACK_LIMIT", None)
    monkeypatch.setattr(archive, "UNPACK_LIMIT", 1024 * 1024, raising=False)  # the test's archive stays small
    _, rec = published(tmp_path)
    big = b"\0" * (3 * 1024 * 1024)  # compresses to a few KiB
    arch = craft(rec, tmp_path / "bomb.tar.gz", files={"figures/zeros.png": big})
    assert arch.stat().st_size < 64 * 1024
    dest = tmp_path / "dest"
    res = archive.import_archives([arch], dest)
    assert res["new"] == [] and "over the 1,048,576-byte limit" in res["refused"][0]
    assert tree(dest) == {".lock"}  # nothing unpacked
    assert default == 16 * archive.ARCHIVE_LIMIT


def test_a_member_larger_than_its_manifest_says_is_refused_before_unpacking(tmp_path):
    _, rec = published(tmp_path)
    arch = craft(rec, tmp_path / "a.tar.gz")
    sizes = {n: (rec / n).stat().st_size for n in json.loads((rec / "manifest.json").read_text())["files"]}
    lying = craft(rec, tmp_path / "lying.tar.gz", manifest={"sizes": {**sizes, "samples.txt": 10}})
    res = archive.import_archives([lying, arch], tmp_path / "dest")
    assert (
        len(res["new"]) == 1 and "samples.txt is" in res["refused"][0] and "its manifest says 10" in res["refused"][0]
    )


def test_a_truncated_archive_is_one_line_and_the_others_import_and_render(tmp_path, capsys):
    src_a, rec_a = published(tmp_path, "sdgm", tmp_path / "a")
    src_b, rec_b = published(tmp_path, "gpt2", tmp_path / "b")
    archive.pack(src_a, [rec_a], tmp_path / "a.tar.gz")
    archive.pack(src_b, [rec_b], tmp_path / "b.tar.gz")
    data = (tmp_path / "a.tar.gz").read_bytes()
    (tmp_path / "a.tar.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.tar.gz").write_bytes(b"not an archive")
    dest = tmp_path / "dest"
    rc = cli.main(
        [
            "import",
            str(tmp_path / "a.tar.gz"),
            str(tmp_path / "junk.tar.gz"),
            str(tmp_path / "b.tar.gz"),
            "--store",
            str(dest),
        ]
    )
    out, err = capsys.readouterr()
    assert rc == 1 and "imported 1 new record(s)" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err, err
    assert f"{tmp_path / 'a.tar.gz'}: truncated or damaged" in lines[0]
    assert f"{tmp_path / 'junk.tar.gz'}: not a campaign archive" in lines[1]
    assert "gpt2" in (dest / H100 / "tables" / "main.csv").read_text()  # the good archive is rendered
    assert [p.name for p in dest.iterdir() if p.name.startswith(".import")] == []


def test_a_full_disk_during_an_import_is_one_line_naming_the_archive(tmp_path, disk, capsys):
    _, rec = published(tmp_path)
    noise = os.urandom(3 * 1024 * 1024)  # does not compress: it cannot fit the 2 MiB disk
    big = craft(rec, tmp_path / "big.tar.gz", files={"figures/noise.png": noise})
    src_b, rec_b = published(tmp_path, "gpt2", tmp_path / "b")
    archive.pack(src_b, [rec_b], tmp_path / "small.tar.gz")
    d = disk(2 * 1024 * 1024)
    rc = cli.main(["import", str(big), str(tmp_path / "small.tar.gz"), "--store", str(d.path), "--no-render"])
    out, err = capsys.readouterr()
    assert rc == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert f"{big}: no space left on device unpacking into {d.path}" in err
    assert "imported 1 new record(s)" in out and store.verify_store(d.path) == []  # the other archive is in


def set_ppl(value):
    def change(rec):
        rec["metrics"]["val_ppl"] = value

    return change


def set_rate(value):
    def change(rec):
        rec["metrics"]["train_tokens_per_s"] = value

    return change


@pytest.mark.parametrize(
    "change, named",
    [
        (set_ppl(0.5), "metrics.val_ppl must be a finite number >= 1"),
        (set_ppl(float("nan")), "metrics.val_ppl is nan"),
        (set_rate(-5.0), "metrics.train_tokens_per_s must be a finite number > 0"),
        (set_rate(1e15), "metrics.train_tokens_per_s 1e+15 is beyond any device"),
    ],
)
def test_a_record_with_impossible_values_is_refused_and_later_renders_work(tmp_path, change, named):
    _, rec = published(tmp_path)
    evil = craft(rec, tmp_path / "evil.tar.gz", metrics=change)
    src_b, rec_b = published(tmp_path, "gpt2", tmp_path / "b")
    archive.pack(src_b, [rec_b], tmp_path / "good.tar.gz")
    dest = tmp_path / "dest"
    res = archive.import_archives([evil, tmp_path / "good.tar.gz"], dest)
    assert len(res["new"]) == 1 and len(res["refused"]) == 1 and named in res["refused"][0], res["refused"]
    assert render.render_store(dest)["problems"] == []


def test_negative_throughput_is_refused(tmp_path):
    _, rec = published(tmp_path)
    record = {"kind": "throughput", "schema": 1, "tokens_per_s": -3.0, "provenance": {}, "config_hash": "x"}
    evil = craft(rec, tmp_path / "evil.tar.gz", files={"throughput.json": json.dumps(record).encode()})
    res = archive.import_archives([evil], tmp_path / "dest")
    assert res["new"] == [] and "tokens_per_s is -3.0; a count, time or rate is never negative" in res["refused"][0]


def test_a_record_missing_a_file_is_one_line_on_render_and_the_tables_are_rebuilt(tmp_path, capsys):
    st, _ = published(tmp_path, "sdgm", tmp_path / "st")
    _, gone = published(tmp_path, "gpt2", st)
    assert cli.main(["render", "--store", str(st)]) == 0
    assert "gpt2" in (st / H100 / "tables" / "main.csv").read_text()
    capsys.readouterr()
    (gone / "metrics.json").unlink()
    assert cli.main(["render", "--store", str(st)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert f"left out {gone}" in err and "missing metrics.json" in err
    main = (st / H100 / "tables" / "main.csv").read_text()
    assert "sdgm" in main and "gpt2" not in main  # not the stale table of before


KILLED = """
import os, sys
from sdgm.campaign import archive, store
store.import_record = lambda *a, **k: os._exit(9)  # killed once the archive is unpacked
archive.import_record = store.import_record
archive.import_archives([sys.argv[1]], sys.argv[2])
"""


def test_an_import_killed_midway_leaves_nothing_for_good(tmp_path):
    src, rec = published(tmp_path)
    archive.pack(src, [rec], tmp_path / "a.tar.gz")
    dest = tmp_path / "dest"
    r = subprocess.run(
        [sys.executable, "-c", KILLED, str(tmp_path / "a.tar.gz"), str(dest)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 9, r.stderr
    left = [p for p in dest.iterdir() if p.name.startswith(".import")]
    assert left and any(p.rglob("metrics.json") for p in left)  # the unpacked archive, left by the kill
    res = archive.import_archives([tmp_path / "a.tar.gz"], dest)
    assert len(res["new"]) == 1
    assert [p for p in dest.iterdir() if p.name.startswith(".import")] == []
