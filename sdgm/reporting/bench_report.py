"""Tables and the figure of the benchmarks (no torch: runs in the report environment).

Reads only results/bench/throughput/*/*.json and results/bench/scaling.json (written by sdgm.bench) and
writes results/tables/{throughput,scaling,scaling_slopes}.{csv,md,tex} and results/figures/scaling.{png,pdf}.
A number that was not measured reads "n/a (reason)", never 0.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from ..common.atomic import read_json
from ..common.missing import NOT_MEASURED, OUT_OF_MEMORY, na
from . import write_table
from .plots import save_titled

matplotlib.use("Agg")  # figures go to files, never to a window

SCHEMA_VERSIONS = {"throughput": 1, "scaling": 2, "generation": 1}  # generation: sdgm.bench.generation


class BenchReportError(RuntimeError):
    pass


def load_record(path: str | Path, kind: str) -> dict:
    path = Path(path)
    rec = read_json(path, "benchmark record", BenchReportError)
    want = SCHEMA_VERSIONS[kind]
    if not isinstance(rec, dict) or rec.get("kind") != kind or rec.get("schema") != want:
        raise BenchReportError(
            f"{path}: not a schema-{want} {kind!r} record (an older record: run its benchmark again)"
        )
    for key in ("provenance", "config_hash"):
        if key not in rec:
            raise BenchReportError(f"{path}: missing {key!r}")
    return rec


def short_reason(reason: str) -> str:
    """A table cell's reason in a few words: CUDA's out-of-memory message runs to ~600 characters (the whole
    record keeps it)."""
    if OUT_OF_MEMORY in reason.lower():
        m = re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]?i?B)", reason)
        return f"{OUT_OF_MEMORY}, allocating {m.group(1)}" if m else OUT_OF_MEMORY
    return reason


def _fmt(value, decimals: int, reason: str | None = None, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return na(short_reason(str(reason or NOT_MEASURED)))
    v = value * scale
    if v != 0 and abs(v) < 100 * 10**-decimals:  # small values keep 3 significant digits
        return f"{v:.3g}"
    return f"{v:.{decimals}f}"


# ---- throughput -------------------------------------------------------------------------------------------------
THROUGHPUT_COLUMNS = [  # (column, metrics key, scale, decimals)
    ("train_tok_s", "train_tokens_per_s", 1.0, 0),
    ("score_tok_s", "score_tokens_per_s", 1.0, 0),
    ("mfu_train", "mfu_train", 1.0, 4),
    ("mfu_score", "mfu_score", 1.0, 4),
    ("train_peak_gpu_mem_gb", "train_peak_gpu_mem_bytes", 1e-9, 2),
    ("train_peak_rss_gb", "train_peak_rss_bytes", 1e-9, 2),
    ("train_energy_mj_per_tok", "energy_j_per_token_train", 1e3, 4),
]


def throughput_table(records: list[dict]) -> pd.DataFrame:
    rows = []
    for rec in sorted(records, key=lambda r: (r["corpus"], r["experiment"], r["seed"])):
        m, na = rec["metrics"], rec.get("na", {})
        row = {
            "experiment": rec["experiment"],
            "model": rec["model"],
            "corpus": rec["corpus"],
            "seed": rec["seed"],
            "device": rec["device"],
            "precision": rec["precision"],
            "params_m": _fmt(m.get("params"), 2, na.get("params"), 1e-6),
            "gflops_per_tok": _fmt(m.get("flops_per_token"), 4, na.get("flops_per_token"), 1e-9),
        }
        for col, key, scale, dec in THROUGHPUT_COLUMNS[:2]:
            row[col] = _fmt(m.get(key), dec, na.get(key), scale)
        for b in rec["settings"]["generate_batch_sizes"]:
            key = f"generate_b{b}_tokens_per_s"
            row[f"gen_b{b}_tok_s"] = _fmt(m.get(key), 0, na.get(key))
        for col, key, scale, dec in THROUGHPUT_COLUMNS[2:]:
            row[col] = _fmt(m.get(key), dec, na.get(key), scale)
        row["decoding"] = "cache" if rec.get("incremental_decoding") else "recompute window"
        load = (rec["modes"].get("train", {}).get("memory") or {}).get("load_average_start")
        row["host_load_1min"] = _fmt(load[0] if load else None, 2, "no load average on this platform")
        rows.append(row)
    return pd.DataFrame(rows)


# ---- scaling ----------------------------------------------------------------------------------------------------
def scaling_table(rec: dict) -> pd.DataFrame:
    """One row per view, layer, mode and L: time, memory, the floor and measured / floor, SDGM over attention."""
    ratio = {(r["view"], r["model"], r["L"], r["mode"]): r for r in rec.get("ratios", [])}
    order = {m: i for i, m in enumerate(rec["settings"]["models"])}
    rows = []
    for r in sorted(
        rec["results"], key=lambda r: (r["view"] != "tokens", order.get(r["model"], len(order)), r["mode"], r["L"])
    ):
        why = r.get("error") or r.get("reason") or r["status"]
        na = r.get("na", {})
        ok = r["status"] == "ok"
        floor = r.get("floor") or {}
        row = {
            "view": r["view"],
            "model": r["model"],
            "mode": r["mode"],
            "L": r["L"],
            "B": r["B"],
            "status": r["status"],
            "ms_per_batch": _fmt(r.get("time_per_batch_s") if ok else None, 3, why, 1e3),
            "ms_per_sequence": _fmt(r.get("time_per_sequence_s") if ok else None, 4, why, 1e3),
            "peak_mem_mb": _fmt(r.get("peak_mem_bytes") if ok else None, 1, na.get("peak_mem_bytes", why), 1e-6),
            "floor_ms": _fmt(floor.get("time_s") if ok else None, 3, na.get("floor", why), 1e3),
            "bound": floor.get("bound", "–") if ok else "–",
            "over_floor": _fmt(r.get("over_floor") if ok else None, 2, na.get("floor", why)),
        }
        q = ratio.get((r["view"], r["model"], r["L"], r["mode"]))
        if q:
            qna = q.get("na", {})
            row["over_attention_time"] = _fmt(q.get("over_attention_time"), 3, qna.get("over_attention_time"))
            row["over_attention_mem"] = _fmt(q.get("over_attention_memory"), 3, qna.get("over_attention_memory"))
        else:
            row["over_attention_time"] = row["over_attention_mem"] = "–"
        rows.append(row)
    return pd.DataFrame(rows)


def slopes_table(rec: dict) -> pd.DataFrame:
    rows = []
    for view, models in rec["slopes"].items():
        for model, modes in models.items():
            for mode, fits in modes.items():
                row = {"view": view, "model": model, "mode": mode}
                for what, fit in fits.items():
                    why = fit.get("na", {}).get("slope")
                    row[f"{what}_slope"] = _fmt(fit.get("slope"), 3, why)
                    row[f"{what}_r2"] = _fmt(
                        fit.get("r2"), 3, "fewer than 3 points" if fit.get("slope") is not None else why
                    )
                    row[f"{what}_points"] = fit["n_points"]
                row["min_length"] = fits["time"]["min_length"]
                rows.append(row)
    return pd.DataFrame(rows)


def plot_scaling(rec: dict, out_stem: str | Path) -> list[Path]:
    """Log-log against L, one column per view and mode: time per sequence (measured as markers and lines, floor
    dashed), measured / floor, and peak memory. Out-of-memory lengths are marked."""
    out_stem = Path(out_stem)
    views = [v for v in ("tokens", "batch") if any(r["view"] == v for r in rec["results"])]
    columns = [(v, m) for v in views for m in ("forward", "forward_backward")]
    models = list(rec["settings"]["models"])
    fig, axes = plt.subplots(3, len(columns), figsize=(5.2 * len(columns), 12), squeeze=False)
    cmap = plt.get_cmap("tab10")
    s = rec["settings"]
    for j, (view, mode) in enumerate(columns):
        ax_t, ax_f, ax_m = axes[:, j]
        drawn = set()
        for i, model in enumerate(models):
            rows = [r for r in rec["results"] if r["view"] == view and r["model"] == model and r["mode"] == mode]
            ok = [r for r in rows if r["status"] == "ok"]
            fits = rec["slopes"].get(view, {}).get(model, {}).get(mode, {})
            t_fit, m_fit = fits.get("time", {}), fits.get("memory", {})
            color = cmap(i % 10)
            if ok:
                drawn.add(ax_t)
                label = model + (f" (slope {t_fit['slope']:.2f})" if t_fit.get("slope") is not None else "")
                ax_t.plot(
                    [r["L"] for r in ok], [r["time_per_sequence_s"] * 1e3 for r in ok], "o-", color=color, label=label
                )
                fl = [r for r in ok if r.get("floor")]
                if fl:
                    ax_t.plot(
                        [r["L"] for r in fl],
                        [r["floor"]["time_s"] / r["B"] * 1e3 for r in fl],
                        "--",
                        color=color,
                        alpha=0.6,
                        linewidth=1,
                    )
                of = [r for r in ok if r.get("over_floor")]
                if of:
                    drawn.add(ax_f)
                    ax_f.plot([r["L"] for r in of], [r["over_floor"] for r in of], "o-", color=color, label=model)
            mem = [r for r in ok if r.get("peak_mem_bytes")]
            if mem:
                drawn.add(ax_m)
                label = model + (f" (slope {m_fit['slope']:.2f})" if m_fit.get("slope") is not None else "")
                ax_m.plot(
                    [r["L"] for r in mem], [r["peak_mem_bytes"] / 1e6 for r in mem], "o-", color=color, label=label
                )
            for ax in (ax_t, ax_m):
                for r in rows:
                    if r["status"] == "oom":
                        ax.axvline(r["L"], color=color, linestyle=":", alpha=0.6)
                        ax.annotate(
                            f"{model} OOM" + (" (predicted)" if r.get("predicted") else ""),
                            (r["L"], 0.98),
                            xycoords=("data", "axes fraction"),
                            rotation=90,
                            va="top",
                            fontsize=7,
                            color=color,
                        )
        if ax_f in drawn:
            ax_f.axhline(1.0, color="black", linewidth=0.8)
        for ax, what in (
            (ax_t, "time per sequence (ms); floor dashed"),
            (ax_f, "measured / floor"),
            (ax_m, "peak memory per batch (MB)"),
        ):
            if ax in drawn:
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.legend(fontsize=7)
            else:
                ax.text(0.5, 0.5, f"{what}: {NOT_MEASURED}", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlabel("sequence length L")
            ax.set_ylabel(what)
            ax.grid(True, which="both", alpha=0.3)
        batch = f"{s['tokens_per_batch']} tokens per batch" if view == "tokens" else f"B = {s.get('batch_size', 1)}"
        ax_t.set_title(f"{mode.replace('_', ' + ')}, {batch}", fontsize=9)
    source = "CUDA allocator" if str(rec.get("memory_method", "")).startswith("torch.cuda") else "CPU allocator"
    title = (
        f"One mixing layer, D = {s['d_model']}, K = {s['n_atoms']}, {s['precision']}, "
        f"{rec['provenance'].get('device', rec['device'])}; memory above the inputs ({source})"
    )
    return save_titled(fig, title, out_stem)


def build_scaling_report(scaling_path, tables_dir, figures_dir) -> dict:
    """The scaling table, its slopes and its figure from one scaling record."""
    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    sc = load_record(scaling_path, "scaling")
    st, load = sc["settings"], sc.get("load_average") or {}
    return {
        "scaling": write_table(
            scaling_table(sc),
            tables_dir / "scaling",
            f"One mixing layer at D = {st['d_model']}, K = {st['n_atoms']}; "
            f"view 'tokens': {st['tokens_per_batch']} tokens per batch (B = tokens / L), "
            f"view 'batch': B = {st.get('batch_size', 1)}; on "
            f"{sc['provenance'].get('device', sc['device'])}; attention backend: "
            f"{sc['attention_backend']}; host load average at start and end "
            f"{load.get('start')}, {load.get('end')} ({load.get('cpu_count')} cores). "
            "Every layer is causal, as its baseline trains it. floor = max(FLOPs / matmul rate, "
            "sines / sine rate, bytes / bandwidth) at the rates measured on the device: "
            + ", ".join(f"{k} {v:.3g}" for k, v in sc["rates"].items() if isinstance(v, float))
            + ".",
            footnotes=True,
        ),
        "slopes": write_table(
            slopes_table(sc),
            tables_dir / "scaling_slopes",
            "Least-squares slopes of log(time per sequence) and log(peak memory) against log(L), "
            "L >= min_length, per view.",
            footnotes=True,
        ),
        "figure": plot_scaling(sc, figures_dir / "scaling"),
    }


def build_bench_report(throughput_paths, scaling_path, tables_dir, figures_dir) -> dict:
    tables_dir = Path(tables_dir)
    tp = [load_record(p, "throughput") for p in throughput_paths]
    devices = sorted({r["provenance"].get("device", r["device"]) for r in tp})
    return {
        "throughput": write_table(
            throughput_table(tp),
            tables_dir / "throughput",
            "Throughput of the trained models (median of timed repeats after warmup), on "
            + "; ".join(devices)
            + ". MFU = model FLOPs per token x tokens/s / device peak.",
        ),
        **build_scaling_report(scaling_path, tables_dir, figures_dir),
    }
