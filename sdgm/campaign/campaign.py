"""A campaign: one GPU allocation of a few minutes advances the paper-wide result, and the results accumulate.

    python -m sdgm.campaign.campaign run --minutes 25 --configfile config/config.yaml  # train, evaluate, publish, pack
    python -m sdgm.campaign.campaign import results/campaign-*.tar.gz                  # merge archives into the store
    python -m sdgm.campaign.campaign render                                            # the store's tables per device
    python -m sdgm.campaign.campaign plan|estimate|pack|verify ...                     # see --help

`run` takes the runs of the config that no device has published yet (sdgm.campaign.store), highest priority first:
seed 0 of every experiment on every corpus (main experiments, then ablations), then seed 1, then seed 2. It estimates
each run's time from its tokens and a measured training rate (the committed records under results/h100 and the
store's own records, or a --rates table) and hands Snakemake waves of at most --parallel runs that fit the time
left, with the runs' publish receipts as targets (rule store_run, workflow/rules/store.smk). Snakemake trains them at
once on the one GPU, finishes each run's GMM, samples and throughput, and publishes each record as it finishes. No
run is started that the estimate says cannot finish; at the deadline Snakemake is stopped (what is published stays,
the rest is redone by the next campaign). At the end the records new to the store are packed into one archive of
at most 16 MiB. A second campaign with the same config continues where this one left off.

For tests and planning, SDGM_CAMPAIGN_CLOCK=estimate makes the budget count the estimated time of each wave
instead of the wall clock.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import yaml

from ..common.atomic import (StorageError, UnsafePath, atomic_path, no_links, no_links_below,
                             remove_stale_temporaries, sha256_file, storage_error, write_json_atomic, write_text_atomic)
from ..harness import config as config_module
from ..harness.config import Run, ablations, benchmarked_runs
from .costs import (DEFAULT_BENCH_MIN, DEFAULT_OVERHEAD_MIN, DEFAULT_PARALLEL, H100_RECORDS, CampaignError,
                    estimate_run, format_estimate, matrix_estimate, measured_rates, next_wave, plan, priority_order,
                    wave_seconds)
from .store import (DEVICE_ENV, MANIFEST, SLUG, StoreError, check_contents, check_manifest, device_slug, import_record,
                    inside, published_files, published_hashes, read_manifest, record_dirs,
                    store_lock, temp_name, temp_stale, verify_record, verify_store)

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "workflow" / "Snakefile"
ARCHIVE_LIMIT = 16 * 1024 * 1024
# what an import unpacks at most: the records of one archive, uncompressed (text compresses about 4-10 times; the
# figures are PNGs, already compressed)
UNPACK_LIMIT = 16 * ARCHIVE_LIMIT
MANIFEST_LIMIT = 1024 * 1024  # one manifest's bytes at most
MEMBER_LIMIT = 5000  # members of one archive at most (a record holds about 20 files, a GPU window's folder ~100)
HEADER_LIMIT = 64 * 1024  # bytes of one extended header (pax, GNU long name) at most; a real one holds a name or two
IMPORT_TEMP = ".import"  # STORE/.import.part-<host>-<pid>-<random>: an archive being unpacked
STOP_GRACE_S = 60.0  # at the deadline: seconds between TERM and KILL of Snakemake and its jobs
ARCHIVE_INDEX = "ARCHIVE.json"
WINDOW_SUMMARY = "window.json"  # a GPU window's folder in an archive: window/<device>/<stamp>/window.json
RENDER_STAMP = "RENDER.json"  # OUT/RENDER.json: "in progress" during a render, then the digest of every output
WINDOW_STAMP = re.compile(r"[0-9]{8}T[0-9]{6}Z")
CLOCK_ENV = "SDGM_CAMPAIGN_CLOCK"
# ---- the run command ----------------------------------------------------------------------------------------------

def load_config(path: str | Path) -> dict:
    try:
        return config_module.load_config(path)
    except ValueError as e:
        raise CampaignError(str(e)) from e


class Clock:
    """Seconds since the start: the wall clock, or (SDGM_CAMPAIGN_CLOCK=estimate) the estimated time of the
    waves so far, so that tests and plans do not depend on the machine's speed."""

    def __init__(self, mode: str | None = None):
        self.mode = mode or os.environ.get(CLOCK_ENV, "wall")
        if self.mode not in ("wall", "estimate"):
            raise CampaignError(f"${CLOCK_ENV}: {self.mode!r} is neither wall nor estimate")
        self.start = time.monotonic()
        self.estimated = 0.0

    def elapsed(self) -> float:
        return self.estimated if self.mode == "estimate" else time.monotonic() - self.start

    def waited(self, seconds: float) -> None:
        self.estimated += seconds


def receipt(config: dict, run: Run) -> str:
    return f"{config['results_dir']}/published/receipts/{run.corpus}/{run.name}.json"


def store_of(config: dict, directory: Path) -> Path:
    return (directory / config["results_dir"] / "published").resolve()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # ended members not yet reaped (zombies) count as gone
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return not Path("/proc/self/stat").exists()


def _stop(proc: subprocess.Popen, grace_s: float | None = None) -> None:
    """Stop Snakemake and every job it started (they share its process group, started in a session of its own):
    TERM to the group (Snakemake marks its jobs' outputs incomplete; a training checkpoints its step and exits),
    then KILL to whatever of the group is left after `grace_s`. No training outlives the campaign holding its lock."""
    grace_s = STOP_GRACE_S if grace_s is None else grace_s
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        proc.poll()
        if not _group_alive(proc.pid):
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    end = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < end:  # KILL is delivered at once, the exit takes a moment
        time.sleep(0.05)


def snakemake_command(config_path: Path, directory: Path, targets: list[str], parallel: int, cores: int,
                      extra: list[str]) -> list[str]:
    threads = max(1, cores // parallel)
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(directory),
            "--configfile", str(config_path), "--cores", str(cores), "--resources", f"gpu={parallel}",
            "--set-threads", f"train={threads}", "--keep-going", "--rerun-incomplete", *extra, "--", *targets]


def snakemake_wave(config_path: Path, directory: Path, targets: list[str], parallel: int, cores: int,
                   deadline_s: float | None, store: Path, log, extra: list[str], device_label: str | None) -> bool:
    """One Snakemake call for a wave's targets; False when it was stopped at the deadline."""
    cmd = snakemake_command(config_path, directory, targets, parallel, cores, extra)
    env = dict(os.environ)
    if device_label:
        env[DEVICE_ENV] = device_label
    log.write(f"$ {' '.join(cmd)}\n")
    log.flush()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    t0, seen, finished = time.monotonic(), {d for d in record_dirs(store)}, True
    while proc.poll() is None:
        time.sleep(2)
        for d in sorted(set(record_dirs(store)) - seen):
            seen.add(d)
            print(f"  published {d.relative_to(store)}", flush=True)
        if deadline_s is not None and time.monotonic() - t0 > deadline_s:
            print("  the time budget is spent: stopping Snakemake (published records stay)", flush=True)
            _stop(proc)
            finished = False
            break
    for d in sorted(set(record_dirs(store)) - seen):
        print(f"  published {d.relative_to(store)}", flush=True)
    return finished


@contextlib.contextmanager
def campaign_lock(store: Path):
    """One campaign or import per store at a time (sdgm.campaign.store.store_lock). The lock is the kernel's (flock): a
    killed campaign holds none."""
    try:
        with store_lock(store, "this campaign"):
            yield
    except StoreError as e:
        if "the store is in use" not in str(e):
            raise
        raise CampaignError(str(e)) from None


def run_campaign(config_path: str | Path, minutes: float, *, directory: str | Path = ".", parallel: int =
                 DEFAULT_PARALLEL, cores: int | None = None, device_label: str | None = None, rates_path=None,
                 records=H100_RECORDS, overhead_min: float = DEFAULT_OVERHEAD_MIN,
                 bench_min: float = DEFAULT_BENCH_MIN, archive_dir: str | Path | None = None,
                 extra: list[str] = ()) -> dict:
    config_path, directory = Path(config_path).resolve(), Path(directory).resolve()
    config = load_config(config_path)
    store = store_of(config, directory)
    cores = cores or os.cpu_count() or 1
    clock = Clock()
    budget = minutes * 60
    rates = measured_rates(records, store, rates_path)
    bench = set(benchmarked_runs(config))
    logs = directory / config["results_dir"] / "logs" / "campaign"
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    failed: list[Run] = []
    stopped: list[Run] = []
    with campaign_lock(store), open(logs / f"{stamp}.log", "a", buffering=1) as log:
        before = set(record_dirs(store))
        # a killed campaign leaves Snakemake's lock behind; no other campaign runs here (we hold the flock)
        subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(directory),
                        "--configfile", str(config_path), "--unlock"], stdout=log, stderr=subprocess.STDOUT)
        wave_no = 0
        while True:
            done = published_hashes(store)
            todo = [estimate_run(config, r, rates, parallel, overhead_min, bench_min, bench)
                    for r in priority_order(config) if r.cfg not in done and r not in failed]
            remaining = budget - clock.elapsed()
            wave = next_wave(todo, remaining, parallel)
            if not todo:
                print("campaign: every run of the config is published" if not failed else
                      f"campaign: every run of the config is published except {len(failed)} that failed in this "
                      f"campaign: " + ", ".join(f"{r.corpus}/{r.name}" for r in failed), flush=True)
                break
            if not wave:
                print(f"campaign: {len(todo)} run(s) left; the next ({todo[0]['run'].corpus}/{todo[0]['run'].name}, "
                      f"{todo[0]['seconds'] / 60:.1f} min estimated) does not fit the {max(remaining, 0) / 60:.1f} "
                      f"min left", flush=True)
                break
            wave_no += 1
            est = wave_seconds(wave)
            print(f"campaign: wave {wave_no}, {len(wave)} run(s), {est / 60:.1f} min estimated, "
                  f"{remaining / 60:.1f} min left:", flush=True)
            for e in wave:
                print(f"  {e['run'].corpus}/{e['run'].name}: {e['tokens']['train'] + e['tokens']['eval']:,} tokens at "
                      f"{e['rate']:,.0f} tok/s ({e['rate_source']}), {e['seconds'] / 60:.1f} min", flush=True)
            deadline = None if clock.mode == "estimate" else max(remaining, 1.0)
            finished = snakemake_wave(config_path, directory, [receipt(config, e["run"]) for e in wave], parallel,
                                      cores, deadline, store, log, list(extra), device_label)
            clock.waited(est)
            done = published_hashes(store)
            if not finished:  # stopped at the deadline: what is unpublished is left for the next campaign
                stopped.extend(e["run"] for e in wave if e["run"].cfg not in done)
                break
            for e in wave:
                if e["run"].cfg not in done:
                    failed.append(e["run"])
                    print(f"  not published: {e['run'].corpus}/{e['run'].name} (log: {logs / (stamp + '.log')})",
                          flush=True)
            if clock.mode == "wall" and clock.elapsed() >= budget:
                break
        new = sorted(set(record_dirs(store)) - before)
    print(f"campaign: {len(new)} record(s) published in this campaign, {len(failed)} run(s) failed, "
          f"{len(stopped)} stopped at the deadline", flush=True)
    archive = None
    if new:
        label = device_slug("", device_label) if device_label or os.environ.get(DEVICE_ENV) else \
            "-".join(sorted({read_manifest(d)["device_slug"] for d in new}))
        out = Path(archive_dir).resolve() if archive_dir else directory / config["results_dir"]
        archive = out / f"campaign-{label}-{stamp}.tar.gz"
        packed = pack(store, new, archive)
        print(f"campaign: packed {len(packed['records'])} record(s) into {archive} ({packed['bytes']:,} bytes)",
              flush=True)
        if packed["left_out"]:
            print(f"campaign: {len(packed['left_out'])} record(s) did not fit {ARCHIVE_LIMIT:,} bytes; pack them "
                  f"with `python -m sdgm.campaign.campaign pack --store {store} --record DIR ...`: "
                  + ", ".join(str(d) for d in packed["left_out"]), flush=True)
    return {"published": new, "failed": failed, "stopped": stopped, "archive": archive}


# ---- archives ------------------------------------------------------------------------------------------------------

def _write_archive(store: Path, recs: list[Path], path: Path) -> int:
    index = [{"record": d.relative_to(store).as_posix(), **{k: read_manifest(d)[k] for k in
                                                             ("run_id", "run_hash", "device_slug")}} for d in recs]
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            data = json.dumps({"schema": 1, "records": index}, indent=2).encode()
            info = tarfile.TarInfo(ARCHIVE_INDEX)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
            for d in recs:
                for f in sorted(p for p in d.rglob("*") if p.is_file()):
                    tar.add(f, arcname=f"published/{f.relative_to(store).as_posix()}", recursive=False)
    return path.stat().st_size


def pack(store: str | Path, recs, path: str | Path, limit: int = ARCHIVE_LIMIT) -> dict:
    """Pack records (directories of the store) into one .tar.gz of at most `limit` bytes. Records are taken in the
    given order; those that would push it over the limit are left out (and named)."""
    store, path = Path(store).resolve(), Path(path)
    recs = [Path(d).resolve() for d in recs]
    for d in recs:
        if not (d / MANIFEST).is_file() or store not in d.parents:
            raise CampaignError(f"{d}: not a record of the store {store}")
    take = list(recs)
    while True:
        size = _write_archive(store, take, path)
        if size <= limit:
            return {"records": take, "left_out": recs[len(take):], "bytes": size}
        if len(take) <= 1:
            path.unlink(missing_ok=True)
            raise CampaignError(f"{take[0] if take else store}: one record alone packs to {size:,} bytes, over "
                                f"the {limit:,}-byte limit")
        take = take[:max(1, int(len(take) * limit / size))] if size > 2 * limit else take[:-1]


def _safe_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
            raise CampaignError(f"{archive}: refusing member {m.name!r} (absolute, '..', or not a plain file)")
        if m.name != ARCHIVE_INDEX and parts[0] not in ("published", "window"):
            raise CampaignError(f"{archive}: member {m.name!r} is outside published/ and window/")
    return members


class Refused(Exception):
    """One archive that cannot be imported; the message names it (the other archives go on)."""


def _check_sizes(tar: tarfile.TarFile, members: list[tarfile.TarInfo], archive: Path, limit: int) -> None:
    """Before anything is unpacked: the members' sizes (from the archive's headers) add up to at most `limit`, each
    manifest is small, and each record file has the size its record's manifest lists."""
    total = sum(m.size for m in members if m.isfile())
    if total > limit:
        raise Refused(f"{archive}: would unpack to {total:,} bytes, over the {limit:,}-byte limit of an import "
                      f"({limit // ARCHIVE_LIMIT} times the {ARCHIVE_LIMIT:,}-byte archive limit); nothing unpacked")
    sizes: dict[tuple, dict] = {}
    for m in members:
        parts = Path(m.name).parts
        if m.isfile() and parts[-1] == MANIFEST and len(parts) == 6:
            if m.size > MANIFEST_LIMIT:
                raise Refused(f"{archive}: {m.name} is {m.size:,} bytes, not a manifest; nothing unpacked")
            try:
                man = check_manifest(json.loads(tar.extractfile(m).read()), f"{archive}:{m.name}")
            except (ValueError, StoreError) as e:
                raise Refused(f"{archive}: {e}") from e
            sizes[parts[:5]] = man.get("sizes") or {}
    for m in members:
        parts = Path(m.name).parts
        if not m.isfile() or len(parts) < 6 or parts[-1] == MANIFEST:
            continue
        want = sizes.get(parts[:5], {}).get("/".join(parts[5:]))
        if want is not None and m.size != want:
            raise Refused(f"{archive}: {m.name} is {m.size:,} bytes, its manifest says {want:,}; nothing unpacked")


def _scan_headers(archive: Path, limit: int) -> None:
    """Before tarfile reads a header (it keeps every member's, and reads an extended header whole into memory): walk the
    raw 512-byte tar headers through gzip, skipping the members' data, and refuse an archive with an extended header
    over HEADER_LIMIT bytes, more than MEMBER_LIMIT members, or members declaring more than `limit` bytes. Reads at
    most `limit` bytes of data; an archive it cannot walk is left to tarfile, which names the damage."""
    extended = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
    members = total = 0
    try:
        with gzip.open(archive, "rb") as f:
            while len(block := f.read(tarfile.BLOCKSIZE)) == tarfile.BLOCKSIZE and block.count(0) < tarfile.BLOCKSIZE:
                size, kind = tarfile.nti(block[124:136]), block[156:157]
                if kind in extended and size > HEADER_LIMIT:
                    raise Refused(f"{archive}: an extended header of {size:,} bytes (at most {HEADER_LIMIT:,}); "
                                  f"nothing unpacked")
                if kind not in extended:
                    members += 1
                    total += size if kind in tarfile.REGULAR_TYPES else 0
                if members > MEMBER_LIMIT:
                    raise Refused(f"{archive}: more than {MEMBER_LIMIT:,} members; nothing unpacked")
                if total > limit:
                    raise Refused(f"{archive}: would unpack to at least {total:,} bytes, over the {limit:,}-byte "
                                  f"limit of an import; nothing unpacked")
                skip = -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                if kind in extended or size <= 0:
                    f.read(skip)  # at most HEADER_LIMIT
                else:
                    f.seek(skip, os.SEEK_CUR)
    except (OSError, EOFError, zlib.error, tarfile.HeaderError):
        return  # damaged: tarfile.open and getmembers refuse it with their own message


def _failure(e: OSError, store: Path, action: str) -> str:
    """An OSError in words: the storage's refusal naming the store (a full disk), else the error."""
    err = storage_error(e, store, action)
    return err.strerror if isinstance(err, StorageError) else f"{type(e).__name__}: {e}"


def _import_archive(archive: Path, store: Path, out: dict, limit: int) -> None:
    _scan_headers(archive, limit)  # before tarfile keeps any header
    try:
        tar = tarfile.open(archive, "r:gz")
    except (OSError, tarfile.TarError, EOFError, zlib.error) as e:
        raise Refused(f"{archive}: not a campaign archive ({e})") from e
    tmp = store / temp_name(IMPORT_TEMP)
    try:
        with tar:
            try:
                members = _safe_members(tar, archive)
                _check_sizes(tar, members, archive, limit)
                tmp.mkdir()
                tar.extractall(tmp, members=members, filter="data")
            except (tarfile.TarError, EOFError, zlib.error) as e:
                raise Refused(f"{archive}: truncated or damaged ({type(e).__name__}: {e or 'unexpected end'}); "
                              f"nothing of it was imported") from e
            except OSError as e:
                raise Refused(f"{archive}: {_failure(e, store, 'unpacking into')}; nothing of it was imported") from e
        root = tmp / "published"
        for d in sorted(p.parent for p in root.glob(f"*/runs/*/*/{MANIFEST}")):
            where = f"{archive}:{d.relative_to(tmp)}"
            try:
                m = verify_record(d)
                placed = Path(m["device_slug"], "runs", m["corpus"], f"{m['experiment']}-s{m['seed']}")
                if d.relative_to(root) != placed:
                    raise StoreError(f"{d}: its manifest places it at {placed.as_posix()}")
                check_contents(d)
                target, status = import_record(store, d)
            except StoreError as e:
                out["refused"].append(f"{archive}: {str(e).replace(str(d), where)}")
                continue
            except OSError as e:
                out["refused"].append(f"{where}: {_failure(e, store, 'copying into')}")
                continue
            out[status].append(target)
        for d in sorted(p.parent for p in (tmp / "window").glob(f"*/*/{WINDOW_SUMMARY}")):
            try:
                from .window_records import install_records

                out["windows"].append(target := _import_window(d, store))
                out["bench"] += install_records(target, store, target.parent.parent.name, target.name)
            except (StoreError, OSError, ValueError) as e:
                out["refused"].append(f"{archive}: window {d.relative_to(tmp).as_posix()}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _import_window(d: Path, store: Path) -> Path:
    """A GPU window's folder (sdgm.campaign.gpu_window) into STORE/<device>/windows/<stamp>/, whole or not at all; the
    same window again is a no-op. Its names must be a device slug and a time stamp, its summary a window's."""
    device, stamp = d.parent.name, d.name
    if not SLUG.fullmatch(device) or not WINDOW_STAMP.fullmatch(stamp):
        raise StoreError(f"names {device!r}/{stamp!r} are not a device slug and a UTC time stamp")
    summary = json.loads((d / WINDOW_SUMMARY).read_text())
    if not isinstance(summary, dict) or summary.get("kind") != "gpu_window" or summary.get("stamp") != stamp:
        raise StoreError(f"{WINDOW_SUMMARY} is not the summary of window {stamp}")
    _window_section(d)  # what render makes of it: a window.json that would stop the render is refused here
    target = inside(store, store / device / "windows" / stamp)
    if target.exists():
        return target
    staging = target.parent / temp_name(stamp)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(d, staging)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _cell(value) -> str:
    """Text from a record, safe in a Markdown line or table cell: no tag (& and < escaped), no cell break, no line
    break."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace("|", "&#124;")
    return " ".join(text.splitlines())


def _window_section(w: Path) -> list[str]:
    """One window's part of windows.md; ValueError (or KeyError, TypeError) for a window.json that is not one."""
    summary = json.loads((w / WINDOW_SUMMARY).read_text(encoding="utf-8"))
    if not isinstance(summary, dict) or not isinstance(summary.get("parts", []), list) or \
            not all(isinstance(p, dict) for p in summary.get("parts", [])):
        raise ValueError("its parts are not a list of objects")
    try:
        env = json.loads((w / "env" / "env.json").read_text())
        prov = env["provenance"]
        decoders = "; ".join(f"{r['requested']} -> {r['used']} ({r['reason']})"
                             for r in prov.get("spectral_decoder") or []) or "none resolved"
        about = (f"{prov['device']}, torch {prov['torch']}, CUDA {prov.get('cuda')}, driver "
                 f"{prov.get('driver')}, Triton {env['versions'].get('triton')}, commit "
                 f"{prov.get('git_commit')}; spectral decoder: {decoders}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        about = f"no environment record ({type(e).__name__})"
    page = [f"## {_cell(w.name)} ({_cell(summary.get('minutes'))} min, config {_cell(summary.get('configfile'))})",
            "", _cell(about), "",
            "| part | status | seconds | deadline (s) | reason |", "|---|---|---|---|---|"]
    for p in summary.get("parts", []):
        page.append(f"| {_cell(p.get('part'))} | {_cell(p.get('status'))} | {_cell(p.get('seconds', ''))} | "
                    f"{_cell(p.get('deadline_s', ''))} | {_cell(p.get('reason', ''))} |")
    return page + [""]


def render_windows(store: Path, out: Path, problems: list[str] | None = None) -> list[str]:
    """OUT/<device>/windows.md for each device with GPU windows in the store: per window, the environment, what
    decoder 'auto' resolved to and why, and every part's status, seconds and reason (text from the records escaped).
    A window whose window.json is unreadable or malformed is left out, one line in `problems`. Returns index lines."""
    lines = []
    for dev_dir in sorted(p for p in store.iterdir() if p.is_dir() and (p / "windows").is_dir()):
        page = [f"# GPU windows on {dev_dir.name}", "",
                "Each window's parts in the order they ran (`python -m sdgm.campaign.gpu_window`, docs/campaign.md); "
                "the benchmark records and logs are beside each window's window.json.", ""]
        wins = sorted(p for p in (dev_dir / "windows").iterdir() if (p / WINDOW_SUMMARY).is_file())
        for w in wins:
            try:
                page += _window_section(w)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                if problems is not None:
                    problems.append(f"left out window {w}: {WINDOW_SUMMARY} unusable ({type(e).__name__}: {e})")
        write_text_atomic(no_links(out, out / dev_dir.name / "windows.md"), "\n".join(page))
        lines.append(f"| {dev_dir.name} | {len(wins)} | [{dev_dir.name}/windows.md]({dev_dir.name}/windows.md) |")
    return lines


def import_archives(archives, store: str | Path, unpack_limit: int | None = None) -> dict:
    """Merge archives into the store, record by record, holding the store's lock. Each archive is checked before
    it is unpacked (member names, total and per-file sizes), each record before it is installed (its manifest's
    names, its files against the manifest, its metrics against the schema and physical bounds, its destination
    inside the store); the same record again is a no-op, a published copy of it with files missing is repaired, a
    clash is refused naming both. An archive that is truncated or cannot be unpacked (a full disk) is refused in
    one line and the others go on; an unsafe member name stops the import (CampaignError).
    A GPU window's archive also holds the window's own folder (window/<device>/<stamp>/: its parts' statuses,
    environment, benchmark records and logs), installed whole as STORE/<device>/windows/<stamp>/; its benchmark
    records also go to STORE/<device>/bench/, where sdgm.reporting.claims reads them (window_records.install_records).
    Returns {"new": [...], "same": [...], "repaired": [...], "refused": [messages], "windows": [folders],
    "bench": [benchmark records installed]}."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    out: dict = {"new": [], "same": [], "repaired": [], "refused": [], "windows": [], "bench": []}
    try:
        with store_lock(store, "this import"):
            remove_stale_temporaries(store / IMPORT_TEMP, temp_stale)  # what a killed import left
            for archive in archives:
                try:
                    _import_archive(Path(archive), store, out, unpack_limit or UNPACK_LIMIT)
                except Refused as e:
                    out["refused"].append(str(e))
    except StoreError as e:
        if "the store is in use" not in str(e):
            raise
        raise CampaignError(str(e)) from None
    return out


# ---- rendering from the store --------------------------------------------------------------------------------------

def usable_records(store: str | Path) -> tuple[list[Path], list[str]]:
    """The store's records that match their manifests and hold possible values, and one line for each other."""
    good, problems = [], []
    for d in record_dirs(store):
        try:
            verify_record(d)
            check_contents(d)
            good.append(d)
        except (StoreError, OSError) as e:
            problems.append(f"left out {d}: {e}")
    return good, problems


def render_store(store: str | Path, out: str | Path | None = None) -> dict:
    """Tables and figures of every device from the store's records, one folder per device (never one mean over
    devices): OUT/<device>/tables/{claims,compact,main,ablations,reconstruction,throughput,samples}.* and
    OUT/<device>/figures/,
    and OUT/README.md, the index of records by device. OUT defaults to the store. OUT/RENDER.json says "in progress"
    until every output is written, then lists each output's SHA-256 (check_render names what is not of one render).
    A device whose folders under OUT hold a symbolic link is not rendered (one line); a link in place of README.md
    stops the render (UnsafePath).
    A record that does not match its manifest (a file missing or altered) or holds impossible values is left out,
    and a device whose tables cannot be built is skipped: each is one line in written["problems"] (the caller
    prints them), and the rest is rendered. Returns {device: tables written, "problems": [lines]}."""
    from ..reporting.bench_report import BenchReportError
    from ..reporting import ReportError

    store = Path(store)
    out = Path(out) if out is not None else store
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(no_links(out, out / RENDER_STAMP), {"status": "in progress"})  # until every output is written
    good, problems = usable_records(store)
    only = set(good)
    files = {kind: published_files(store, kind, only) for kind in ("metrics", "samples", "throughput", "gmm",
                                                                    "quality", "config")}
    written: dict = {"problems": problems}
    lines = ["# Published records, by device", "",
             "Every run's weight-free files, as published by `python -m sdgm.campaign.campaign` (docs/campaign.md). "
             "Tables and figures are per device: runs of different devices are never averaged together.", "",
             "| device | records | corpora | experiments | seeds | claims | tables |", "|---|---|---|---|---|---|---|"]
    for dev in sorted(files["metrics"]):
        try:
            for folder in ("tables", "figures"):  # a link committed into the store would take the writes elsewhere
                no_links_below(out, out / dev / folder)
            written[dev] = _render_device(dev, out / dev, {kind: f.get(dev, []) for kind, f in files.items()})
        except (ReportError, BenchReportError, StoreError, OSError, ValueError) as e:
            problems.append(f"device {dev}: tables not rendered ({type(e).__name__}: {e})")
            continue
        mans = [read_manifest(d) for d in good if d.parents[2].name == dev]
        lines.append(f"| {dev} | {len(mans)} | {', '.join(sorted({m['corpus'] for m in mans}))} | "
                     f"{len({m['experiment'] for m in mans})} | {', '.join(str(s) for s in sorted({m['seed'] for m in mans}))}"
                     f" | [{dev}/tables/claims.md]({dev}/tables/claims.md) | [{dev}/tables/main.md]({dev}/tables/main.md) |")
    windows = render_windows(store, out, problems) if store.is_dir() else []
    if windows:
        lines += ["", "GPU windows (`python -m sdgm.campaign.gpu_window`): each part's status, the environment and "
                      "the decoder used.", "", "| device | windows | page |", "|---|---|---|", *windows]
    write_text_atomic(no_links(out, out / "README.md"), "\n".join(lines) + "\n")
    outputs = {p.relative_to(out).as_posix(): sha256_file(p) for p in _render_outputs(out)}
    write_json_atomic(out / RENDER_STAMP, {"status": "complete", "render": _digest(outputs), "files": outputs})
    return written


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _render_outputs(out: Path) -> list[Path]:
    """The files a render writes under OUT: README.md, and every device's tables/, figures/ and windows.md."""
    found = [out / "README.md"] if (out / "README.md").is_file() else []
    for dev in sorted(p for p in out.iterdir() if p.is_dir() and not p.is_symlink()):
        found += sorted(p for sub in ("tables", "figures") for p in (dev / sub).rglob("*") if p.is_file())
        found += [dev / "windows.md"] if (dev / "windows.md").is_file() else []
    return found


def check_render(out: str | Path) -> list[str]:
    """One line for each output under OUT that is not of its last complete render (RENDER_STAMP): a render that was
    interrupted (its outputs may mix two renders) or a file changed, added or removed since. Empty: every output
    is of one render."""
    out = Path(out)
    try:
        stamp = json.loads((out / RENDER_STAMP).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []  # never rendered here
    except (OSError, ValueError) as e:
        return [f"{out / RENDER_STAMP}: unreadable ({e}); render again"]
    if not isinstance(stamp, dict) or stamp.get("status") != "complete" or not isinstance(stamp.get("files"), dict):
        return [f"{out}: the last render did not finish (interrupted?): its tables, claims and README may come from "
                f"two renders; render again"]
    now = {p.relative_to(out).as_posix(): sha256_file(p) for p in _render_outputs(out)}
    def how(name: str) -> str:
        return "not written by" if name not in stamp["files"] else "missing since" if name not in now else \
            "changed since"

    return [f"{out / name}: {how(name)} render {stamp.get('render')}; render again"
            for name in sorted(set(now) | set(stamp["files"])) if now.get(name) != stamp["files"].get(name)]


def _render_device(dev: str, out: Path, files: dict[str, list[Path]]) -> dict:
    """One device's tables and figures into `out` from its records' files, by kind."""
    from ..reporting.bench_report import load_record, throughput_table
    from ..reporting.pages import write_samples_pages
    from ..reporting import build_report, write_table
    from ..reporting.claims import build_claims

    abl: dict = {}
    for cfg in files["config"]:
        abl.update(ablations(yaml.safe_load(cfg.read_text(encoding="utf-8"))))
    tables, figures = out / "tables", out / "figures"
    written = build_report(files["metrics"], tables, figures, ablations=abl)
    if files["throughput"]:
        recs = [load_record(p, "throughput") for p in files["throughput"]]
        written["throughput"] = write_table(throughput_table(recs), tables / "throughput",
                                            f"Throughput of the published runs on {dev}.")
    written["claims"] = build_claims(tables, metrics=files["metrics"], throughput=files["throughput"],
                                     gmm=files["gmm"], quality=files["quality"])
    sample_metrics = [p.parent / "metrics.json" for p in files["samples"]]
    write_samples_pages(files["samples"], sample_metrics, tables / "samples.md", tables / "samples.html")
    return written


# ---- command line --------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdgm.campaign.campaign", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def planning(p):
        p.add_argument("--configfile", required=True, type=Path)
        p.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL,
                       help=f"trainings at once on the GPU (default {DEFAULT_PARALLEL}, docs/campaign.md)")
        p.add_argument("--rates", type=Path, help="CSV model,corpus,tokens_per_s: rates used before the records")
        p.add_argument("--records", type=Path, default=H100_RECORDS,
                       help="committed records to take rates from (default results/h100)")
        p.add_argument("--overhead-min", type=float, default=DEFAULT_OVERHEAD_MIN)
        p.add_argument("--bench-min", type=float, default=DEFAULT_BENCH_MIN)
        p.add_argument("--directory", type=Path, default=Path("."), help="the workflow's working directory")

    r = sub.add_parser("run", help="train, evaluate and publish the highest-priority unfinished runs")
    planning(r)
    r.add_argument("--minutes", type=float, required=True, help="the allocation's time budget")
    r.add_argument("--cores", type=int, default=None)
    r.add_argument("--device-label", default=None, help=f"the store's device folder (default: ${DEVICE_ENV}, else "
                                                        "the device the run trained on)")
    r.add_argument("--archive-dir", type=Path, default=None, help="where the archive goes (default: results_dir)")
    r.add_argument("snakemake_args", nargs="*", help="after --: more Snakemake options (e.g. --use-conda)")
    p = sub.add_parser("plan", help="what a campaign would run, in order, with estimates")
    planning(p)
    p.add_argument("--minutes", type=float, default=None)
    e = sub.add_parser("estimate", help="GPU-minutes of the whole matrix by part, and the allocations it needs")
    planning(e)
    e.add_argument("--allocation-min", type=float, default=25.0)
    k = sub.add_parser("pack", help="pack store records into one archive of at most 16 MiB")
    k.add_argument("--store", type=Path, default=Path("results/published"))
    k.add_argument("--out", type=Path, required=True)
    k.add_argument("--device", action="append", default=[], help="only this device's records (repeatable)")
    k.add_argument("--record", action="append", type=Path, default=[], help="only these record directories")
    i = sub.add_parser("import", help="merge archives into the store")
    i.add_argument("archives", nargs="+", type=Path)
    i.add_argument("--store", type=Path, default=Path("results/published"))
    i.add_argument("--no-render", action="store_true", help="do not render the tables afterwards")
    d = sub.add_parser("render", help="tables and figures per device from the store")
    d.add_argument("--store", type=Path, default=Path("results/published"))
    d.add_argument("--out", type=Path, default=None)
    v = sub.add_parser("verify", help="check every record against its manifest")
    v.add_argument("--store", type=Path, default=Path("results/published"))
    a = ap.parse_args(argv)
    try:
        if a.cmd == "run":
            res = run_campaign(a.configfile, a.minutes, directory=a.directory, parallel=a.parallel, cores=a.cores,
                               device_label=a.device_label, rates_path=a.rates, records=a.records,
                               overhead_min=a.overhead_min, bench_min=a.bench_min, archive_dir=a.archive_dir,
                               extra=a.snakemake_args)
            return 1 if res["failed"] else 0
        if a.cmd in ("plan", "estimate"):
            config = load_config(a.configfile)
            rates = measured_rates(a.records, None, a.rates)
            if a.cmd == "estimate":
                print(format_estimate(matrix_estimate(config, rates, a.parallel, a.overhead_min, a.bench_min,
                                                      a.allocation_min)))
                return 0
            pl = plan(config, published_hashes(store_of(config, a.directory.resolve())), rates, a.parallel, a.overhead_min,
                      a.bench_min, a.minutes)
            print(f"{len(pl['finished'])} run(s) published, {len(pl['todo'])} to do")
            for n, w in enumerate(pl["waves"], 1):
                print(f"wave {n}: {wave_seconds(w) / 60:.1f} min: " + ", ".join(
                    f"{e['run'].corpus}/{e['run'].name} ({e['seconds'] / 60:.1f})" for e in w))
            if pl["unplanned"]:
                print(f"not in this budget: {len(pl['unplanned'])} run(s)")
            return 0
        if a.cmd == "pack":
            recs = a.record or [d for d in record_dirs(a.store) if not a.device or d.parents[2].name in a.device]
            if not recs:
                raise CampaignError(f"{a.store}: no records to pack")
            res = pack(a.store, recs, a.out)
            print(f"packed {len(res['records'])} record(s) into {a.out} ({res['bytes']:,} bytes)")
            for d in res["left_out"]:
                print(f"left out (over {ARCHIVE_LIMIT:,} bytes): {d}")
            return 0
        if a.cmd == "import":
            res = import_archives(a.archives, a.store)
            print(f"imported {len(res['new'])} new record(s), {len(res['same'])} already there"
                  + (f", {len(res['repaired'])} repaired" if res["repaired"] else "")
                  + (f", {len(res['windows'])} GPU window(s)" if res["windows"] else "")
                  + (f", {len(res['bench'])} benchmark record(s)" if res["bench"] else ""))
            for msg in res["refused"]:
                print(f"refused: {msg}", file=sys.stderr)
            problems = [] if a.no_render else render_store(a.store)["problems"]
            for msg in problems:
                print(f"render: {msg}", file=sys.stderr)
            return 1 if res["refused"] or problems else 0
        if a.cmd == "render":
            problems = render_store(a.store, a.out)["problems"]
            for msg in problems:
                print(f"render: {msg}", file=sys.stderr)
            return 1 if problems else 0
        if a.cmd == "verify":
            problems = verify_store(a.store) + check_render(a.store)
            for msg in problems:
                print(msg, file=sys.stderr)
            print(f"{len(record_dirs(a.store))} record(s), {len(problems)} problem(s)")
            return 1 if problems else 0
    except (CampaignError, StoreError, UnsafePath) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
