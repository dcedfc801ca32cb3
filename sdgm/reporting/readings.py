"""The readings of the paper (docs/readings.md): tables, the figure, and one explanation line per claim that is not
reproduced, all from records: the runs' metrics.json, the readings records of rule reading_measures
(sdgm.harness.readings.measure_run) and the parameter readings of rule parameter_readings. Nothing here is written
by hand: a reading's label is what its recorded configuration changed from the default run's.

Tables (build_readings_report):
    readings             one row per (run, perplexity protocol): validation perplexity at the budget, its ratio to
                         the reference (Transformer-XL) under each of the reference's protocols, parameters, the
                         causality audit's verdict, training tokens and wall time
    readings_cosine      the reconstruction cosine of every SDGM run under every measurement reading
    readings_parameters  parameter counts at the paper's sizes: every architecture reading one option away from the
                         default, and every combination within the parameter tolerance of the paper's count
Figure: readings_curves, validation perplexity against training tokens of every run.

The records are read by sdgm.reporting.readings_records, the explanation lines (explain_claims: the closest valid
reading of each claim not reproduced) made by sdgm.reporting.reading_gaps; `python -m sdgm.reporting.readings` prints
those lines for a claims table.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from ..common.atomic import write_text_atomic
from ..common.missing import na
from .plots import save_figure
from .reading_gaps import explain_claims
from .readings_records import ReadingsData, claims_tolerances, load_data, load_folder
from .render import write_table

TARGETS = ("current", "next")
VECTORS = ("raw", "standardized")
POOLING = ("mean", "pooled")


# ---- tables ------------------------------------------------------------------------------------------------------


def _fmt(v: float, decimals: int) -> str:
    return f"{v:,.{decimals}f}" if isinstance(v, (int, float)) and math.isfinite(v) else na("not finite")


def readings_table(data: ReadingsData) -> pd.DataFrame:
    """One row per (run, protocol); ratio columns: to each of the reference's protocols."""
    refs = data.reference_entries()
    rows = []
    for e in data.entries:
        row = {"reading": e.name, "changed": e.changed, "protocol": e.protocol, "val_ppl": e.val_ppl}
        for r in refs:
            row[f"ratio to {r.name}"] = e.val_ppl / r.val_ppl
        row.update(
            {
                "params_m": e.params / 1e6,
                "audit": e.audit,
                "train_tokens": e.train_tokens,
                "steps": e.steps,
                "best_step": e.best_step,
                "wall_s": e.wall_s,
            }
        )
        rows.append(row)
    return pd.DataFrame(rows)


def readings_display(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if col in ("val_ppl", "wall_s"):
            out[col] = out[col].map(lambda v: _fmt(v, 1))
        elif col.startswith("ratio to"):
            out[col] = out[col].map(lambda v: f"×{v:.3f}" if math.isfinite(v) else na("not finite"))
        elif col == "params_m":
            out[col] = out[col].map(lambda v: _fmt(v, 2))
        elif col == "train_tokens":
            out[col] = out[col].map(lambda v: _fmt(v, 0))
    return out


def cosine_table(data: ReadingsData) -> pd.DataFrame:
    rows = []
    for rec in data.records:
        exp = rec["experiment"]
        if exp not in data.cosine:
            continue
        audit = next(e.audit for e in data.entries if e.experiment == exp)
        row = {
            "reading": exp,
            "changed": data.changed[exp],
            "audit": audit,
            "cosine_val (record)": rec["metrics"].get("cosine_val"),
        }
        row.update({k: data.cosine[exp][k] for k in _cosine_keys()})
        rows.append(row)
    return pd.DataFrame(rows)


def _cosine_keys() -> list[str]:
    return [f"{t}/{v}/{p}" for t in TARGETS for v in VECTORS for p in POOLING]


def parameters_table(data: ReadingsData, paper_m: float, rel_tol: float) -> pd.DataFrame:
    """Architecture readings one option away from the default (per corpus), then every combination within rel_tol
    of the paper's count."""
    rows = data.parameters
    if not rows:
        return pd.DataFrame()
    options = [k for k in rows[0] if k not in ("corpus", "vocab_size", "params")]
    default = next(r for r in data.records if r["experiment"] == data.default)  # from_records: it is there
    base = {k: default["model_config"][k] for k in options}
    out = []
    for r in rows:
        away = [k for k in options if r[k] != base.get(k)]
        within = abs(r["params"] / 1e6 - paper_m) <= rel_tol * paper_m
        if len(away) <= 1 or within:
            out.append(
                {
                    "corpus": r["corpus"],
                    "vocab_size": r["vocab_size"],
                    **{k: r[k] for k in options},
                    "changed": ", ".join(f"{k} = {r[k]}" for k in away) or "default",
                    "params_m": round(r["params"] / 1e6, 3),
                    "vs_paper_pct": round(100 * (r["params"] / 1e6 - paper_m) / paper_m, 1),
                    "within_tolerance": "yes" if within else "no",
                }
            )
    return pd.DataFrame(out)


# ---- the figure --------------------------------------------------------------------------------------------------


def plot_curves(data: ReadingsData, out_stem: Path) -> list[Path]:
    """Validation perplexity (log) against training tokens, every run; the budget's full-split value as a dot."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    default_model = next(r["model"] for r in data.records if r["experiment"] == data.default)
    colors = plt.get_cmap("tab20").colors  # one colour per run (the default cycle has 10, the readings 17 runs)
    for i, rec in enumerate(data.records):
        exp, m = rec["experiment"], rec["metrics"]
        per_step = m["train_tokens_per_s"] * m["train_seconds"] / max(m["steps"], 1)
        pts = [
            (p["step"] * per_step, p["ppl"])
            for p in rec.get("history", {}).get("val", [])
            if math.isfinite(p.get("ppl", math.nan)) and p["ppl"] > 0
        ]
        style = ":" if not data.valid[exp] else "-" if rec["model"] == default_model else "--"  # leaks, SDGM, baseline
        label = data.label(exp) + ("" if data.valid[exp] else " [LEAKS]")
        (line,) = ax.plot(
            [x for x, _ in pts], [y for _, y in pts], style, marker=".", label=label, color=colors[i % len(colors)]
        )
        ax.plot([m["train_tokens_per_s"] * m["train_seconds"]], [m["val_ppl"]], "o", color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation perplexity")
    ax.set_title(
        f"Readings on {data.corpus}: validation perplexity against training tokens\n"
        "(dots: the whole split at the budget, windows of L)",
        fontsize=10,
    )
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return save_figure(fig, out_stem)


# ---- the rule ----------------------------------------------------------------------------------------------------


def build_readings_report(
    metrics_paths, readings_paths, parameters_path, tables_dir, figures_dir, *, default: str, reference: str
) -> list[Path]:
    data = load_data(metrics_paths, readings_paths, parameters_path, default, reference)
    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    _, claims = claims_tolerances()
    tol = claims_tolerances()[0]["parameters"]["rel"]
    paper_m = float(claims["params"]["paper"])
    numeric = readings_table(data)
    written = write_table(
        readings_display(numeric),
        tables_dir / "readings",
        f"Readings on {data.corpus}: validation perplexity at the same training budget, its ratio "
        f"to {reference}'s, the causality audit (a leaking reading is not a language model)",
    )
    write_text_atomic(written[0], numeric.to_csv(index=False, lineterminator="\n"))  # the CSV keeps the numbers
    cosines = cosine_table(data)
    written += write_table(
        cosines.round(3),
        tables_dir / "readings_cosine",
        "Reconstruction cosine of every SDGM reading: target (current or next token's embedding), "
        "vectors (raw or standardized per channel), mean per token or pooled",
    )
    write_text_atomic(written[3], cosines.to_csv(index=False, lineterminator="\n"))  # the CSV keeps the numbers
    written += write_table(
        parameters_table(data, paper_m, tol),
        tables_dir / "readings_parameters",
        f"Parameter readings at the paper's sizes: one option away from the default, and every "
        f"combination within {100 * tol:.0f} % of the paper's {paper_m:g} M "
        f"({len(data.parameters)} combinations counted)",
    )
    written += plot_curves(data, figures_dir / "readings_curves")
    return written


def main(argv: list[str] | None = None) -> int:
    """Print one explanation line per not-reproduced claim of a claims table, from a readings results folder."""
    ap = argparse.ArgumentParser(prog="python -m sdgm.reporting.readings", description=main.__doc__)
    ap.add_argument("--records", required=True, help="the readings results folder (results_dir of the readings)")
    ap.add_argument("--claims", required=True, help="a claims table, tables/claims.csv")
    ap.add_argument("--default", default="sdgm")
    ap.add_argument("--reference", default="transformer_xl")
    args = ap.parse_args(argv)
    data = load_folder(args.records, args.default, args.reference)
    for cid, line in explain_claims(pd.read_csv(args.claims), data).items():
        print(f"{cid}: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
