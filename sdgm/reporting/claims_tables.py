"""The claims tables: the ledger of sdgm.reporting.claim_rules rendered as tables/claims.{csv,md,tex,html} (claim,
paper, ours, verdict, reason, evidence; with a readings folder, the line naming the reading that closes each gap) and
the paper's main table shape as tables/compact.{csv,md,tex,html} (model, params, WikiText-2 and PTB validation and
test perplexity, speed, memory; "ours ± std (paper)", reasons as footnotes). The CSVs are for machines: numbers in
numeric columns (empty where absent), reasons in their own columns.
"""

from __future__ import annotations

import html
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..common.atomic import write_text_atomic
from .claim_row import CLAIMS_COLUMNS, NUMERIC_CLAIMS_COLUMNS, VERDICTS, fmt
from .evidence import Evidence, values_of
from .pages import PAGE, html_table
from .reading_gaps import explain_claims
from .readings_records import load_folder
from .render import to_latex, to_markdown
from .statistics import is_number

# ---- display ----------------------------------------------------------------------------------------------------


def rel_path(path: str, here: Path | None) -> str:
    return Path(os.path.relpath(path, here) if here is not None else path).as_posix()


def paper_cell(r) -> str:
    text = r["paper_text"] or ""
    if r["kind"] == "factor":
        return text
    if is_number(r["paper_value"]):
        return f"{r['paper_value']:,g}" + (f" ({text})" if text else "")
    return text or "–"


def ours_cell(r) -> str:
    if not is_number(r["ours_value"]):
        return "–"
    if r.get("shown"):
        return r["shown"]
    v = fmt(r["ours_value"])
    if r["kind"] == "procedure":
        v = f"{r['ours_value']:g} {r['unit']}"
    if r["kind"] == "factor":
        return f"x{r['ours_value']:.2f} over {r['compared_with']}"
    if r["kind"] in ("direction", "competitive"):
        sign = "+" if r["ours_value"] > 0 else ""
        v = sign + fmt(r["ours_value"]) + (f" vs {r['compared_with']}" if r["compared_with"] else "")
    if is_number(r["ours_ci_low"]) and is_number(r["ours_ci_high"]):
        v += f" [{fmt(r['ours_ci_low'])}, {fmt(r['ours_ci_high'])}]"
    return v


def _evidence_links(paths: str, here: Path | None, markdown: bool) -> list[str]:
    out = []
    for p in filter(None, paths.split(";")):
        label = "/".join(Path(p).parts[-3:])
        out.append(
            f"[{label}]({rel_path(p, here)})"
            if markdown
            else f'<a href="{html.escape(rel_path(p, here))}">{html.escape(label)}</a>'
        )
    return out


CORPUS_WORDS = {"all": "every corpus", "none": "none (one layer)"}


def claims_display(
    df: pd.DataFrame, here: Path | None = None, evidence: bool = True, markdown: bool = True, readings: bool = True
) -> pd.DataFrame:
    """The table people read: claim, paper, ours (mean [95 % interval]), verdict, reason, evidence links."""
    out = pd.DataFrame(
        {
            "claim": [
                r["claim"] + (f" (read as: {r['reading']})" if readings and r["reading"] else "")
                for _, r in df.iterrows()
            ],
            "corpus": [
                CORPUS_WORDS.get(r["corpus"], r["corpus"]) + ("" if r["corpus_stated"] == "stated" else "*")
                for _, r in df.iterrows()
            ],
            "paper": [paper_cell(r) for _, r in df.iterrows()],
            "ours": [ours_cell(r) for _, r in df.iterrows()],
            "verdict": [f"**{v}**" if markdown else v for v in df["verdict"]],
            "reason": list(df["reason"]),
        }
    )
    if evidence:
        out["commits"] = [c or "–" for c in df["commits"]]
        out["evidence"] = [" ".join(_evidence_links(p, here, markdown)) or "–" for p in df["evidence"]]
    return out


CLAIMS_CAPTION = (
    "The paper's claims ({source}), judged from this pipeline's records: ours is the mean over seeds "
    "with its 95 % Student-t interval (none with one seed: the stated tolerance decides); factor and "
    "one-seed direction claims show the ratio with both values, SDGM's first. Rules: docs/claims.md."
)


def summary(df: pd.DataFrame) -> str:
    counts = df["verdict"].value_counts()
    return ", ".join(f"{int(counts[v])} {v}" for v in VERDICTS if v in counts)


def _page(title: str, intro: str, table_html: str, notes: list[str]) -> str:
    body = f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(intro)}</p>\n{table_html}"
    if notes:
        body += "\n<ol>\n" + "\n".join(f"<li>{html.escape(n)}</li>" for n in notes) + "\n</ol>"
    return PAGE.format(title=html.escape(title), body=body)


def write_claims(df: pd.DataFrame, stem: Path, source: str, why: list[str] = ()) -> list[Path]:
    """claims.csv (machine), claims.md and claims.html (links relative to the tables folder), claims.tex. `why`
    (why_lines, from a readings results folder): claims.md and claims.html end with one line per claim not reproduced
    or contradicted, the closest valid reading and its gap."""
    stem = Path(stem)
    here = stem.parent
    paths = [stem.with_name(stem.name + ext) for ext in (".csv", ".md", ".tex", ".html")]
    caption = CLAIMS_CAPTION.format(source=source)
    write_text_atomic(paths[0], df.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(
        paths[1],
        f"Verdicts: {summary(df)}. {caption}\n\n"
        + to_markdown(claims_display(df, here))
        + f"\n{UNSTATED}\n"
        + "".join(f"\n{line}" + ("\n" if i == 0 else "") for i, line in enumerate(why))
        + ("\n" if why else ""),
    )
    write_text_atomic(
        paths[2], to_latex(claims_display(df, here, evidence=False, markdown=False), caption, label="tab:claims")
    )
    write_text_atomic(
        paths[3],
        _page(
            "The paper's claims, judged",
            f"Verdicts: {summary(df)}. {caption}",
            html_table(claims_display(df, here, markdown=False), raw=("evidence",)),
            [line.removeprefix("- ") for line in why],
        ),
    )
    return paths


# ---- which reading closes the gap (sdgm.reporting.reading_gaps, docs/readings.md) -------------------------------


def why_lines(frames: list[pd.DataFrame], readings: Path, here: Path | None) -> list[str]:
    """A heading line, then one markdown bullet per line of explanation: every claim judged not reproduced or
    contradicted in any of the claims tables `frames` gets the line sdgm.reporting.reading_gaps.explain_claim reads
    from the readings folder's records (the closest VALID reading and its gap, or that none explains it); claims with
    the same line share its bullet. No such claim: no lines."""
    data = load_folder(readings)
    lines: dict[str, str] = {}
    for df in frames:
        for cid, line in explain_claims(df, data).items():
            lines.setdefault(cid, line)
    if not lines:
        return []
    text = claim_texts(frames)  # one claim per corpus: say which
    groups: dict[str, list[str]] = {}
    for cid, line in lines.items():
        groups.setdefault(line, []).append(text.get(cid, cid))
    rel = rel_path(str(readings), here)
    return [
        f"Which reading closes the gap: for each claim not reproduced or contradicted, the closest valid "
        f"reading (its causality audit passed) measured by the readings run, [{rel}]({rel}) "
        f"(docs/readings.md), at one epoch of {data.corpus}:"
    ] + [f"- {'; '.join(claims)}: {line}" for line, claims in groups.items()]


# ---- the compact main table ------------------------------------------------------------------------------------

# (column, source, corpus (None: the engineering corpus), record key, scale, paper key, decimals)
COMPACT_COLUMNS = (
    ("params_m", "metrics", None, "params", 1e-6, "params_m", 2),
    ("wikitext2_val_ppl", "metrics", "wikitext2", "val_ppl", 1.0, "val_ppl", 1),
    ("wikitext2_test_ppl", "metrics", "wikitext2", "test_ppl", 1.0, None, 1),
    ("ptb_val_ppl", "metrics", "ptb", "val_ppl", 1.0, "val_ppl", 1),
    ("ptb_test_ppl", "metrics", "ptb", "test_ppl", 1.0, None, 1),
    ("train_tok_s", "throughput", None, "metrics.train_tokens_per_s", 1.0, "train_tokens_per_s", 0),
    ("peak_mem_gb", "metrics", None, "peak_mem_bytes", 1e-9, "peak_mem_gb", 2),
)
COMPACT_HEADERS = {
    "params_m": "params (M)",
    "wikitext2_val_ppl": "WikiText-2 val",
    "wikitext2_test_ppl": "WikiText-2 test",
    "ptb_val_ppl": "PTB val",
    "ptb_test_ppl": "PTB test",
    "train_tok_s": "train tok/s",
    "peak_mem_gb": "train memory (GB)",
}


def compact_table(claims: dict, ev: Evidence, paper: list[dict]) -> pd.DataFrame:
    """The machine table: per model and column, mean, sample std, seeds, the paper's number and the reason for a
    missing value (own column)."""
    eng = claims["compact"].get("engineering_corpus")
    paper_ix = {(p["experiment"], p["corpus"]): p for p in paper}
    rows = []
    for spec in claims["compact"].get("rows", []):
        exp = spec["experiment"]
        if not any(r["experiment"] == exp for r in ev.metrics):
            continue
        row: dict[str, Any] = {"experiment": exp, "model": spec.get("label", exp), "leaks": bool(ev.leaking([exp]))}
        for col, source, corpus, key, scale, pkey, _ in COMPACT_COLUMNS:
            corpus = corpus or eng
            claim = {"source": source, "metric": key, "scale": scale, "corpus": corpus}
            vals, missing, _ = values_of(ev, claim, exp) if corpus else ([], ["no corpus named"], [])
            arr = np.asarray(vals, dtype=float)
            row[col] = float(arr.mean()) if arr.size else math.nan
            row[f"{col}_std"] = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
            row[f"{col}_n"] = int(arr.size)
            pv = paper_ix.get((exp, corpus), {}).get(pkey) if pkey else None
            row[f"{col}_paper"] = float(pv) if pv is not None else math.nan
            row[f"{col}_na"] = "" if arr.size else "; ".join(dict.fromkeys(m.split(": ", 1)[-1] for m in missing))
        rows.append(row)
    cols = ["experiment", "model", "leaks"] + [
        f"{c}{s}" for c, *_ in COMPACT_COLUMNS for s in ("", "_std", "_n", "_paper", "_na")
    ]
    return pd.DataFrame(rows, columns=cols)


LEAK_NOTE = "leaks future tokens (failed the causality audit): not a language-model perplexity, never compared"
UNSTATED = "*: the paper does not name the corpus; ours is our choice."


def compact_display(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(cells "ours ± std (paper)", footnotes): a missing value reads "–" with the number of its footnote."""
    notes: list[str] = []

    def note(text: str) -> str:
        if text not in notes:
            notes.append(text)
        return f"[{notes.index(text) + 1}]"

    rows = []
    for _, r in df.iterrows():
        row = {"model": r["model"] + (f" (non-causal) {note(LEAK_NOTE)}" if r["leaks"] else "")}
        for col, *_, dec in COMPACT_COLUMNS:
            if is_number(r[col]):
                cell = f"{r[col]:,.{dec}f}"
                if is_number(r[f"{col}_std"]):
                    cell += f" ± {r[f'{col}_std']:,.{dec}f}"
                if is_number(r[f"{col}_paper"]):
                    cell += f" ({r[f'{col}_paper']:,g})"
            else:
                cell = "– " + note(r[f"{col}_na"] or "not measured")
            row[COMPACT_HEADERS[col]] = cell
        rows.append(row)
    return pd.DataFrame(rows, columns=["model", *COMPACT_HEADERS.values()]), notes


def compact_caption(claims: dict, df: pd.DataFrame) -> str:
    eng = claims["compact"].get("engineering_corpus")
    ns = sorted({int(df[f"{c}_n"].max()) for c, *_ in COMPACT_COLUMNS if len(df)} - {0})
    seeds = "one seed: no std" if ns == [1] else "± sample std over seeds"
    return (
        f"Ours ({seeds}), the paper's number in brackets where it gives one. Perplexity: windows of L tokens, "
        f"each without earlier context. Params, memory (peak of training) and speed (training tokens/s, alone "
        f"on the device) from the {eng} runs; the paper does not name the corpus."
    )


def write_compact(df: pd.DataFrame, stem: Path, caption: str) -> list[Path]:
    stem = Path(stem)
    paths = [stem.with_name(stem.name + ext) for ext in (".csv", ".md", ".tex", ".html")]
    disp, notes = compact_display(df)
    foot = "".join(f"\n{i + 1}. {n}" for i, n in enumerate(notes))
    write_text_atomic(paths[0], df.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(paths[1], f"{caption}\n\n{to_markdown(disp)}{foot}\n")
    write_text_atomic(
        paths[2],
        to_latex(disp, caption + " " + " ".join(f"[{i + 1}] {n}." for i, n in enumerate(notes)), label="tab:compact"),
    )
    write_text_atomic(paths[3], _page("Main results", caption, html_table(disp), notes))
    return paths


def read_claims_csv(path: Path) -> pd.DataFrame:
    text = {c: str for c in CLAIMS_COLUMNS if c not in NUMERIC_CLAIMS_COLUMNS}
    return pd.read_csv(
        path,
        dtype=text,
        keep_default_na=False,
        converters={c: lambda v: float(v) if v else math.nan for c in NUMERIC_CLAIMS_COLUMNS},
    )


def claim_texts(frames) -> dict[str, str]:
    """Each claim's text by id; a text that two claims share (one claim per corpus) names its corpus."""
    text = {cid: claim for df in frames for cid, claim in zip(df["id"], df["claim"])}
    twice = {t for t, n in Counter(text.values()).items() if n > 1}
    corpus = {cid: c for df in frames for cid, c in zip(df["id"], df["corpus"])}
    return {cid: f"{t} ({CORPUS_WORDS.get(corpus[cid], corpus[cid])})" if t in twice else t for cid, t in text.items()}
