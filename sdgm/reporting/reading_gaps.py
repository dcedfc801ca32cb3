"""Which reading closes the gap (docs/readings.md): explain_claims(claims, data) -> {claim id: line} for every claim
judged "not reproduced" or "contradicted": the closest VALID reading (its causality audit passed) and its gap, or
that no reading explains the gap. A reading that leaks future tokens is never named the closest valid reading; where
one comes closer, the line says so. The claims tables carry these lines (sdgm.reporting.claims_tables.why_lines).
"""

from __future__ import annotations

import math

import pandas as pd

from .readings_records import WINDOWS, Entry, ReadingsData, claims_tolerances
from .records import PAPER_PATH, load_paper

EXPLAINED_VERDICTS = ("not reproduced", "contradicted")


def _log_gap(value: float, target: float) -> float:
    return abs(math.log(value / target)) if value > 0 and target > 0 else math.inf


def _paper_ppl(paper: list[dict], experiment: str, corpus: str) -> float | None:
    for row in paper:
        if row["experiment"] == experiment and row["corpus"] == corpus and "val_ppl" in row:
            return float(row["val_ppl"])
    return None


def _closest(candidates: list, value, target: float, gap):
    """(closest valid candidate, leaking candidates that get further toward the target than it: closer, or past
    it); candidates are (valid, item). A leaking candidate is never the first."""
    valid = [c for ok, c in candidates if ok]
    best = min(valid, key=lambda c: gap(value(c), target)) if valid else None
    if best is None:
        return None, []
    side = math.copysign(1.0, target - value(best))  # the direction from the best valid reading to the target
    further = [
        c
        for ok, c in candidates
        if not ok and (gap(value(c), target) < gap(value(best), target) or (value(c) - value(best)) * side > 0)
    ]
    return best, further


def explain_claim(claim: dict, data: ReadingsData, paper: list[dict] | None = None) -> str | None:
    """One line for a claim judged not reproduced or contradicted (None for any other verdict). `claim` is a row of
    the claims table (sdgm.reporting.claim_rules: id, kind, metric, experiment, compared_with, corpus, paper_value,
    verdict)."""
    if claim.get("verdict") not in EXPLAINED_VERDICTS:
        return None
    paper = load_paper(PAPER_PATH) if paper is None else paper
    tolerances, claims = claims_tolerances()
    metric, exp, corpus = claim.get("metric", ""), claim.get("experiment", ""), claim.get("corpus", "")
    other = str(claim.get("compared_with") or "")
    if not metric:  # claims with several measures name theirs in claims.yaml
        metric = (claims.get(claim["id"], {}).get("measures") or [{}])[0].get("metric", "")
    metric = metric.removeprefix("metrics.")  # a metrics.json key, as the claims table names it
    where = "" if corpus == data.corpus else f" (readings on {data.corpus})"
    sdgm_model = next((e.model for e in data.entries if e.experiment == data.default), "sdgm")

    between_readings = claim.get("kind") == "direction" and other not in ("", "nan", data.reference)
    if metric in ("val_ppl", "val_ppl_mem", "cosine_val") and between_readings:  # e.g. the STFT loss lowers the PPL
        return _explain_difference(
            claim, data, exp, other, "cosine_val" if metric == "cosine_val" else "val_ppl", where
        )
    ours, ref = _paper_ppl(paper, exp, corpus), _paper_ppl(paper, data.reference, corpus)
    if metric in ("val_ppl", "val_ppl_mem") and exp != data.reference and ours is not None and ref is not None:
        target = ours / ref
        tol = tolerances["perplexity"]["rel"]
        cands = [(e.valid, e) for e in data.entries if e.model == sdgm_model and e.protocol == WINDOWS]
        best, closer = _closest(cands, data.ratio, target, _log_gap)
        if best is None:
            return "no valid SDGM reading was measured"
        r = data.ratio(best)
        head = (
            f"closest valid reading{where}: {data.label(best.experiment)}, PPL ×{r:.2f} of {data.reference} at "
            f"the same budget (paper ×{target:.2f})"
        )
        verdict = (
            "it closes the gap"
            if abs(r / target - 1) <= tol
            else f"no valid reading closes the gap (tolerance ±{100 * tol:.0f} %)"
        )
        leak = (
            (
                "; only the leaking "
                + ", ".join(f"{data.label(c.experiment)}: ×{data.ratio(c):.2f}" for c in closer)
                + " gets further"
            )
            if closer
            else ""
        )
        return f"{head}; {verdict}{leak}"
    if metric in ("val_ppl", "val_ppl_mem") and exp == data.reference:
        target = float(claim["paper_value"])
        tol = tolerances["perplexity"]["rel"]
        cands = [(e.valid, e) for e in data.reference_entries()]
        best, _ = _closest(cands, lambda e: e.val_ppl, target, _log_gap)
        if best is None:
            return f"no valid reading of {data.reference} was measured"

        def desc(e: Entry) -> str:
            return e.name if e.protocol in e.name else f"{e.name} ({e.protocol})"

        others = ", ".join(f"{desc(e)}: {e.val_ppl:.1f}" for e in data.reference_entries() if e is not best)
        within = abs(best.val_ppl / target - 1) <= tol
        return (
            f"closest reading{where}: {desc(best)}, PPL {best.val_ppl:.1f} at the "
            f"budget of {best.train_tokens:,.0f} training tokens against the paper's {target:g} "
            f"({others}); " + ("it closes the gap" if within else "no protocol reading closes the gap")
        )
    if metric == "params" and claim.get("kind") != "factor":  # a count, not a factor between models
        target, tol = float(claim["paper_value"]), tolerances["parameters"]["rel"]
        if not data.parameters:
            return "no reading explains the gap: no parameter readings recorded"
        rows = data.parameters
        base = next((r["model_config"] for r in data.records if r["experiment"] == data.default), {})

        def away(r) -> list[str]:  # what a reading changes from the default, the claim's corpus included
            changed = [f"{k} {r[k]}" for k in r if k not in ("corpus", "vocab_size", "params") and r[k] != base.get(k)]
            return ([f"{r['corpus']}'s vocabulary"] if r["corpus"] != corpus else []) + changed

        def off(r) -> float:
            return abs(r["params"] / 1e6 - target)

        within = [r for r in rows if off(r) <= tol * target]
        # within the tolerance: the reading that changes the fewest options; else the closest count
        best = min(within, key=lambda r: (len(away(r)), off(r))) if within else min(rows, key=off)
        what = ", ".join(away(best)) or "the default"
        return (
            f"{'fewest-change reading within' if within else 'closest reading, outside'} ±{100 * tol:.0f} % of "
            f"{target:g} M: {what}: {best['params'] / 1e6:.2f} M "
            f"({100 * (best['params'] / 1e6 - target) / target:+.1f} %); {len(within)} of {len(rows)} architecture "
            f"readings lie within" + ("" if within else "; no reading explains the gap")
        )
    if metric == "cosine_val":
        target, tol = float(claim["paper_value"]), tolerances["cosine"]["abs"]
        if exp not in data.cosine:
            return f"no reading explains the gap: no cosine readings of {exp}"
        if not data.valid.get(exp, False):
            return f"no valid reading: {exp} leaks future tokens"
        key = min(data.cosine[exp], key=lambda k: abs(data.cosine[exp][k] - target))
        v = data.cosine[exp][key]
        return (
            f"closest measurement reading{where}: {exp}, cosine {key} (target/vectors/pooling) = {v:.3f} "
            f"(paper {target:g}); "
            + (
                "it closes the gap"
                if abs(v - target) <= tol
                else f"no measurement reading closes the gap (tolerance ±{tol:g})"
            )
        )
    return f"no reading measures this claim ({metric or claim.get('kind')}): the gap is not explained by the readings"


def _explain_difference(claim, data: ReadingsData, exp: str, other: str, metric: str, where: str) -> str:
    def value(e):
        if metric == "val_ppl":
            return next(x.val_ppl for x in data.entries if x.experiment == e and x.protocol == WINDOWS)
        return data.cosine.get(e, {}).get("current/raw/mean", math.nan)

    if exp not in data.valid or other not in data.valid:
        return f"no reading explains the gap: {exp} and {other} are not both among the readings"
    if not (data.valid[exp] and data.valid[other]):
        return f"no valid reading: {exp} or {other} leaks future tokens"
    d, paper = value(exp) - value(other), float(claim["paper_value"])
    agree = (d > 0) == (paper > 0)
    return f"at the readings' budget{where}: {exp} − {other} = {d:+.4g} ({metric}; paper {paper:+g}): " + (
        "the readings agree with the paper's direction"
        if agree
        else "the readings contradict it too: no reading explains the gap"
    )


def explain_claims(claims, data: ReadingsData, paper: list[dict] | None = None) -> dict[str, str]:
    """{claim id: line} for each claim (rows of the claims table, as dicts or a DataFrame) that is not reproduced or
    contradicted."""
    rows = claims.to_dict("records") if isinstance(claims, pd.DataFrame) else list(claims)
    out = {}
    for row in rows:
        line = explain_claim(row, data, paper)
        if line is not None:
            out[row["id"]] = line
    return out
