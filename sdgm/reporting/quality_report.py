"""The generation-quality table and figure, from the quality records only (rule generation_quality).

Reads quality/{corpus}/{run}.json (sdgm.reporting.sample_scores.score_run) and writes
tables/generation_quality.{csv,md,tex} (the CSV numeric: value, _low, _high per statistic; Markdown and LaTeX "value
[low, high]") and figures/generation_quality.{png,pdf}. One row per run and set of sequences, then per corpus and set
the yardsticks: the prompts' true continuations and held-out text of the same lengths.

    python -m sdgm.reporting.quality_report --records results/h100   # score a results folder's samples, then draw them
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd

from ..common.atomic import read_json, write_text_atomic
from ..common.missing import na
from .plots import save_titled
from .records import ReportError
from .render import to_latex, to_markdown
from .sample_scores import STATS, score_run

matplotlib.use("Agg")  # figures go to files, never to a window

SETS = {
    "continuations": "continuations of validation prompts",
    "gmm_continuations": "GMM-coefficient continuations",
    "free": "free samples",
    "free_gmm": "free GMM-coefficient samples",
}
YARDSTICKS = {"true_continuations": "true continuations", "heldout": "held-out text (test split)"}
HEADERS = {
    "reference_ppl": "reference PPL",
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "distinct_3": "distinct-3",
    "seq_rep_4": "seq-rep-4",
    "self_bleu": "self-BLEU",
    "zipf": "Zipf",
}
DECIMALS = {"reference_ppl": 1, "self_bleu": 2}


def load_quality(path) -> dict:
    path = Path(path)
    rec = read_json(path, "quality record", ReportError)
    if not isinstance(rec, dict) or rec.get("kind") != "quality" or not isinstance(rec.get("sets"), dict):
        raise ReportError(f"{path}: not a quality record")
    rec["_path"] = str(path)
    return rec


def _row(base: dict, entry: dict) -> dict:
    row = {**base, "n": entry["n"], "tokens": entry["tokens"], "oov": entry["oov"]}
    for s in STATS:
        st = entry["stats"][s]
        row[s], row[f"{s}_low"], row[f"{s}_high"] = (
            math.nan if st.get(k) is None else st[k] for k in ("value", "low", "high")
        )
        row[f"{s}_na"] = st.get("na", "")
    return row


def quality_table(records: list[dict]) -> pd.DataFrame:
    """The machine table: per run and set, then per corpus and set its yardsticks."""
    rows, yard = [], {}
    for rec in sorted(records, key=lambda r: (r["corpus"], r["experiment"], r["seed"])):
        for name in [s for s in SETS if s in rec["sets"]]:
            entry = rec["sets"][name]
            rows.append(
                _row(
                    {
                        "corpus": rec["corpus"],
                        "experiment": rec["experiment"],
                        "seed": rec["seed"],
                        "set": name,
                        "device": rec.get("device") or "",
                    },
                    entry,
                )
            )
            for y, ye in entry.get("yardsticks", {}).items():
                yard.setdefault(
                    (rec["corpus"], name, y),
                    _row(
                        {"corpus": rec["corpus"], "experiment": YARDSTICKS[y], "seed": "", "set": name, "device": ""},
                        ye,
                    ),
                )
    rows += [yard[k] for k in sorted(yard)]
    cols = ["corpus", "experiment", "seed", "set", "device", "n", "tokens", "oov"] + [
        f"{s}{x}" for s in STATS for x in ("", "_low", "_high", "_na")
    ]
    return pd.DataFrame(rows, columns=cols)


def _cell(r, s: str) -> str:
    d = DECIMALS.get(s, 3)
    if not isinstance(r[s], float) or math.isnan(r[s]):
        return na(r[f"{s}_na"])
    cell = f"{r[s]:.{d}f}"
    if not math.isnan(r[f"{s}_low"]):
        cell += f" [{r[f'{s}_low']:.{d}f}, {r[f'{s}_high']:.{d}f}]"
    return cell


def quality_display(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "corpus": r["corpus"],
                "model": r["experiment"] + (f" s{r['seed']}" if r["seed"] != "" else ""),
                "set": SETS[r["set"]],
                "sequences x tokens": f"{r['n']} x {r['tokens'] // max(r['n'], 1)}",
                **{HEADERS[s]: _cell(r, s) for s in STATS},
            }
            for _, r in df.iterrows()
        ],
        columns=["corpus", "model", "set", "sequences x tokens", *HEADERS.values()],
    )


def plot_quality(df: pd.DataFrame, out_stem: Path) -> list[Path]:
    """Reference perplexity with its interval per run, one panel per corpus and set; the yardsticks as lines."""
    panels = sorted({(r["corpus"], r["set"]) for _, r in df.iterrows()}) or [("(no records)", "")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
    for ax, (corpus, name) in zip(axes[0], panels):
        part = df[(df["corpus"] == corpus) & (df["set"] == name)]
        runs = part[part["seed"] != ""].reset_index(drop=True)
        runs = runs[runs["reference_ppl"].notna()].reset_index(drop=True)
        for i, r in runs.iterrows():
            lo, hi = r["reference_ppl_low"], r["reference_ppl_high"]
            err = [[r["reference_ppl"] - lo], [hi - r["reference_ppl"]]] if not math.isnan(lo) else None
            ax.errorbar([i], [r["reference_ppl"]], yerr=err, fmt="o", color="C0", capsize=3)
        for (_, y), style in zip(part[part["seed"] == ""].iterrows(), ("--", ":")):
            if not math.isnan(y["reference_ppl"]):
                ax.axhline(
                    y["reference_ppl"],
                    color="grey",
                    linestyle=style,
                    lw=1,
                    label=f"{y['experiment']}: {y['reference_ppl']:.0f}",
                )
        ax.set_xticks(
            range(len(runs)),
            [f"{r['experiment']}-s{r['seed']}" for _, r in runs.iterrows()],
            rotation=45,
            ha="right",
            fontsize=8,
        )
        ax.set_yscale("log")
        ax.set_ylabel("reference perplexity (KN trigram of the training split)")
        ax.set_title(f"{corpus}: {SETS.get(name, name)}", fontsize=9)
        ax.grid(True, which="both", axis="y", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    devices = sorted(set(df["device"]) - {""})
    title = (
        "Generation quality: reference perplexity of the samples, 95 % bootstrap intervals over prompts; "
        f"{'; '.join(devices) or 'device not recorded'}"
    )
    return save_titled(fig, title, out_stem)


CAPTION = (
    "Generation quality of every run's samples, weight-free: reference perplexity under an interpolated "
    "Kneser-Ney trigram model of the training split, distinct-n and seq-rep-4 within a sequence, self-BLEU "
    "across sequences (sacrebleu), the Zipf coefficient of the pooled counts; [95 % interval] over "
    "sequences (bootstrap; Zipf: jackknife). Yardsticks: the prompts' true continuations and held-out text of "
    "the same lengths. Rules: docs/claims.md."
)


def build_quality_report(quality_paths, tables_dir, figures_dir) -> dict:
    df = quality_table([load_quality(p) for p in quality_paths])
    stem = Path(tables_dir) / "generation_quality"
    disp = quality_display(df)
    devices = sorted(set(df["device"]) - {""})
    caption = CAPTION + (f" Device: {'; '.join(devices)}." if devices else "")
    paths = [stem.with_name(stem.name + ext) for ext in (".csv", ".md", ".tex")]
    write_text_atomic(paths[0], df.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(paths[1], f"{caption}\n\n{to_markdown(disp)}")
    write_text_atomic(paths[2], to_latex(disp, caption, label="tab:generation_quality"))
    return {"table": paths, "figure": plot_quality(df, Path(figures_dir) / "generation_quality")}


def main(argv: list[str] | None = None) -> int:
    """Score the samples of a results folder (samples/{corpus}/{run}.txt, and {run}.continuations.json where
    there) into quality/{corpus}/{run}.json, then draw its generation-quality table and figure."""
    import argparse

    ap = argparse.ArgumentParser(description="Score a results folder's samples without model weights.")
    ap.add_argument("--records", type=Path, required=True, help="a results folder (runs/, samples/)")
    ap.add_argument(
        "--corpora",
        type=Path,
        default=Path(__file__).parents[1] / "data" / "corpora",
        help="a folder with {corpus}/train.txt[.xz] and test.txt[.xz] (default: the shipped corpora)",
    )
    args = ap.parse_args(argv)
    root, written = args.records, []
    for samples in sorted(root.glob("samples/*/*.txt")):
        corpus, run = samples.parent.name, samples.stem
        split = {
            s: next(
                p for p in (args.corpora / corpus / f"{s}.txt", args.corpora / corpus / f"{s}.txt.xz") if p.exists()
            )
            for s in ("train", "test")
        }
        cont = samples.with_name(f"{run}.continuations.json")
        out = root / "quality" / corpus / f"{run}.json"
        score_run(
            samples,
            cont if cont.exists() else None,
            split["train"],
            split["test"],
            root / "runs" / corpus / run / "metrics.json",
            out,
        )
        written.append(out)
        print(f"quality: {out}")
    print(build_quality_report(written, root / "tables", root / "figures"))
    from .pages import table_html

    table_html(
        root / "tables" / "generation_quality.csv",
        root / "tables" / "generation_quality.html",
        "Table: generation_quality",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
