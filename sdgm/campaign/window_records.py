"""A GPU window's benchmark records into the published store, where the claims ledger reads them.

A window (sdgm.campaign.window) writes its device and scaling benchmarks' records into its folder's records/
(a results folder: bench/throughput/CORPUS/EXP-sSEED.json, bench/generation/..., bench/scaling.json). On import
(python -m sdgm.campaign import) install_records copies them, checked, to STORE/<device>/bench/, so that
python -m sdgm.reporting.claims --records STORE/<device> judges the cost claims from them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..common.atomic import write_bytes_atomic, write_json_atomic
from .record import StoreError
from .store import inside

RECORDS = "records"  # the window's folder of benchmark records, a results folder of its device
BENCH_FILE_LIMIT = 8 * 1024 * 1024  # bytes of one benchmark record (the scaling record at the paper's sizes: ~1 MiB)
BENCH_NAME = re.compile(r"bench/(throughput|generation)/([a-z0-9_]+)/([a-z0-9_]+)-s([0-9]+)\.json|bench/scaling\.json")
SOURCES = "windows.json"  # STORE/<device>/bench/windows.json: each installed record -> the window it came from


def install_records(window_dir: Path, store: Path, device: str, stamp: str) -> list[Path]:
    """The benchmark records of one imported window (window_dir/records/bench/) into STORE/<device>/bench/, the
    layout sdgm.reporting.claims.find_records reads. Each must be a plain file under its size limit, of the kind its
    folder names, its corpus, experiment and seed those of its file name. Of the same file from several windows the
    store keeps the newest window's, but a complete scaling record is not replaced by a partial one (a benchmark
    stopped at its deadline). Returns the files installed; raises StoreError naming the first bad record (nothing
    of this window is installed then)."""
    src = window_dir / RECORDS
    bench = inside(store, store / device / "bench")
    sources_path = bench / SOURCES
    try:
        sources = json.loads(sources_path.read_text(encoding="utf-8")) if sources_path.is_file() else {}
    except ValueError:
        sources = {}
    take = []
    for f in sorted(src.glob("bench/**/*.json")):
        rel = f.relative_to(src).as_posix()
        if rel == "bench/device.json":
            continue
        m = BENCH_NAME.fullmatch(rel)
        if m is None or f.is_symlink() or not f.is_file():
            raise StoreError(f"{rel}: not a benchmark record's name")
        if f.stat().st_size > BENCH_FILE_LIMIT:
            raise StoreError(f"{rel}: {f.stat().st_size:,} bytes, over the {BENCH_FILE_LIMIT:,}-byte limit")
        data = f.read_bytes()
        try:
            rec = json.loads(data)
        except ValueError as e:
            raise StoreError(f"{rel}: not JSON ({e})") from e
        kind = m.group(1) or "scaling"
        if not isinstance(rec, dict) or rec.get("kind") != kind:
            raise StoreError(f"{rel}: not a {kind} record")
        if kind != "scaling" and (rec.get("corpus"), rec.get("experiment"), str(rec.get("seed"))) != m.group(2, 3, 4):
            raise StoreError(f"{rel}: its record is of {rec.get('corpus')}/{rec.get('experiment')}-s{rec.get('seed')}")
        rank = [stamp, rec.get("complete", True) is not False]  # newest window; complete before partial
        old = sources.get(rel)
        if old is not None and (kind == "scaling" and old[1] and not rank[1] or old[0] >= stamp):
            continue
        take.append((rel, data, rank))
    installed = []
    for rel, data, rank in take:
        write_bytes_atomic(inside(store, bench.parent / rel), data)
        sources[rel] = rank
        installed.append(bench.parent / rel)
    if take:
        write_json_atomic(sources_path, sources)
    return installed
