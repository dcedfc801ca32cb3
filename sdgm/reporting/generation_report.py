"""The generation table and the latency figure, from the generation records only (no torch: report environment).

Reads results/bench/generation/*/*.json (written by sdgm.bench.generation) and writes
results/tables/generation.{csv,md,tex} and results/figures/generation_latency.{png,pdf}. Every number is of the
model's own decoding path (its cache, or the window recompute for a model without one) unless the column says
"recompute"; a number that was not measured reads "n/a (reason)", never 0.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FuncFormatter

from ..common.missing import NOT_MEASURED
from . import write_table
from .bench_report import _fmt, load_record
from .plots import save_titled

matplotlib.use("Agg")  # figures go to files, never to a window

DECODING = {"cache": "cache", "recompute": "recompute window"}
BEYOND = {"window": "window of L slides", "state": "own state continues"}


def _why(entry: dict | None) -> str:
    if not entry:
        return NOT_MEASURED
    return entry.get("error") or entry.get("status", NOT_MEASURED)


def _tok_s(path: dict | None, b: int) -> tuple[float | None, str]:
    entry = (path or {}).get("generate", {}).get(f"b{b}")
    return (entry.get("tokens_per_s") if entry and entry.get("status") == "ok" else None), _why(entry)


def _prefill_s(path: dict | None, b: int) -> tuple[float | None, str]:
    entry = (path or {}).get("prefill", {}).get(f"b{b}")
    ok = entry and entry.get("status") == "ok"
    return (entry["timing"]["median_s"] if ok else None), _why(entry)


def _step_s(path: dict | None, position: int) -> tuple[float | None, str]:
    lat = (path or {}).get("latency")
    if not lat or lat.get("status") != "ok":
        return None, _why(lat)
    return lat["median_s"][position - 1], ""


def _cell(value_and_reason: tuple[float | None, str], decimals: int, scale: float = 1.0) -> str:
    value, reason = value_and_reason
    return _fmt(value, decimals, reason, scale)


def generation_table(records: list[dict]) -> pd.DataFrame:
    rows = []
    for rec in sorted(records, key=lambda r: (r["corpus"], r["experiment"], r["seed"])):
        s, paths, L = rec["settings"], rec["paths"], rec["max_context"]
        own = paths[rec["own_path"]]
        recompute = paths.get("recompute") if rec["own_path"] != "recompute" else None
        compiled = paths.get(f"{rec['own_path']}_compiled")
        row = {
            "experiment": rec["experiment"],
            "model": rec["model"],
            "corpus": rec["corpus"],
            "seed": rec["seed"],
            "device": rec["provenance"].get("device", rec["device"]),
            "precision": rec["precision"],
            "decoding": DECODING[rec["own_path"]],
            "beyond_L": BEYOND[rec["decode_beyond_context"]],
        }
        for b in s["batch_sizes"]:
            mine, why = _tok_s(own, b)
            row[f"gen_b{b}_tok_s"] = _fmt(mine, 0, why)
            if recompute is None:
                row[f"gen_b{b}_recompute_tok_s"] = row[f"gen_b{b}_speedup"] = "– (its own path)"
            else:
                theirs, why_r = _tok_s(recompute, b)
                row[f"gen_b{b}_recompute_tok_s"] = _fmt(theirs, 0, why_r)
                ok = mine is not None and theirs is not None
                row[f"gen_b{b}_speedup"] = _fmt(mine / theirs if ok else None, 2, why if mine is None else why_r)
            if compiled is not None:
                row[f"gen_b{b}_compiled_tok_s"] = _cell(_tok_s(compiled, b), 0)
        for b in s["batch_sizes"]:
            row[f"prefill_b{b}_ms"] = _cell(_prefill_s(own, b), 3, 1e3)
        k = s["context_multiple"]
        for label, position in (("first", 1), ("at_L", L), (f"at_{k}L", k * L)):
            row[f"step_ms_{label}"] = _cell(_step_s(own, position), 3, 1e3)
        if recompute is not None:
            row["recompute_step_ms_at_L"] = _cell(_step_s(recompute, L), 3, 1e3)
        else:
            row["recompute_step_ms_at_L"] = "– (its own path)"
        state = own.get("state", {}).get("b1", {})
        ok = state.get("status") == "ok"
        row["state_kb_peak"] = _fmt(state.get("peak_bytes") if ok else None, 1, _why(state), 1e-3)
        row[f"state_kb_at_{k}L"] = _fmt(state.get("after_last_bytes") if ok else None, 1, _why(state), 1e-3)
        row["state_kb_declared"] = _fmt(rec.get("state_bytes_per_sequence_declared"), 1, "not declared", 1e-3)
        rows.append(row)
    return pd.DataFrame(rows)


def plot_latency(records: list[dict], out_stem: str | Path) -> list[Path]:
    """Time per decode_step (log) against the position of the token, batch 1, one panel per corpus: the model's
    own path solid, the generic window recompute dashed; the dotted line is the end of the window L."""
    out_stem = Path(out_stem)
    corpora = sorted({r["corpus"] for r in records}) or ["(no records)"]
    fig, axes = plt.subplots(1, len(corpora), figsize=(9.5 * len(corpora), 4.8), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, corpus in zip(axes[0], corpora):
        runs = sorted((r for r in records if r["corpus"] == corpus), key=lambda r: (r["experiment"], r["seed"]))
        drawn = False
        for i, rec in enumerate(runs):
            for name, style in ((rec["own_path"], "-"), ("recompute", "--")):
                lat = rec["paths"].get(name, {}).get("latency")
                if (name == "recompute" and rec["own_path"] == "recompute") or not lat or lat.get("status") != "ok":
                    continue
                label = f"{rec['experiment']}-s{rec['seed']} ({DECODING[name]})"
                ax.plot(
                    lat["positions"], [t * 1e3 for t in lat["median_s"]], style, color=cmap(i % 10), lw=1.2, label=label
                )
                drawn = True
        if drawn:
            L = runs[0]["max_context"]
            ax.axvline(L, color="grey", linestyle=":", lw=1)
            ax.annotate("L", (L, 0.98), xycoords=("data", "axes fraction"), ha="left", va="top", color="grey")
            ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")  # 0.3, not 3 x 10^-1 (minor ticks get labels too)
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.text(0.5, 0.5, f"latency: {NOT_MEASURED}", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("position of the new token")
        ax.set_ylabel("time per decode_step, batch 1 (ms)")
        ax.set_title(corpus)
        ax.grid(True, which="both", alpha=0.3)
    devices = sorted({r["provenance"].get("device", r["device"]) for r in records})
    return save_titled(fig, f"Generation latency per token (median of repeats), {'; '.join(devices)}", out_stem)


def build_generation_report(generation_paths, tables_dir, figures_dir) -> dict:
    recs = [load_record(p, "generation") for p in generation_paths]
    devices = sorted({r["provenance"].get("device", r["device"]) for r in recs})
    loads = [
        (
            (r["paths"][r["own_path"]]["generate"].get(f"b{r['settings']['batch_sizes'][0]}") or {}).get("memory") or {}
        ).get("load_average_start")
        for r in recs
    ]
    loads = [x[0] for x in loads if x]
    load = f"; host load average (1 min) {statistics.median(loads):.2f} (median over runs)" if loads else ""
    caption = (
        "Generation with every model's own decoding path (cache: its prefill and decode_step; recompute window: "
        "a forward over the last L tokens per token, the generic fallback), beside the generic recompute: "
        "tokens/s from a 1-token prompt, prefill of a full window, time per step at positions 1, L and "
        "beyond, and the bytes of the decoding state of one sequence. Median of timed repeats after warmup, "
        "on " + "; ".join(devices) + load + "."
    )
    return {
        "generation": write_table(generation_table(recs), Path(tables_dir) / "generation", caption),
        "figure": plot_latency(recs, Path(figures_dir) / "generation_latency"),
    }
