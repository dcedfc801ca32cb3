"""A campaign: one GPU allocation of a few minutes advances the paper-wide result, and the results accumulate.

    python -m sdgm.campaign run --minutes 25 --configfile config/config.yaml  # train, evaluate, publish, pack
    python -m sdgm.campaign import results/campaign-*.tar.gz                  # merge archives into the store
    python -m sdgm.campaign render                                            # the store's tables per device
    python -m sdgm.campaign plan|estimate|pack|verify ...                     # see --help

`run` publishes the highest-priority runs no device has published yet, in waves that fit the minutes
(sdgm.campaign.waves), and packs the records new to the store into one archive of at most 16 MiB
(sdgm.campaign.archive); `import` merges archives into the store and renders it (sdgm.campaign.render).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..common.atomic import UnsafePath
from .archive import ARCHIVE_LIMIT, import_archives, pack
from .costs import (
    DEFAULT_BENCH_MIN,
    DEFAULT_OVERHEAD_MIN,
    DEFAULT_PARALLEL,
    H100_RECORDS,
    CampaignError,
    format_estimate,
    matrix_estimate,
    measured_rates,
    plan,
    wave_seconds,
)
from .record import StoreError
from .render import check_render, render_store
from .store import DEVICE_ENV, published_hashes, record_dirs, verify_store
from .waves import load_config, run_campaign, store_of


def cmd_run(a) -> int:
    res = run_campaign(
        a.configfile,
        a.minutes,
        directory=a.directory,
        parallel=a.parallel,
        cores=a.cores,
        device_label=a.device_label,
        rates_path=a.rates,
        records=a.records,
        overhead_min=a.overhead_min,
        bench_min=a.bench_min,
        archive_dir=a.archive_dir,
        extra=a.snakemake_args,
    )
    return 1 if res["failed"] else 0


def cmd_estimate(a) -> int:
    config = load_config(a.configfile)
    rates = measured_rates(a.records, None, a.rates)
    print(format_estimate(matrix_estimate(config, rates, a.parallel, a.overhead_min, a.bench_min, a.allocation_min)))
    return 0


def cmd_plan(a) -> int:
    config = load_config(a.configfile)
    rates = measured_rates(a.records, None, a.rates)
    pl = plan(
        config,
        published_hashes(store_of(config, a.directory.resolve())),
        rates,
        a.parallel,
        a.overhead_min,
        a.bench_min,
        a.minutes,
    )
    print(f"{len(pl['finished'])} run(s) published, {len(pl['todo'])} to do")
    for n, w in enumerate(pl["waves"], 1):
        print(
            f"wave {n}: {wave_seconds(w) / 60:.1f} min: "
            + ", ".join(f"{e['run'].corpus}/{e['run'].name} ({e['seconds'] / 60:.1f})" for e in w)
        )
    if pl["unplanned"]:
        print(f"not in this budget: {len(pl['unplanned'])} run(s)")
    return 0


def cmd_pack(a) -> int:
    recs = a.record or [d for d in record_dirs(a.store) if not a.device or d.parents[2].name in a.device]
    if not recs:
        raise CampaignError(f"{a.store}: no records to pack")
    res = pack(a.store, recs, a.out)
    print(f"packed {len(res['records'])} record(s) into {a.out} ({res['bytes']:,} bytes)")
    for d in res["left_out"]:
        print(f"left out (over {ARCHIVE_LIMIT:,} bytes): {d}")
    return 0


def cmd_import(a) -> int:
    res = import_archives(a.archives, a.store)
    print(
        f"imported {len(res['new'])} new record(s), {len(res['same'])} already there"
        + (f", {len(res['repaired'])} repaired" if res["repaired"] else "")
        + (f", {len(res['windows'])} GPU window(s)" if res["windows"] else "")
        + (f", {len(res['bench'])} benchmark record(s)" if res["bench"] else "")
    )
    for msg in res["refused"]:
        print(f"refused: {msg}", file=sys.stderr)
    problems = [] if a.no_render else render_store(a.store)["problems"]
    for msg in problems:
        print(f"render: {msg}", file=sys.stderr)
    return 1 if res["refused"] or problems else 0


def cmd_render(a) -> int:
    problems = render_store(a.store, a.out)["problems"]
    for msg in problems:
        print(f"render: {msg}", file=sys.stderr)
    return 1 if problems else 0


def cmd_verify(a) -> int:
    problems = verify_store(a.store) + check_render(a.store)
    for msg in problems:
        print(msg, file=sys.stderr)
    print(f"{len(record_dirs(a.store))} record(s), {len(problems)} problem(s)")
    return 1 if problems else 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m sdgm.campaign", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def command(name: str, func, help: str, planning: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        if planning:
            p.add_argument("--configfile", required=True, type=Path)
            p.add_argument(
                "--parallel",
                type=int,
                default=DEFAULT_PARALLEL,
                help=f"trainings at once on the GPU (default {DEFAULT_PARALLEL}, docs/campaign.md)",
            )
            p.add_argument("--rates", type=Path, help="CSV model,corpus,tokens_per_s: rates used before the records")
            p.add_argument(
                "--records",
                type=Path,
                default=H100_RECORDS,
                help="committed records to take rates from (default results/h100)",
            )
            p.add_argument("--overhead-min", type=float, default=DEFAULT_OVERHEAD_MIN)
            p.add_argument("--bench-min", type=float, default=DEFAULT_BENCH_MIN)
            p.add_argument("--directory", type=Path, default=Path("."), help="the workflow's working directory")
        return p

    r = command("run", cmd_run, "train, evaluate and publish the highest-priority unfinished runs", planning=True)
    r.add_argument("--minutes", type=float, required=True, help="the allocation's time budget")
    r.add_argument("--cores", type=int, default=None)
    r.add_argument(
        "--device-label",
        default=None,
        help=f"the store's device folder (default: ${DEVICE_ENV}, else the device the run trained on)",
    )
    r.add_argument("--archive-dir", type=Path, default=None, help="where the archive goes (default: results_dir)")
    r.add_argument("snakemake_args", nargs="*", help="after --: more Snakemake options (e.g. --use-conda)")
    command("plan", cmd_plan, "what a campaign would run, in order, with estimates", planning=True).add_argument(
        "--minutes", type=float, default=None
    )
    command(
        "estimate", cmd_estimate, "GPU-minutes of the whole matrix by part, and the allocations it needs", planning=True
    ).add_argument("--allocation-min", type=float, default=25.0)
    k = command("pack", cmd_pack, "pack store records into one archive of at most 16 MiB")
    k.add_argument("--out", type=Path, required=True)
    k.add_argument("--device", action="append", default=[], help="only this device's records (repeatable)")
    k.add_argument("--record", action="append", type=Path, default=[], help="only these record directories")
    i = command("import", cmd_import, "merge archives into the store")
    i.add_argument("archives", nargs="+", type=Path)
    i.add_argument("--no-render", action="store_true", help="do not render the tables afterwards")
    command("render", cmd_render, "tables and figures per device from the store").add_argument(
        "--out", type=Path, default=None
    )
    command("verify", cmd_verify, "check every record against its manifest")
    for name in ("pack", "import", "render", "verify"):
        sub.choices[name].add_argument("--store", type=Path, default=Path("results/published"))
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        return a.func(a)
    except (CampaignError, StoreError, UnsafePath) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
