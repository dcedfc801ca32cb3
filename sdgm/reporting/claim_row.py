"""One row of the claims ledger: the verdict words, the ledger's columns, and the row every claim rule fills in
(sdgm.reporting.claim_rules and the rules beside it), with the number format and the grouping of reasons they share.
"""

from __future__ import annotations

import math

from .statistics import is_number

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
CONTRADICTED = "contradicted"
NOT_MEASURED = "not measured"
NOT_COMPARABLE = "not comparable"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, CONTRADICTED, NOT_COMPARABLE, NOT_MEASURED)

ONE_SEED = "one seed: no interval"
NOT_ON_DEVICE = "not measured on this device"

CLAIMS_COLUMNS = [
    "id",
    "claim",
    "reading",
    "where",
    "kind",
    "corpus",
    "corpus_stated",
    "metric",
    "unit",
    "experiment",
    "compared_with",
    "paper_value",
    "paper_text",
    "ours_value",
    "ours_ci_low",
    "ours_ci_high",
    "n",
    "tolerance",
    "verdict",
    "reason",
    "evidence",
    "shown",
    "commits",
]
NUMERIC_CLAIMS_COLUMNS = ["paper_value", "ours_value", "ours_ci_low", "ours_ci_high", "n", "tolerance"]


def tolerance_of(claims: dict, claim: dict, reference: float) -> float:
    tol = claims["tolerances"][claim["tolerance"]]
    return float(tol["abs"]) if "abs" in tol else float(tol["rel"]) * abs(reference)


def verdict_row(claim: dict, **kw) -> dict:
    row = {
        "id": claim["id"],
        "claim": " ".join(str(claim["claim"]).split()),
        "reading": " ".join(str(claim.get("reading", "")).split()),
        "where": claim["where"],
        "kind": claim["kind"],
        "corpus": claim["corpus"],
        "corpus_stated": "stated" if claim.get("corpus_stated", True) else "unstated (our choice)",
        "metric": claim.get("metric", ""),
        "unit": claim.get("unit", ""),
        "experiment": claim.get("experiment", ""),
        "compared_with": "",
        "paper_value": claim.get("paper"),
        "paper_text": claim.get("paper_text", ""),
        "ours_value": math.nan,
        "ours_ci_low": math.nan,
        "ours_ci_high": math.nan,
        "n": 0,
        "tolerance": math.nan,
        "verdict": NOT_MEASURED,
        "reason": "",
        "evidence": [],
        "shown": "",
        "commits": "",
    }
    row.update(kw)
    if row["paper_value"] is None:
        row["paper_value"] = math.nan
    return row


def fmt(v: float) -> str:
    if not is_number(v):
        return "–"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def grouped(reasons: list[str]) -> str:
    """ "a seed 0: why; b seed 0: why" as "a, b seed 0: why": one reason once."""
    by: dict[str, list[str]] = {}
    for r in reasons:
        who, _, why = r.partition(": ")
        by.setdefault(why, []).append(who)
    if len(by) == 1 and next(iter(by)):  # one reason for every record: said once
        return next(iter(by))
    return "; ".join(f"{', '.join(who)}: {why}" if why else ", ".join(who) for why, who in by.items())
