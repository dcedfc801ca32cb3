"""The campaign's scheduler: the runs of a config that no device has published yet, in waves of Snakemake calls
that fit the time left, stopped (with every job they started) at the deadline.

`run_campaign` takes the runs of the config that no device has published yet (sdgm.campaign.store), highest priority
first: seed 0 of every experiment on every corpus (main experiments, then ablations), then seed 1, then seed 2. It
estimates each run's time from its tokens and a measured training rate (sdgm.campaign.costs: the committed records
under results/h100 and the store's own records, or a --rates table) and hands Snakemake waves of at most --parallel
runs that fit the time left, with the runs' store receipts as targets (rule store_run, workflow/rules/store.smk).
Snakemake trains them at once on the one GPU, finishes each run's GMM, samples and throughput, and publishes each
record as it finishes. No run is started that the estimate says cannot finish; at the deadline Snakemake and its
jobs are stopped (what is published stays, the rest is redone by the next campaign). At the end the records new to
the store are packed into one archive (sdgm.campaign.archive). A second campaign with the same config continues
where this one left off.

For tests and planning, SDGM_CAMPAIGN_CLOCK=estimate makes the budget count the estimated time of each wave
instead of the wall clock.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..harness import config as config_module
from ..harness.config import Run, benchmarked_runs
from .archive import ARCHIVE_LIMIT, pack
from .costs import (
    DEFAULT_BENCH_MIN,
    DEFAULT_OVERHEAD_MIN,
    DEFAULT_PARALLEL,
    H100_RECORDS,
    CampaignError,
    estimate_run,
    measured_rates,
    next_wave,
    priority_order,
    wave_seconds,
)
from .record import StoreError, read_manifest
from .store import DEVICE_ENV, device_slug, published_hashes, record_dirs, store_lock

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "workflow" / "Snakefile"
STOP_GRACE_S = 60.0  # at the deadline: seconds between TERM and KILL of Snakemake and its jobs
CLOCK_ENV = "SDGM_CAMPAIGN_CLOCK"


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


def group_alive(pgid: int) -> bool:
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


def stop(proc: subprocess.Popen, grace_s: float | None = None) -> None:
    """Stop Snakemake and every job it started (they share its process group, started in a session of its own):
    TERM to the group (Snakemake marks its jobs' outputs incomplete; a training checkpoints its step and exits),
    then KILL to whatever of the group is left after `grace_s`. No training outlives the campaign holding its lock."""
    grace_s = STOP_GRACE_S if grace_s is None else grace_s
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    end = time.monotonic() + grace_s
    while time.monotonic() < end:
        proc.poll()
        if not group_alive(proc.pid):
            break
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    end = time.monotonic() + 10
    while group_alive(proc.pid) and time.monotonic() < end:  # KILL is delivered at once, the exit takes a moment
        time.sleep(0.05)


def snakemake_base(config_path: Path, directory: Path) -> list[str]:
    """The start of every Snakemake command of a campaign: this interpreter, the workflow, the directory, the config."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "--directory",
        str(directory),
        "--configfile",
        str(config_path),
    ]


def snakemake_command(
    config_path: Path, directory: Path, targets: list[str], parallel: int, cores: int, extra: list[str]
) -> list[str]:
    threads = max(1, cores // parallel)
    return [
        *snakemake_base(config_path, directory),
        "--cores",
        str(cores),
        "--resources",
        f"gpu={parallel}",
        "--set-threads",
        f"train={threads}",
        "--keep-going",
        "--rerun-incomplete",
        *extra,
        "--",
        *targets,
    ]


def snakemake_wave(
    config_path: Path,
    directory: Path,
    targets: list[str],
    parallel: int,
    cores: int,
    deadline_s: float | None,
    store: Path,
    log,
    extra: list[str],
    device_label: str | None,
) -> bool:
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
            stop(proc)
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


def run_campaign(
    config_path: str | Path,
    minutes: float,
    *,
    directory: str | Path = ".",
    parallel: int = DEFAULT_PARALLEL,
    cores: int | None = None,
    device_label: str | None = None,
    rates_path=None,
    records=H100_RECORDS,
    overhead_min: float = DEFAULT_OVERHEAD_MIN,
    bench_min: float = DEFAULT_BENCH_MIN,
    archive_dir: str | Path | None = None,
    extra: list[str] = (),
) -> dict:
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
        subprocess.run(
            [*snakemake_base(config_path, directory), "--unlock"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wave_no = 0
        while True:
            done = published_hashes(store)
            todo = [
                estimate_run(config, r, rates, parallel, overhead_min, bench_min, bench)
                for r in priority_order(config)
                if r.run_hash not in done and r not in failed
            ]
            remaining = budget - clock.elapsed()
            wave = next_wave(todo, remaining, parallel)
            if not todo:
                print(
                    "campaign: every run of the config is published"
                    if not failed
                    else f"campaign: every run of the config is published except {len(failed)} that failed in this "
                    f"campaign: " + ", ".join(f"{r.corpus}/{r.name}" for r in failed),
                    flush=True,
                )
                break
            if not wave:
                print(
                    f"campaign: {len(todo)} run(s) left; the next ({todo[0]['run'].corpus}/{todo[0]['run'].name}, "
                    f"{todo[0]['seconds'] / 60:.1f} min estimated) does not fit the {max(remaining, 0) / 60:.1f} "
                    f"min left",
                    flush=True,
                )
                break
            wave_no += 1
            est = wave_seconds(wave)
            print(
                f"campaign: wave {wave_no}, {len(wave)} run(s), {est / 60:.1f} min estimated, "
                f"{remaining / 60:.1f} min left:",
                flush=True,
            )
            for e in wave:
                print(
                    f"  {e['run'].corpus}/{e['run'].name}: {e['tokens']['train'] + e['tokens']['eval']:,} tokens at "
                    f"{e['rate']:,.0f} tok/s ({e['rate_source']}), {e['seconds'] / 60:.1f} min",
                    flush=True,
                )
            deadline = None if clock.mode == "estimate" else max(remaining, 1.0)
            finished = snakemake_wave(
                config_path,
                directory,
                [receipt(config, e["run"]) for e in wave],
                parallel,
                cores,
                deadline,
                store,
                log,
                list(extra),
                device_label,
            )
            clock.waited(est)
            done = published_hashes(store)
            if not finished:  # stopped at the deadline: what is unpublished is left for the next campaign
                stopped.extend(e["run"] for e in wave if e["run"].run_hash not in done)
                break
            for e in wave:
                if e["run"].run_hash not in done:
                    failed.append(e["run"])
                    print(
                        f"  not published: {e['run'].corpus}/{e['run'].name} (log: {logs / (stamp + '.log')})",
                        flush=True,
                    )
            if clock.mode == "wall" and clock.elapsed() >= budget:
                break
        new = sorted(set(record_dirs(store)) - before)
    print(
        f"campaign: {len(new)} record(s) published in this campaign, {len(failed)} run(s) failed, "
        f"{len(stopped)} stopped at the deadline",
        flush=True,
    )
    archive = None
    if new:
        label = (
            device_slug("", device_label)
            if device_label or os.environ.get(DEVICE_ENV)
            else "-".join(sorted({read_manifest(d)["device_slug"] for d in new}))
        )
        out = Path(archive_dir).resolve() if archive_dir else directory / config["results_dir"]
        archive = out / f"campaign-{label}-{stamp}.tar.gz"
        packed = pack(store, new, archive)
        print(
            f"campaign: packed {len(packed['records'])} record(s) into {archive} ({packed['bytes']:,} bytes)",
            flush=True,
        )
        if packed["left_out"]:
            print(
                f"campaign: {len(packed['left_out'])} record(s) did not fit {ARCHIVE_LIMIT:,} bytes; pack them "
                f"with `python -m sdgm.campaign pack --store {store} --record DIR ...`: "
                + ", ".join(str(d) for d in packed["left_out"]),
                flush=True,
            )
    return {"published": new, "failed": failed, "stopped": stopped, "archive": archive}
