"""One command for a short GPU window: the verdict first, then as much of the campaign as the minutes allow.

    python -m sdgm.campaign.window --minutes 10                         # the paper config, on the default device
    python -m sdgm.campaign.window --minutes 3 --configfile config/quick.yaml --directory /tmp/w --out /tmp/w
    python -m sdgm.campaign.window install [--offline] [--dry-run]      # the project onto the machine's own torch
    python -m sdgm.campaign import results/windows/window-*.tar.gz         # back home: merge and render per device

It prints its plan, then runs each part in a process (group) of its own under its own deadline, in this order:

    env         the environment: GPU, driver, torch, Triton, CUDA, commit; the on-device check of the Triton
                kernels (sdgm.spectral.ops.dispatch.check_kernels) and what decoder 'auto' resolved to
    device      the device benchmark of results/cpu (python -m sdgm.bench.device, with its flags): parameters,
                training and scoring speed and memory, and generation of each model, fresh weights at the config's
                sizes; first the experiments this device's committed records lack, each written as it finishes
    scaling     the scaling benchmark at the config's sizes (python -m sdgm.bench.scaling --budget-s): both views,
                shortest lengths first, a case predicted not to fit its budget skipped, written after every case
    gpu_tier    pytest -m gpu (tests/test_gpu.py): every model on the device, the kernels, NVML, compile, NCCL;
                one JSON line per finished test (sdgm.campaign.pytest_lines)
    campaign    python -m sdgm.campaign run for the minutes left: seed 0 of every experiment before seeds 1, 2

The order is what each part adds to the verdict per minute: the environment and the kernel check decide whether
the rest can be trusted; the benchmarks write the records the claims ledger reads (the cost claims: parameters,
memory, speed, latency, O(KL)), which no training can, starting with what the device's column lacks; the GPU tier
finds a regression; training runs advance the perplexity claims only by whole runs. A part's deadline is its share
of the window plus whatever the parts before it left unused. A part that fails or passes its deadline is recorded
with its error and the window goes on; a part that no longer fits is recorded as skipped.

Everything goes into one archive (OUT/window-<stamp>.tar.gz, at most 16 MiB), rewritten whole (atomically) after
every part and every few seconds while a part writes files: ARCHIVE.json, window/<device>/<stamp>/window.json (the
plan and every part's status, seconds and reason), the benchmarks' records under window/<device>/<stamp>/records/
(a results folder: bench/throughput, bench/generation, bench/scaling.json, bench/device.json), each part's files
under window/<device>/<stamp>/<part>/ (logs cut to their last 256 KiB), and the campaign's new records under
published/. A window killed at any point leaves the archive of what had finished; `campaign import` installs the
benchmark records in results/published/<device>/bench/, where `python -m sdgm.reporting.claims --records` reads them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..common.atomic import write_json_atomic
from ..common.usage import command_parser
from .archive import ARCHIVE_LIMIT, pack_window
from .render import WINDOW_SUMMARY
from .window_env import add_install_options, install
from .window_parts import PARTS, WindowError, judge, part_command, part_env
from .window_records import RECORDS

REPO = Path(__file__).resolve().parents[2]
PACK_RESERVE_S = 10.0  # seconds kept at the end of the window for the last archive
STOP_GRACE_S = 10.0  # TERM, then KILL this much later, to a part past its deadline
REFRESH_S = 5.0  # while a part runs, the archive is rewritten at most this often when its files changed
WINDOW_SCHEMA = 1


# ---- the plan --------------------------------------------------------------------------------------------------
def plan(minutes: float) -> list[dict]:
    """Each part with its budget in seconds: its share of the window, at least its minimum (the campaign: all that
    is left); printed before anything runs. The actual deadlines add what earlier parts left unused."""
    total = minutes * 60 - PACK_RESERVE_S
    out, used = [], 0.0
    for p in PARTS:
        budget = total - used if p.name == "campaign" else max(p.share * minutes * 60, p.min_s)
        budget = max(0.0, min(budget, total - used))
        out.append({"part": p.name, "what": p.what, "budget_s": round(budget, 1), "min_s": p.min_s})
        used += budget
    return out


def format_plan(rows: list[dict], minutes: float) -> str:
    lines = [
        f"gpu window: {minutes:g} min, {len(rows)} parts in this order (each under its own deadline; what a "
        f"part leaves unused goes to the next):"
    ]
    lines += [f"  {n}. {r['part']:<10} {r['budget_s'] / 60:5.1f} min  {r['what']}" for n, r in enumerate(rows, 1)]
    return "\n".join(lines)


# ---- running a part ----------------------------------------------------------------------------------------------
def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}


def run_part(
    cmd: list[str], log_path: Path, deadline_s: float, cwd: Path = REPO, tick=None
) -> tuple[int | None, float]:
    """Run `cmd` in a session of its own, output to log_path; past deadline_s TERM its group, KILL it
    STOP_GRACE_S later; `tick()` is called every REFRESH_S while it runs. (exit status, or None where it was
    stopped at the deadline; seconds)."""
    from ..harness.distributed import die_with_parent
    from .waves import stop

    t0, me = time.monotonic(), os.getpid()
    end = t0 + max(1.0, deadline_s)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: die_with_parent(me),
        )
        try:
            while True:
                try:
                    rc = proc.wait(timeout=max(0.0, min(REFRESH_S, end - time.monotonic())))
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() >= end:
                        raise
                    if tick is not None:
                        tick()
        except subprocess.TimeoutExpired:
            stop(proc, STOP_GRACE_S)
            rc = None
        except BaseException:  # the window itself is stopped: take the part down with it
            stop(proc, STOP_GRACE_S)
            raise
    return rc, time.monotonic() - t0


class Window:
    """One window: its folder, the parts' statuses, and the archive rewritten after each change."""

    def __init__(
        self,
        minutes: float,
        configfile: Path,
        out: Path,
        directory: Path,
        device: str,
        device_label: str | None,
        parts: tuple[str, ...] | None = None,
    ):
        self.minutes, self.configfile, self.device = minutes, configfile.resolve(), device
        self.directory, self.device_label = directory.resolve(), device_label
        self.stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        self.out = out.resolve()
        self.dir = self.out / f"window-{self.stamp}"  # the parts' files; window.json
        self.archive = self.out / f"window-{self.stamp}.tar.gz"
        self.plan = [r for r in plan(minutes) if parts is None or r["part"] in parts]
        self.status = {r["part"]: {"status": "not run", "reason": "the window ended before it"} for r in self.plan}
        self.start = time.monotonic()
        self.records: list[Path] = []  # the campaign's new records
        self.extra: dict[str, dict] = {}  # what a part's status also says (the device part: its order and why)
        self._seen: tuple = ()  # the window folder's files (name, size, mtime) at the last archive
        self.left_out: list[str] = []
        from .waves import load_config, store_of

        self._store = store_of(load_config(self.configfile), self.directory)  # a bad config stops it here

    # -- the record of the window --
    def device_slug(self) -> str:
        from .store import device_slug

        if self.device_label:
            return device_slug("", self.device_label)
        try:
            return device_slug(json.loads((self.dir / "env" / "env.json").read_text())["provenance"]["device"])
        except (OSError, ValueError, KeyError, TypeError):
            return "unknown-device"

    def summary(self) -> dict:
        return {
            "schema": WINDOW_SCHEMA,
            "kind": "gpu_window",
            "stamp": self.stamp,
            "device": self.device_slug(),
            "minutes": self.minutes,
            "configfile": self.configfile.name,
            "requested_device": self.device,
            "elapsed_s": round(time.monotonic() - self.start, 1),
            "plan": self.plan,
            "parts": [{"part": r["part"], **self.status[r["part"]]} for r in self.plan],
            "campaign_records": [d.relative_to(self.store()).as_posix() for d in self.records],
            "campaign_records_left_out": self.left_out,
        }

    def store(self) -> Path:
        return self._store

    def write(self) -> None:
        """window.json, then the archive of everything so far (atomically: a kill leaves the last one whole)."""
        write_json_atomic(self.dir / WINDOW_SUMMARY, self.summary())
        self._seen = self.files()
        self.write_archive(ARCHIVE_LIMIT)

    # -- the parts --
    def command(self, name: str, part_dir: Path, seconds: float) -> tuple[list[str], Path] | str:
        """The part's command and working directory, or why it cannot run here (sdgm.campaign.window_parts)."""
        return part_command(self, name, part_dir, seconds)

    def left(self) -> float:
        return self.minutes * 60 - PACK_RESERVE_S - (time.monotonic() - self.start)

    def run(self) -> dict:

        print(format_plan(self.plan, self.minutes), flush=True)
        # TERM (the machine is taken back) stops the running part like a deadline does (run_part); the archive of
        # what finished was written after the last part
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.write()
        carried, name = 0.0, None  # seconds the parts so far left unused
        try:
            for row in self.plan:
                name = row["part"]
                carried = self.run_one(row, carried)
        except BaseException:  # stopped (TERM, Ctrl-C): what finished is archived, the running part named
            if name is not None and self.status[name].get("status") == "running":
                self.status[name] = {
                    **self.status[name],
                    "status": "stopped",
                    "reason": "the window was stopped while it ran",
                }
            self.write()
            raise
        print(
            f"gpu window: archive {self.archive} ({self.archive.stat().st_size:,} bytes); import it with "
            f"`python -m sdgm.campaign import {self.archive}`",
            flush=True,
        )
        return self.summary()

    def run_one(self, row: dict, carried: float) -> float:
        """Run one part under its deadline and record it; the seconds it left unused."""
        from .store import record_dirs

        name = row["part"]
        # its budget and what the parts before it left unused; the campaign: all that is left
        budget = self.left() if name == "campaign" else min(row["budget_s"] + carried, self.left())
        if budget < row["min_s"]:
            self.status[name] = {
                "status": "skipped",
                "reason": f"{max(budget, 0):.0f} s left, the part needs at least {row['min_s']:.0f} s",
            }
            print(f"gpu window: {name}: skipped ({self.status[name]['reason']})", flush=True)
            self.write()
            return carried
        part_dir = self.dir / name
        part_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command(name, part_dir, budget)
        if isinstance(cmd, str):
            self.status[name] = {"status": "skipped", "reason": cmd}
            print(f"gpu window: {name}: skipped ({cmd})", flush=True)
            self.write()
            return carried
        self.status[name] = {
            "status": "running",
            "reason": "started; the window ended before it finished",
            "deadline_s": round(budget, 1),
            **self.extra.get(name, {}),
        }
        self.write()
        before = set(record_dirs(self.store())) if name == "campaign" else set()
        print(f"gpu window: {name}: up to {budget:.0f} s: {' '.join(cmd[0][2:])}", flush=True)
        try:
            rc, seconds = run_part(cmd[0], part_dir / "log.txt", budget, cmd[1], tick=self.refresh)
        except OSError as e:  # the part could not start (a missing program or folder): recorded, the window goes on
            self.status[name] = {"status": "failed", "reason": f"could not start: {e}", "seconds": 0.0}
            print(f"gpu window: {name}: failed ({self.status[name]['reason']})", flush=True)
            self.write()
            return budget
        self.status[name] = {**self.judge(name, rc, seconds, budget, part_dir), **self.extra.get(name, {})}
        if name == "campaign":
            # in the order they were published, which is the campaign's priority order
            self.records = sorted(
                set(record_dirs(self.store())) - before, key=lambda d: ((d / "manifest.json").stat().st_mtime_ns, d)
            )
            self.status[name]["records"] = len(self.records)
        print(
            f"gpu window: {name}: {self.status[name]['status']} in {seconds:.0f} s"
            + (f" ({self.status[name]['reason']})" if self.status[name].get("reason") else ""),
            flush=True,
        )
        self.write()
        return max(0.0, budget - seconds)

    def files(self) -> tuple:
        out = []
        for f in self.dir.rglob("*"):
            try:
                st = f.stat()
            except OSError:  # a temporary, gone since the listing
                continue
            out.append((str(f), st.st_size, st.st_mtime_ns))
        return tuple(sorted(out))

    def refresh(self) -> None:
        """While a part runs: the archive again if any file of the window changed (a record, a test's line)."""
        if self.files() != self._seen:
            self.write()

    def judge(self, name: str, rc: int | None, seconds: float, budget: float, part_dir: Path) -> dict:
        return judge(name, rc, seconds, budget, part_dir, self.dir / RECORDS)

    def write_archive(self, limit: int = ARCHIVE_LIMIT) -> dict:
        """The window's archive with as many of the campaign's records (in priority order) as fit `limit`."""
        take, size = pack_window(
            self.archive, self.dir, f"window/{self.device_slug()}/{self.stamp}", self.store(), self.records, limit
        )
        self.left_out = [d.name for d in self.records[len(take) :]]
        if size > limit:
            raise WindowError(f"{self.archive}: {size:,} bytes without any record, over {limit:,}")
        return {"bytes": size, "records": take}


# ---- command line ----------------------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    ap = command_parser("python -m sdgm.campaign.window", __doc__, epilog=False)
    ap.add_argument("--minutes", type=float, help="the window's compute time (required to run a window)")
    ap.add_argument("--configfile", type=Path, default=REPO / "config" / "config.yaml")
    ap.add_argument(
        "--out", type=Path, default=Path("results/windows"), help="where the window's folder and archive go"
    )
    ap.add_argument("--directory", type=Path, default=Path("."), help="the campaign's workflow directory")
    ap.add_argument("--device", default="auto", help="auto, cuda, cuda:N, cpu")
    ap.add_argument("--device-label", default=None, help="the store's device folder (default: the GPU's name)")
    ap.add_argument(
        "--parts",
        type=lambda t: tuple(t.split(",")),
        default=None,
        help="only these parts (comma-separated): " + ",".join(p.name for p in PARTS),
    )
    ap.add_argument("--plan", action="store_true", help="print the plan and stop")
    sub = ap.add_subparsers(dest="cmd", metavar="{install,part}", help="without one: run a window")
    add_install_options(
        sub.add_parser("install", help="the project onto the machine's own torch (sdgm.campaign.window_env install)")
    )
    part = sub.add_parser("part", help="run one part here (what the window runs in a process of its own)")
    part.add_argument("name", choices=("env",))
    part.add_argument("--out", type=Path, required=True)
    part.add_argument("--device", default="auto")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    a = ap.parse_args(argv)
    if a.cmd == "install":
        return install(a.offline, a.dry_run)
    if a.cmd == "part":
        a.out.mkdir(parents=True, exist_ok=True)
        part_env(a.out, a.device)
        return 0
    if a.minutes is None or a.minutes <= 0:
        ap.error("--minutes is required and must be positive")
    if a.parts and set(a.parts) - {p.name for p in PARTS}:
        ap.error(f"unknown part(s): {', '.join(sorted(set(a.parts) - {p.name for p in PARTS}))}")
    if a.plan:
        print(format_plan([r for r in plan(a.minutes) if not a.parts or r["part"] in a.parts], a.minutes))
        return 0
    w = Window(a.minutes, a.configfile, a.out, a.directory, a.device, a.device_label, a.parts)
    summary = w.run()
    return 1 if any(p["status"] == "failed" for p in summary["parts"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
