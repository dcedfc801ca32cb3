"""Writing a table as CSV (machines), Markdown and LaTeX (people), each file atomically."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from ..common.atomic import write_text_atomic
from ..common.missing import NOT_MEASURED, na


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        # Never expected in a display frame; refuse to render a blank.
        return na(NOT_MEASURED)
    return str(v)


def to_markdown(df: pd.DataFrame) -> str:
    """GitHub pipe table (no tabulate dependency)."""

    def esc(s: str) -> str:
        return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    header = [esc(str(c)) for c in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(esc(_cell(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "−": r"$-$",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
}


def latex_escape(s: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(s))


def to_latex(df: pd.DataFrame, caption: str, label: str | None = None) -> str:
    """booktabs ``tabular`` inside a ``table`` environment (no jinja2 dependency)."""
    text_cols = {"experiment", "model", "corpus", "causal"}
    spec = "".join("l" if c in text_cols else "r" for c in df.columns)
    out = ["\\begin{table}[t]", "\\centering", "\\small", f"\\caption{{{latex_escape(caption)}}}"]
    if label:
        out.append(f"\\label{{{label}}}")
    out += [
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
        " & ".join(latex_escape(str(c)) for c in df.columns) + " \\\\",
        "\\midrule",
    ]
    for row in df.itertuples(index=False):
        out.append(" & ".join(latex_escape(_cell(v)) for v in row) + " \\\\")
    out += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(out) + "\n"


NA_CELL = re.compile(r"n/a \((.*)\)", re.S)


def footnote_na(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Every cell "n/a (reason)" as "n/a [k]", each reason numbered once: a table whose rows repeat one long
    reason stays readable. Returns the frame to show and the reasons in the order of their numbers."""
    notes: list[str] = []

    def cell(v):
        m = NA_CELL.fullmatch(v) if isinstance(v, str) else None
        if m is None:
            return v
        if m.group(1) not in notes:
            notes.append(m.group(1))
        return f"n/a [{notes.index(m.group(1)) + 1}]"

    return df.map(cell), notes


def write_table(df: pd.DataFrame, stem: Path, caption: str, footnotes: bool = False) -> list[Path]:
    """Write ``stem.csv``, ``stem.md`` and ``stem.tex`` atomically; returns the paths. footnotes: the Markdown and
    LaTeX show each "n/a (reason)" as a numbered marker with the reasons below (the CSV keeps every cell whole)."""
    stem = Path(stem)
    paths = [stem.with_name(stem.name + ext) for ext in (".csv", ".md", ".tex")]
    shown, notes = footnote_na(df) if footnotes else (df, [])
    write_text_atomic(paths[0], df.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(
        paths[1], to_markdown(shown) + "".join(f"\n{i + 1}. {n}" for i, n in enumerate(notes)) + ("\n" if notes else "")
    )
    write_text_atomic(
        paths[2],
        to_latex(shown, caption + "".join(f" [{i + 1}] {n}." for i, n in enumerate(notes)), label=f"tab:{stem.name}"),
    )
    return paths
