"""The report's figures: training curves, ablation bars with the seed spread, a metric against a swept option."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np

from ..common.atomic import atomic_path
from .records import NON_CAUSAL_SUFFIX, _is_number, experiment_order
from .tables import _group, _metric_value, _paper_index, ablation_label, aggregate, leaks, setting_diff

matplotlib.use("Agg")  # figures go to files, never to a window


def _points(hist: list, ykey: str, positive: bool = False) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for h in hist or []:
        if not isinstance(h, dict):
            continue
        x, y = h.get("step"), h.get(ykey)
        if not (_is_number(x) and _is_number(y)) or not (math.isfinite(x) and math.isfinite(y)):
            continue
        if positive and y <= 0:
            continue
        xs.append(float(x))
        ys.append(float(y))
    return xs, ys


def save_figure(fig, out_stem: Path) -> list[Path]:
    """Write `fig` as out_stem.png (150 dpi) and out_stem.pdf, each atomically, then close it."""
    paths = [out_stem.with_name(out_stem.name + ".png"), out_stem.with_name(out_stem.name + ".pdf")]
    try:
        _save_fig_atomic(fig, paths[0], "png", dpi=150)
        _save_fig_atomic(fig, paths[1], "pdf")
    finally:
        plt.close(fig)
    return paths


def save_titled(fig, title: str, out_stem: Path, fontsize: int = 9) -> list[Path]:
    """`title` above the figure's panels, the panels laid out to fit, then save_figure."""
    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    return save_figure(fig, out_stem)


def _save_fig_atomic(fig, path: Path, fmt: str, **kw) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, **kw)


def plot_training_curves(records: list[dict], out_stem: Path) -> list[Path]:
    """Validation PPL (top, log y) and training next-token NLL (bottom) vs step; one column per corpus."""
    out_stem = Path(out_stem)
    corpora = sorted({r["corpus"] for r in records})
    runs_with_data = []
    for r in records:
        h = r.get("history") or {}
        if _points(h.get("val"), "ppl", True)[0] or _points(h.get("train"), "nll")[0]:
            runs_with_data.append(r)

    if not runs_with_data:
        fig, ax = plt.subplots(figsize=(6, 4))
        msg = "no runs" if not records else f"no runs with training history ({len(records)} run(s) without history)"
        ax.text(0.5, 0.5, msg, ha="center", va="center", fontsize=14, transform=ax.transAxes)
        ax.set_axis_off()
        fig.suptitle("Training curves")
    else:
        rank = experiment_order(records)
        experiments = list(rank)
        cmap = plt.get_cmap("tab10")
        color = {e: cmap(i % 10) for i, e in enumerate(experiments)}
        styles = ["-", "--", ":", "-."]
        ncol = len(corpora)
        fig, axes = plt.subplots(2, ncol, figsize=(6.5 * ncol, 8), squeeze=False, sharex="col")
        for j, corpus in enumerate(corpora):
            ax_v, ax_t = axes[0, j], axes[1, j]
            runs = sorted(
                (r for r in records if r["corpus"] == corpus), key=lambda r: (rank[r["experiment"]], r["seed"])
            )
            skipped_v, skipped_t = [], []
            for r in runs:
                label = f"{r['experiment']}/s{r['seed']}" + (NON_CAUSAL_SUFFIX if leaks(r) else "")
                kw = dict(
                    color=color[r["experiment"]], linestyle=styles[r["seed"] % len(styles)], label=label, linewidth=1.5
                )
                h = r.get("history") or {}
                xs, ys = _points(h.get("val"), "ppl", positive=True)
                if xs:
                    ax_v.plot(xs, ys, marker="o", markersize=3, **kw)
                else:
                    skipped_v.append(label)
                xs, ys = _points(h.get("train"), "nll")
                if xs:
                    ax_t.plot(xs, ys, **kw)
                else:
                    skipped_t.append(label)
            for ax, skipped, what in ((ax_v, skipped_v, "validation"), (ax_t, skipped_t, "training")):
                if ax.get_lines():
                    ax.legend(fontsize=8, loc="upper right")
                else:
                    ax.text(
                        0.5, 0.5, f"no {what} history", ha="center", va="center", transform=ax.transAxes, fontsize=12
                    )
                if skipped and ax.get_lines():
                    ax.text(
                        0.01,
                        0.01,
                        f"no {what} history: " + ", ".join(skipped),
                        transform=ax.transAxes,
                        fontsize=7,
                        va="bottom",
                        ha="left",
                        color="0.3",
                    )
                ax.grid(True, which="both", alpha=0.3)
            if ax_v.get_lines():
                ax_v.set_yscale("log")
            ax_v.set_title(f"{corpus}: validation perplexity")
            ax_v.set_ylabel("validation perplexity (log scale)")
            ax_t.set_title(f"{corpus}: training NLL")
            ax_t.set_ylabel("training next-token NLL (nats/token)")
            ax_t.set_xlabel("training step")
            ax_v.tick_params(labelbottom=True)
        fig.suptitle("Training curves (measured runs)")
        fig.tight_layout()

    return save_figure(fig, out_stem)


def _seed_values(recs: list[dict], key: str) -> list[float]:
    return [v for v in (_metric_value(r, key)[0] for r in recs) if v is not None]


def _empty_figure(title: str, msg: str):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.text(0.5, 0.5, msg, ha="center", va="center", fontsize=12, transform=ax.transAxes, wrap=True)
    ax.set_axis_off()
    fig.suptitle(title)
    return fig


def _ablation_groups(records: list[dict], ablations: dict[str, str]) -> dict[str, list[tuple]]:
    """{corpus: [(experiment, label, records, main records or None)]}: each main run that has ablations (main
    records None), then its ablations."""
    groups = _group(records)
    out: dict[str, list] = {}
    for corpus in sorted({c for _, c in groups}):
        for main in dict.fromkeys(ablations.values()):
            ref = groups.get((main, corpus))
            rows = [(main, f"{main} (main)", ref, None)] if ref else []
            for exp, m in ablations.items():
                recs = groups.get((exp, corpus))
                if m == main and recs:
                    label = ablation_label(recs[0], ref and ref[0])
                    leak = "\n" + NON_CAUSAL_SUFFIX.strip() if any(leaks(r) for r in recs) else ""
                    rows.append((exp, label + leak, recs, ref))
            if len(rows) > (1 if ref else 0):
                out.setdefault(corpus, []).extend(rows)
    return out


def _spread(ax, x: float, values: list[float], color, width: float) -> None:
    """Bar at the mean, error bar = sample std (ddof = 1; none for one seed), every seed as a dot."""
    agg = aggregate(values)
    ax.bar(x, agg["mean"], width=width, color=color, alpha=0.55, edgecolor=color)
    if agg["n"] > 1:
        ax.errorbar(x, agg["mean"], yerr=agg["std"], color="black", capsize=4, linewidth=1.2)
    jitter = np.linspace(-width / 4, width / 4, len(values)) if len(values) > 1 else [0.0]
    ax.scatter(np.asarray(jitter) + x, values, color="black", s=14, zorder=3)


def plot_ablations(
    records: list[dict], ablations: dict[str, str], out_stem: Path, paper: list[dict] | None = None
) -> list[Path]:
    """Validation (top) and test (bottom) perplexity of every ablation beside its main run, one column per corpus:
    bars at the mean over seeds, error bars one sample std, a dot per seed; the paper's value as a red cross."""
    out_stem = Path(out_stem)
    data = _ablation_groups(records, ablations)
    if not data:
        return save_figure(_empty_figure("Ablations", "no ablation runs"), out_stem)
    pidx = _paper_index(paper or [])
    width = max(len(v) for v in data.values())
    fig, axes = plt.subplots(2, len(data), figsize=(max(7.0, 0.75 * width + 2) * len(data), 9.5), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for j, (corpus, rows) in enumerate(data.items()):
        # one y scale per corpus: logarithmic where the values (the paper's included) span more than 5x
        shown = [v for _, _, recs, _ in rows for key in ("val_ppl", "test_ppl") for v in _seed_values(recs, key)]
        shown += [pidx[exp, corpus]["val_ppl"] for exp, _, _, _ in rows if "val_ppl" in pidx.get((exp, corpus), {})]
        log_y = bool(shown) and max(shown) / max(min(shown), 1e-9) > 5
        tops = shown + [
            a["mean"] + a["std"]
            for _, _, recs, _ in rows
            for key in ("val_ppl", "test_ppl")
            for a in [aggregate(_seed_values(recs, key))]
            if a["n"] > 1
        ]
        for i, (key, what) in enumerate((("val_ppl", "validation"), ("test_ppl", "test"))):
            ax = axes[i, j]
            noted = False
            for x, (exp, _label, recs, main_recs) in enumerate(rows):
                vals = _seed_values(recs, key)
                color = "0.35" if main_recs is None else cmap(1 + (x - 1) % 9)
                if vals:
                    _spread(ax, x, vals, color, 0.7)
                    if any(leaks(r) for r in recs):
                        ax.patches[-1].set_hatch("//")
                else:
                    ax.text(
                        x,
                        0.02,
                        "n/a",
                        ha="center",
                        va="bottom",
                        transform=ax.get_xaxis_transform(),
                        fontsize=8,
                        rotation=90,
                    )
                pv = pidx.get((exp, corpus), {}).get("val_ppl") if key == "val_ppl" else None
                if pv is not None:
                    ax.scatter([x], [pv], marker="x", color="red", s=60, zorder=4, label=None if noted else "paper")
                    noted = True
            if log_y:  # e.g. gamma = 0 beside the main run; bars start at the decade below the smallest value
                ax.set_yscale("log")
                ax.set_ylim(10 ** math.floor(math.log10(min(shown))), max(tops) * 1.3)
                ax.yaxis.set_major_formatter(mticker.LogFormatter(labelOnlyBase=False))
                ax.yaxis.set_minor_formatter(mticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
                ax.set_ylabel(f"{what} perplexity (log scale)")
            else:
                ax.set_ylabel(f"{what} perplexity")
            for _exp, _, recs, main_recs in rows:
                ref_vals = _seed_values(recs, key) if main_recs is None else []
                if ref_vals:  # the main run's mean, for reading the bars against
                    ax.axhline(float(np.mean(ref_vals)), color="0.35", linestyle="--", linewidth=1)
            ax.set_xticks(range(len(rows)))
            ax.set_xticklabels([label for _, label, _, _ in rows], rotation=40, ha="right", fontsize=8)
            ax.set_title(f"{corpus}: {what} perplexity")
            ax.grid(True, axis="y", which="both", alpha=0.3)
            if noted:
                ax.legend(fontsize=8, loc="upper left")
    n_seeds = sorted({len(recs) for rows in data.values() for _, _, recs, _ in rows})
    title = (
        "Ablations: mean over seeds (bars), ± one sample std (error bars), each seed (dots)\n"
        f"seeds per bar: {', '.join(map(str, n_seeds))}; dashed: the main run; hatched: leaks future tokens"
    )
    return save_titled(fig, title, out_stem, fontsize=10)


def sweep_points(
    records: list[dict], ablations: dict[str, str], option: str
) -> dict[str, list[tuple[Any, list[dict]]]]:
    """{corpus: [(value, records)]} sorted by value: each main run and those of its ablations that change
    exactly ``option`` (a model option such as ``n_atoms``), the value read from each run's model_config."""
    out: dict[str, list] = {}
    for corpus, rows in _ablation_groups(records, ablations).items():
        pts = []
        for _, _, recs, main_recs in rows:
            cfg = recs[0].get("model_config") or {}
            if option in cfg and (main_recs is None or set(setting_diff(recs[0], main_recs[0])) == {option}):
                pts.append((cfg[option], recs))
        if len(pts) > 1:
            out[corpus] = sorted(pts, key=lambda p: p[0])
    return out


def plot_sweep(
    records: list[dict], ablations: dict[str, str], option: str, out_stem: Path, xlabel: str, log_x: bool = True
) -> list[Path]:
    """Validation and test perplexity against one option (mean ± one sample std over seeds, each seed a dot),
    one line per corpus."""
    out_stem = Path(out_stem)
    data = sweep_points(records, ablations, option)
    title = f"Perplexity against {xlabel}"
    if not data:
        return save_figure(_empty_figure(title, f"no ablation of {option} alone"), out_stem)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (key, what) in zip(axes[0], (("val_ppl", "validation"), ("test_ppl", "test"))):
        for c, (corpus, pts) in enumerate(data.items()):
            xs, means, stds = [], [], []
            for x, recs in pts:
                vals = _seed_values(recs, key)
                if not vals:
                    continue
                agg = aggregate(vals)
                xs.append(x)
                means.append(agg["mean"])
                stds.append(agg["std"])
                ax.scatter([x] * len(vals), vals, color="white", edgecolor=cmap(c), linewidth=1.0, s=18, zorder=3)
            ax.errorbar(xs, means, yerr=stds, color=cmap(c), marker="o", capsize=4, label=corpus)
        if log_x:
            ax.set_xscale("log", base=2)
            ax.minorticks_off()
        values = sorted({x for pts in data.values() for x, _ in pts})
        ax.set_xticks(values)
        ax.set_xticklabels([str(v) for v in values])
        ax.set_xlabel(xlabel + (" (log scale)" if log_x else ""))
        ax.set_ylabel(f"{what} perplexity")
        ax.set_title(f"{what} perplexity")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=9)
    heading = f"{title}: mean ± one sample std over seeds (open circles: the seeds)"
    return save_titled(fig, heading, out_stem, fontsize=11)
