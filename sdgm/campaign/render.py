"""The store rendered: one folder of tables and figures per device (never one mean over devices), the index of
records by device, and a page of GPU windows per device.

    python -m sdgm.campaign render [--store results/published] [--out DIR]

`import` renders after merging; `verify` checks that every output is of one complete render (check_render).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from ..common.atomic import no_links, no_links_below, sha256_file, write_json_atomic, write_text_atomic
from ..harness.config import ablations
from .record import StoreError, check_contents, read_manifest, verify_record
from .store import published_files, record_dirs

RENDER_STAMP = "RENDER.json"  # OUT/RENDER.json: "in progress" during a render, then the digest of every output
WINDOW_SUMMARY = "window.json"  # a GPU window's summary: window/<device>/<stamp>/window.json of its archive


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
    from ..reporting import ReportError
    from ..reporting.bench_report import BenchReportError

    store = Path(store)
    out = Path(out) if out is not None else store
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(no_links(out, out / RENDER_STAMP), {"status": "in progress"})  # until every output is written
    good, problems = usable_records(store)
    only = set(good)
    files = {
        kind: published_files(store, kind, only)
        for kind in ("metrics", "samples", "throughput", "gmm", "quality", "config")
    }
    written: dict = {"problems": problems}
    lines = [
        "# Published records, by device",
        "",
        "Every run's weight-free files, as published by `python -m sdgm.campaign` (docs/campaign.md). "
        "Tables and figures are per device: runs of different devices are never averaged together.",
        "",
        "| device | records | corpora | experiments | seeds | claims | tables |",
        "|---|---|---|---|---|---|---|",
    ]
    for dev in sorted(files["metrics"]):
        try:
            for folder in ("tables", "figures"):  # a link committed into the store would take the writes elsewhere
                no_links_below(out, out / dev / folder)
            written[dev] = _render_device(dev, out / dev, {kind: f.get(dev, []) for kind, f in files.items()})
        except (ReportError, BenchReportError, StoreError, OSError, ValueError) as e:
            problems.append(f"device {dev}: tables not rendered ({type(e).__name__}: {e})")
            continue
        mans = [read_manifest(d) for d in good if d.parents[2].name == dev]
        lines.append(
            f"| {dev} | {len(mans)} | {', '.join(sorted({m['corpus'] for m in mans}))} | "
            f"{len({m['experiment'] for m in mans})} | {', '.join(str(s) for s in sorted({m['seed'] for m in mans}))}"
            f" | [{dev}/tables/claims.md]({dev}/tables/claims.md) | [{dev}/tables/main.md]({dev}/tables/main.md) |"
        )
    windows = render_windows(store, out, problems) if store.is_dir() else []
    if windows:
        lines += [
            "",
            "GPU windows (`python -m sdgm.campaign.window`): each part's status, the environment and the decoder used.",
            "",
            "| device | windows | page |",
            "|---|---|---|",
            *windows,
        ]
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
        return [
            f"{out}: the last render did not finish (interrupted?): its tables, claims and README may come from "
            f"two renders; render again"
        ]
    now = {p.relative_to(out).as_posix(): sha256_file(p) for p in _render_outputs(out)}

    def how(name: str) -> str:
        return (
            "not written by" if name not in stamp["files"] else "missing since" if name not in now else "changed since"
        )

    return [
        f"{out / name}: {how(name)} render {stamp.get('render')}; render again"
        for name in sorted(set(now) | set(stamp["files"]))
        if now.get(name) != stamp["files"].get(name)
    ]


def _render_device(dev: str, out: Path, files: dict[str, list[Path]]) -> dict:
    """One device's tables and figures into `out` from its records' files, by kind."""
    from ..reporting import build_report, write_table
    from ..reporting.bench_report import load_record, throughput_table
    from ..reporting.claims import build_claims
    from ..reporting.pages import write_samples_pages

    abl: dict = {}
    for cfg in files["config"]:
        abl.update(ablations(yaml.safe_load(cfg.read_text(encoding="utf-8"))))
    tables, figures = out / "tables", out / "figures"
    written = build_report(files["metrics"], tables, figures, ablations=abl)
    if files["throughput"]:
        recs = [load_record(p, "throughput") for p in files["throughput"]]
        written["throughput"] = write_table(
            throughput_table(recs), tables / "throughput", f"Throughput of the published runs on {dev}."
        )
    written["claims"] = build_claims(
        tables, metrics=files["metrics"], throughput=files["throughput"], gmm=files["gmm"], quality=files["quality"]
    )
    sample_metrics = [p.parent / "metrics.json" for p in files["samples"]]
    write_samples_pages(files["samples"], sample_metrics, tables / "samples.md", tables / "samples.html")
    return written


def _cell(value) -> str:
    """Text from a record, safe in a Markdown line or table cell: no tag (& and < escaped), no cell break, no line
    break."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace("|", "&#124;")
    return " ".join(text.splitlines())


def window_section(w: Path) -> list[str]:
    """One window's part of windows.md; ValueError (or KeyError, TypeError) for a window.json that is not one."""
    summary = json.loads((w / WINDOW_SUMMARY).read_text(encoding="utf-8"))
    if (
        not isinstance(summary, dict)
        or not isinstance(summary.get("parts", []), list)
        or not all(isinstance(p, dict) for p in summary.get("parts", []))
    ):
        raise ValueError("its parts are not a list of objects")
    try:
        env = json.loads((w / "env" / "env.json").read_text())
        prov = env["provenance"]
        decoders = (
            "; ".join(f"{r['requested']} -> {r['used']} ({r['reason']})" for r in prov.get("spectral_decoder") or [])
            or "none resolved"
        )
        about = (
            f"{prov['device']}, torch {prov['torch']}, CUDA {prov.get('cuda')}, driver "
            f"{prov.get('driver')}, Triton {env['versions'].get('triton')}, commit "
            f"{prov.get('git_commit')}; spectral decoder: {decoders}"
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        about = f"no environment record ({type(e).__name__})"
    page = [
        f"## {_cell(w.name)} ({_cell(summary.get('minutes'))} min, config {_cell(summary.get('configfile'))})",
        "",
        _cell(about),
        "",
        "| part | status | seconds | deadline (s) | reason |",
        "|---|---|---|---|---|",
    ]
    for p in summary.get("parts", []):
        page.append(
            f"| {_cell(p.get('part'))} | {_cell(p.get('status'))} | {_cell(p.get('seconds', ''))} | "
            f"{_cell(p.get('deadline_s', ''))} | {_cell(p.get('reason', ''))} |"
        )
    return page + [""]


def render_windows(store: Path, out: Path, problems: list[str] | None = None) -> list[str]:
    """OUT/<device>/windows.md for each device with GPU windows in the store: per window, the environment, what
    decoder 'auto' resolved to and why, and every part's status, seconds and reason (text from the records escaped).
    A window whose window.json is unreadable or malformed is left out, one line in `problems`. Returns index lines."""
    lines = []
    for dev_dir in sorted(p for p in store.iterdir() if p.is_dir() and (p / "windows").is_dir()):
        page = [
            f"# GPU windows on {dev_dir.name}",
            "",
            "Each window's parts in the order they ran (`python -m sdgm.campaign.window`, docs/campaign.md); "
            "the benchmark records and logs are beside each window's window.json.",
            "",
        ]
        wins = sorted(p for p in (dev_dir / "windows").iterdir() if (p / WINDOW_SUMMARY).is_file())
        for w in wins:
            try:
                page += window_section(w)
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                if problems is not None:
                    problems.append(f"left out window {w}: {WINDOW_SUMMARY} unusable ({type(e).__name__}: {e})")
        write_text_atomic(no_links(out, out / dev_dir.name / "windows.md"), "\n".join(page))
        lines.append(f"| {dev_dir.name} | {len(wins)} | [{dev_dir.name}/windows.md]({dev_dir.name}/windows.md) |")
    return lines
