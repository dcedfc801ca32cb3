"""The paper's claims, judged: one verdict per claim of sdgm/reporting/claims.yaml, computed from the pipeline's
records.

In: the claims file, the runs' metrics.json (and gmm.json) and the benchmark records (throughput, generation,
scaling). Out: tables/claims.{csv,md,tex,html} (claim, paper, ours, verdict, reason, evidence) and
tables/compact.{csv,md,tex,html} (the paper's main table shape: model, params, WikiText-2 and PTB validation and
test perplexity, speed, memory; "ours ± std (paper)", reasons as footnotes). The verdict rules are in
docs/claims.md; every branch is tested on synthetic records (tests/test_claims.py).

Verdicts: "reproduced", "not reproduced", "contradicted" (the effect goes the other way), "not measured" (with the
reason). Our value is the mean over seeds with a 95 % Student-t interval; with one seed there is no interval, the
reason says so and the claim's stated tolerance decides. A claim whose evidence leaks future tokens (a run that
failed the causality audit) is never judged reproduced: it reads "not measured".

The CSVs are for machines: numbers in numeric columns (empty where absent), reasons in their own columns.

    python -m sdgm.reporting.claims --records results/h100 --readme README.md --results-readme results/README.md
renders the claims and compact tables of a results folder into its tables/, and the verdict section of a README
between the markers CLAIMS_BEGIN and CLAIMS_END. The rules themselves are in sdgm.reporting.claim_rules, the
tables' rendering in sdgm.reporting.claims_tables; this module is the step and its command line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from ..common.atomic import no_links_below, write_text_atomic
from .claim_rules import claims_table, load_claims
from .claims_tables import (
    claim_texts,
    compact_caption,
    compact_table,
    ours_cell,
    paper_cell,
    read_claims_csv,
    rel_path,
    summary,
    why_lines,
    write_claims,
    write_compact,
)
from .evidence import Evidence
from .records import ReportError, load_metrics, load_paper
from .render import to_markdown

BEGIN, END = "<!-- CLAIMS_BEGIN: rendered by python -m sdgm.reporting.claims; do not edit -->", "<!-- CLAIMS_END -->"


# ---- the whole step ----------------------------------------------------------------------------------------------


def build_claims(
    tables_dir,
    metrics=(),
    throughput=(),
    generation=(),
    scaling=None,
    gmm=(),
    quality=(),
    claims_path=None,
    paper_path=None,
    readings: Path | None = None,
) -> dict:
    """Write claims.* and compact.* to tables_dir; returns {"<name>_<ext>": path}. Everything is computed before
    anything is written: a bad input leaves no partial table. `readings`: a readings results folder whose records
    explain each claim not reproduced (write_claims)."""
    claims = load_claims(claims_path)
    ev = Evidence(metrics, throughput, generation, scaling, gmm, quality)
    df = claims_table(claims, ev)
    compact = compact_table(claims, ev, load_paper(paper_path))
    tables = no_links_below(Path(tables_dir).parent, Path(tables_dir))  # no write through a committed link
    why = why_lines([df], readings, tables) if readings is not None else []  # read before anything is written
    written = {}
    for p in write_claims(df, tables / "claims", claims["source"], why):
        written[f"claims_{p.suffix[1:]}"] = p
    for p in write_compact(compact, tables / "compact", compact_caption(claims, compact)):
        written[f"compact_{p.suffix[1:]}"] = p
    return written


def find_records(root: Path) -> dict:
    """The records of one results folder, by the pipeline's layout, or of one device of the published store
    (results/published/<device>: each run's records, throughput.json and quality.json included, in its run
    directory)."""
    root = Path(root)
    scaling = root / "bench" / "scaling.json"
    return {
        "metrics": sorted(root.glob("runs/*/*/metrics.json")),
        "throughput": (sorted(root.glob("bench/throughput/*/*.json")) + sorted(root.glob("runs/*/*/throughput.json"))),
        "generation": sorted(root.glob("bench/generation/*/*.json")),
        "scaling": scaling if scaling.exists() else None,
        "gmm": sorted(root.glob("runs/*/*/gmm.json")),
        "quality": sorted(root.glob("quality/*/*.json")) + sorted(root.glob("runs/*/*/quality.json")),
    }


# ---- the README's section ---------------------------------------------------------------------------------------


def device_columns(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """claim, paper and one column per device folder (ours and the verdict in bold, nothing else: the reasons,
    evidence and commits are in each folder's claims.md), the claims in the first folder's order. Never averaged:
    each cell is that folder's own verdict."""
    first = next(iter(frames.values()))
    text = claim_texts([first])
    disp = pd.DataFrame(
        {"claim": [text[cid] for cid in first["id"]], "paper": [paper_cell(r) for _, r in first.iterrows()]}
    )
    for name, df in frames.items():
        rows = df.set_index("id")
        cells = []
        for cid in first["id"]:
            if cid not in rows.index:
                cells.append("**not measured**")  # the claim is not in this folder's table
                continue
            ours = ours_cell(rows.loc[cid])
            cells.append(("" if ours == "–" else ours + " ") + f"**{rows.loc[cid, 'verdict']}**")
        disp[name] = cells
    return disp


def readme_section(tables_dirs, readme: Path, readings: Path | None = None) -> str:
    """The verdict section of a README, short: what ran on each device, the verdict counts with a link to each
    folder's claims.md (reasons, evidence, commits and, with --readings, which reading closes each gap), and one
    table: claim, paper, one column per device folder. Rendered from each folder's tables/claims.csv and its
    records' provenance; `tables_dirs` is one tables folder or several (one per device, named by its results
    folder). The main results table is linked (the first folder's compact.md), not repeated."""
    dirs = [Path(tables_dirs)] if isinstance(tables_dirs, (str, Path)) else [Path(d) for d in tables_dirs]
    here = Path(readme).parent
    frames = {d.parent.name: read_claims_csv(d / "claims.csv") for d in dirs}
    ran = [f"- {d.parent.name}: {ran_line(find_records(d.parent)['metrics'], d.parent)}" for d in dirs]
    verdicts = []
    for d in dirs:
        md = rel_path(str(d / "claims.md"), here)
        verdicts.append(f"- {d.parent.name}: {summary(frames[d.parent.name])}; reasons and evidence: [{md}]({md})")
    compact = rel_path(str(dirs[0] / "compact.md"), here)
    notes = [
        f"One column per device, never averaged; rules: [docs/claims.md]({rel_path('docs/claims.md', here)}). "
        f"Main results ({dirs[0].parent.name}): [{compact}]({compact})."
    ]
    if readings is not None:
        rel = rel_path(str(readings), here)
        notes.append(
            f"Which reading closes the gap, for each claim not reproduced or contradicted: the end of each "
            f"claims.md, from the readings run [{rel}]({rel}) (docs/readings.md)."
        )
    return "\n".join(
        [
            BEGIN,
            "",
            "What ran:",
            *ran,
            "",
            "Verdicts:",
            *verdicts,
            "",
            to_markdown(device_columns(frames)).rstrip(),
            "",
            *notes,
            "",
            END,
        ]
    )


def ran_line(metrics_paths, root: Path | None = None) -> str:
    """One line: what ran (runs, seeds, device, commit, dates), from the runs' records; a folder without runs: the
    device benchmark's record (bench/device.json)."""
    recs = load_metrics(list(metrics_paths))
    device = Path(root) / "bench" / "device.json" if root is not None else None
    if not recs and device is not None and device.exists():
        rec = json.loads(device.read_text(encoding="utf-8"))
        prov = rec.get("provenance") or {}
        return (
            f"benchmarks of freshly initialized models at the paper's sizes (no training), on "
            f"{prov.get('device')}, commit {str(prov.get('git_commit'))[:7]}, "
            f"{str(prov.get('timestamp'))[:10]}, {rec['wall_s']['total_s'] / 60:.0f} minutes"
        )
    if not recs:
        return "no records"
    seeds = sorted({r["seed"] for r in recs})
    devices = sorted({str(r["provenance"].get("device")) for r in recs})
    commits = sorted({str(r["provenance"].get("git_commit"))[:7] for r in recs})
    stamps = sorted(str(r["provenance"]["timestamp"])[:10] for r in recs if r["provenance"].get("timestamp"))
    dates = (stamps[0] if stamps[0] == stamps[-1] else f"{stamps[0]} to {stamps[-1]}") if stamps else "date unknown"
    return (
        f"{len(recs)} runs, seed(s) {', '.join(map(str, seeds))}, on {', '.join(devices)}, commit "
        f"{', '.join(commits)}, {dates}."
    )


def replace_section(text: str, section: str, path: Path) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ReportError(f"{path}: needs exactly one {BEGIN!r} ... {END!r} pair")
    return text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Judge the paper's claims from a results folder's records.")
    ap.add_argument(
        "--records",
        type=Path,
        action="append",
        required=True,
        help="a results folder (runs/, bench/), one per device; repeat for a column per device (the "
        "first gives the main table and --results-readme)",
    )
    ap.add_argument("--readme", type=Path, default=None, help="a README whose claims section to render")
    ap.add_argument(
        "--results-readme",
        type=Path,
        default=None,
        help="render this results page (sdgm.reporting.pages.results_readme) from the folder's tables",
    )
    ap.add_argument(
        "--readings",
        type=Path,
        default=None,
        help="a readings results folder (docs/readings.md): each claim not reproduced gets the line "
        "naming the closest valid reading, in claims.md and the README's section",
    )
    ap.add_argument("--check", action="store_true", help="only check that --readme is up to date (exit 1 if not)")
    args = ap.parse_args(argv)
    if not args.check:
        for root in args.records:
            for name, p in build_claims(root / "tables", **find_records(root), readings=args.readings).items():
                print(f"{name}: {p}")
    rec = find_records(args.records[0])
    tables = args.records[0] / "tables"
    if args.readme is not None:
        text = args.readme.read_text(encoding="utf-8")
        new = replace_section(
            text, readme_section([r / "tables" for r in args.records], args.readme, args.readings), args.readme
        )
        if args.check:
            return 0 if new == text else 1
        write_text_atomic(args.readme, new)
        print(f"readme: {args.readme}")
    if args.results_readme is not None and not args.check:
        from .pages import results_readme

        root = args.records[0]
        figures = sorted((root / "figures").glob("*.png"))
        names = [
            t
            for t in (
                "main",
                "ablations",
                "reconstruction",
                "throughput",
                "generation",
                "generation_quality",
                "scaling",
                "scaling_slopes",
                "samples",
            )
            if (tables / f"{t}.md").exists()
        ]
        recs = load_metrics(rec["metrics"])
        summary = {
            "experiments": sorted({r["experiment"] for r in recs}),
            "corpora": sorted({r["corpus"] for r in recs}),
            "seeds": sorted({r["seed"] for r in recs}),
            "seq_len": sorted({r.get("train_config", {}).get("seq_len") for r in recs} - {None})[0],
        }
        results_readme(
            args.results_readme,
            tables / "main.md",
            [tables / f"{t}.md" for t in names],
            figures,
            [],
            rec["metrics"],
            rec["gmm"],
            summary,
            claims_md=tables / "claims.md",
            compact_md=tables / "compact.md",
        )
        print(f"results readme: {args.results_readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
