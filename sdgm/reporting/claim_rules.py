"""The claim rules: the claims file (sdgm/reporting/claims.yaml) and one judge per kind of claim, written out in
docs/claims.md; `judge` gives one claim's row and `claims_table` the ledger. The row and the verdict words are in
sdgm.reporting.claim_row, the slope and generation-quality rules in slope_rule and competitive_rule, the statistics
in sdgm.reporting.statistics, the evidence (the records a claim is judged from) in sdgm.reporting.evidence;
sdgm.reporting.claims_tables renders the tables and pages from the ledger.
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..common.schema import CLAIMS_SCHEMA_PATH, SchemaViolation, check, strict_validator
from .claim_row import (
    CLAIMS_COLUMNS,
    CONTRADICTED,
    NOT_COMPARABLE,
    NOT_MEASURED,
    NOT_ON_DEVICE,
    NOT_REPRODUCED,
    NUMERIC_CLAIMS_COLUMNS,
    ONE_SEED,
    REPRODUCED,
    fmt,
    grouped,
    tolerance_of,
    verdict_row,
)
from .competitive_rule import judge_competitive
from .evidence import Evidence, check_evidence, choose_measure, commits_of, experiments_of, values_of
from .records import ReportError, read_yaml_mapping
from .slope_rule import judge_slope
from .statistics import difference_interval, interval

CLAIMS_PATH = Path(__file__).resolve().parent / "claims.yaml"
CLAIM_SCHEMA = json.loads(CLAIMS_SCHEMA_PATH.read_text(encoding="utf-8"))["$defs"]["claim"]
CLAIM_KINDS = tuple(CLAIM_SCHEMA["properties"]["kind"]["enum"])  # docs/claims.md: one rule each


# ---- the claims file ---------------------------------------------------------------------------------------------


def load_claims(path: str | Path | None = None) -> dict:
    """The claims file, checked against sdgm/common/schemas/claims.schema.json and for what a schema cannot say
    (unique ids, defined tolerances, a factor claim's relative tolerance): {"source", "tolerances", "claims",
    "compact"}. An error is one line naming the file, the claim and the field."""
    path = Path(path) if path is not None else CLAIMS_PATH
    data = read_yaml_mapping(path, "claims", "the claims file")
    try:
        check(_claims_validator(), data)
    except SchemaViolation as e:
        raise ReportError(_claims_error(path, data, e)) from None
    tolerances = data["tolerances"]
    seen = set()
    for i, c in enumerate(data["claims"]):
        where = f"{path}: claim {i} ({c['id']})"
        if c["id"] in seen:
            raise ReportError(f"{where}: duplicate id")
        seen.add(c["id"])
        if "tolerance" in c and c["tolerance"] not in tolerances:
            raise ReportError(f"{where}: tolerance {c['tolerance']!r} is not defined under 'tolerances'")
        if c["kind"] == "factor" and "rel" not in tolerances[c["tolerance"]]:
            raise ReportError(
                f"{where}: tolerance {c['tolerance']!r}: a factor claim needs a relative tolerance ('rel')"
            )
    return {
        "source": data.get("source", "the SDGM paper"),
        "tolerances": tolerances,
        "claims": data["claims"],
        "compact": data.get("compact") or {"rows": [], "engineering_corpus": None},
    }


@functools.cache
def _claims_validator():
    return strict_validator(json.loads(CLAIMS_SCHEMA_PATH.read_text(encoding="utf-8")))


def _claims_error(path: Path, data: dict, e: SchemaViolation) -> str:
    """ "claims.yaml: claim 3 (params): kind must be one of ..., got 'vibes'": the claim by index and id, the field
    relative to it."""
    m = re.fullmatch(r"claims\[(\d+)\](?:\.(.*))?", e.field)
    if not m:
        return f"{path}: {e}"
    i = int(m.group(1))
    c = data["claims"][i]
    cid = c.get("id", "?") if isinstance(c, dict) else "?"
    text = str(e).replace(f"claims[{i}].", "").replace(f"claims[{i}]", "the claim")
    return f"{path}: claim {i} ({cid}): {text}"


# ---- the rules ---------------------------------------------------------------------------------------------------


def judge_value(claims: dict, claim: dict, ev: Evidence) -> dict:
    """value: reproduced when the paper's number lies inside our 95 % interval over seeds; with one seed, when it
    lies within the tolerance. engineering: reproduced when it lies inside the interval or within the tolerance."""
    values, missing, paths = values_of(ev, claim, claim["experiment"])
    if not values:
        return verdict_row(claim, reason="; ".join(missing), evidence=paths)
    mean, lo, hi, n = interval(values)
    paper = float(claim["paper"])
    tol = tolerance_of(claims, claim, paper)
    within = abs(mean - paper) <= tol
    gap = f"ours - paper = {mean - paper:+.4g} {claim.get('unit', '')}".rstrip()
    notes = [f"{len(missing)} seed(s) without a value ({'; '.join(missing)})"] if missing else []
    if n < 2:
        verdict = REPRODUCED if within else NOT_REPRODUCED
        reason = f"{ONE_SEED}; {gap}, tolerance ±{tol:.4g} ({claim['tolerance']})"
    else:
        inside = lo <= paper <= hi
        if claim["kind"] == "engineering":
            verdict = REPRODUCED if inside or within else NOT_REPRODUCED
            reason = (
                f"paper {'inside' if inside else 'outside'} the 95 % interval over {n} seeds; {gap}, "
                f"tolerance ±{tol:.4g} ({claim['tolerance']})"
            )
        else:
            verdict = REPRODUCED if inside else NOT_REPRODUCED
            reason = f"paper {'inside' if inside else 'outside'} the 95 % interval over {n} seeds; {gap}"
    return verdict_row(
        claim,
        ours_value=mean,
        ours_ci_low=lo,
        ours_ci_high=hi,
        n=n,
        tolerance=tol,
        verdict=verdict,
        reason="; ".join([reason, *notes]),
        evidence=paths,
    )


def judge_direction(claims: dict, claim: dict, ev: Evidence) -> dict:
    """direction: the difference d = ours(experiment) - ours(best of `than`), signed so that the claim says e > 0.
    Reproduced when its 95 % (Welch) interval lies above 0, contradicted when below 0, not reproduced when it
    contains 0. With one seed on either side: the tolerance (of the compared value) replaces the interval."""
    a, missing, paths = values_of(ev, claim, claim["experiment"])
    others = {}
    for exp in claim["than"]:
        vals, miss, p = values_of(ev, claim, exp)
        paths += p
        missing += miss
        others[exp] = vals
    absent = [e for e in [claim["experiment"], *claim["than"]] if not (a if e == claim["experiment"] else others[e])]
    if absent:
        return verdict_row(claim, reason=f"no value for {', '.join(absent)}: " + grouped(missing), evidence=paths)
    pick = min if claim["better"] == "lower" else max
    best = pick(others, key=lambda e: float(np.mean(others[e])))
    b = others[best]
    d, lo, hi = difference_interval(a, b)
    sign = -1.0 if claim["better"] == "lower" else 1.0
    tol = tolerance_of(claims, claim, float(np.mean(b)))
    what = f"{claim['experiment']} - {best} = {d:+.4g} {claim.get('unit', '')}".rstrip() + (
        "" if len(claim["than"]) == 1 else f" ({best}: the {claim['better']} of {', '.join(claim['than'])})"
    )
    n = min(len(a), len(b))
    spec = claims["tolerances"][claim["tolerance"]]
    unit = claim.get("unit", "")
    shown = f"{'+' if d > 0 else ''}{fmt(d)} {unit} vs {best}".replace("  ", " ")
    ma = float(np.mean(a))
    if (len(a) < 2 or len(b) < 2) and "rel" in spec and ma > 0 and float(np.mean(b)) > 0:
        rel = float(spec["rel"])
        mb = float(np.mean(b))
        f = mb / ma if claim["better"] == "lower" else ma / mb
        fb = {
            e: (float(np.mean(v)) / ma if claim["better"] == "lower" else ma / float(np.mean(v)))
            for e, v in others.items()
        }
        tied = ties(fb, best, rel)
        verdict = REPRODUCED if f >= 1 + rel else CONTRADICTED if f < 1 / (1 + rel) else NOT_REPRODUCED
        reason = (
            f"{ONE_SEED}; {what}; ratio x{f:.3g} ({claim['better']} is better), reproduced from "
            f"x{1 + rel:g}, contradicted below x{1 / (1 + rel):.3g} ({claim['tolerance']})"
        )
        if tied:
            reason += f"; {best} tied with {', '.join(tied)}"
        if verdict == NOT_REPRODUCED:
            reason += ": no difference established"
        shown = ratio_text(f, ma, mb, unit) + " = ".join([best, *tied]) + ")"
        tol = rel
    elif len(a) < 2 or len(b) < 2:
        e = sign * d
        verdict = REPRODUCED if e > tol else CONTRADICTED if e < -tol else NOT_REPRODUCED
        reason = f"{ONE_SEED}; {what}; tolerance ±{tol:.4g} ({claim['tolerance']})"
        if verdict == NOT_REPRODUCED:
            reason += ": within it, no difference established"
    else:
        elo, ehi = sorted((sign * lo, sign * hi))
        verdict = REPRODUCED if elo > 0 else CONTRADICTED if ehi < 0 else NOT_REPRODUCED
        reason = f"{what}, 95 % interval [{lo:.4g}, {hi:.4g}] over {len(a)} and {len(b)} seeds" + (
            ": contains 0, no difference established" if verdict == NOT_REPRODUCED else ""
        )
    if verdict == CONTRADICTED:
        reason += f"; the other way: {claim['experiment']} is the {'higher' if sign < 0 else 'lower'}"
    return verdict_row(
        claim,
        compared_with=best,
        ours_value=d,
        ours_ci_low=lo,
        ours_ci_high=hi,
        n=n,
        tolerance=tol,
        verdict=verdict,
        reason=reason,
        evidence=paths,
        shown=shown,
    )


def judge_procedure(claims: dict, claim: dict, ev: Evidence) -> dict:
    """procedure (the GMM prior): reproduced when a mixture was fitted for every run of the experiment that has a
    GMM and every chosen fit converged; not reproduced when one did not converge; not measured without a fit."""
    recs = sorted(
        (g for g in ev.gmm if g["experiment"] == claim["experiment"] and claim["corpus"] in ("all", g["corpus"])),
        key=lambda g: (g["corpus"], g["seed"]),
    )
    if not recs:
        return verdict_row(claim, reason=f"no GMM fitted for {claim['experiment']}")
    failed, notes = [], []
    for g in recs:
        grid = {e.get("components"): e for e in g.get("grid", [])}
        if grid.get(g["components"], {}).get("converged") is False:
            failed.append(f"{g['corpus']}/s{g['seed']}")
        edge = " (the largest tried: BIC still falling)" if grid and g["components"] == max(grid) else ""
        notes.append(f"{g['corpus']}/s{g['seed']}: {g['components']}{edge}")
    verdict = NOT_REPRODUCED if failed else REPRODUCED
    reason = f"components chosen by BIC: {'; '.join(notes)}"
    if failed:
        reason = f"the chosen mixture did not converge for {', '.join(failed)}; " + reason
    comps = [float(g["components"]) for g in recs]
    return verdict_row(
        claim,
        ours_value=float(np.mean(comps)),
        n=len(recs),
        verdict=verdict,
        reason=reason,
        evidence=[g["_path"] for g in recs],
    )


def _means(ev: Evidence, claim: dict, names: list[str]):
    """({experiment: mean}, reasons, evidence paths, fewest records) or ({}, reason, paths, 0) when one lacks a
    value."""
    vals, missing, paths = {}, [], []
    for e in names:
        v, miss, p = values_of(ev, claim, e)
        vals[e], missing, paths = v, missing + miss, paths + p
    absent = [e for e in names if not vals[e]]
    if absent:
        return {}, f"no value for {', '.join(absent)}: " + grouped(missing), paths, 0
    return {e: float(np.mean(v)) for e, v in vals.items()}, "; ".join(missing), paths, min(map(len, vals.values()))


def paper_factors(claim: dict) -> tuple[float, float]:
    """(smallest, largest) factor by which the paper has SDGM better than its baselines: its number against the
    range of theirs (`paper_baselines`), lower-is-better claims as theirs / ours, higher-is-better as ours / theirs."""
    paper, (lo, hi) = float(claim["paper"]), sorted(float(v) for v in claim["paper_baselines"])
    return (lo / paper, hi / paper) if claim["better"] == "lower" else (paper / hi, paper / lo)


def ratio_text(f: float, ours: float, theirs: float, unit: str) -> str:
    """ "x2.03 (7.71 vs 15.7 ms)": the factor, then ours and theirs in the claim's unit."""
    return f"x{f:.3g} ({fmt(ours)} vs {fmt(theirs)} {unit}".rstrip() + ", "


def ties(f: dict[str, float], closest: str, rel: float) -> list[str]:
    """The baselines tied with the closest: their factor within (1 + tol) of its."""
    return [m for m in f if m != closest and f[m] <= f[closest] * (1 + rel)]


def judge_factor(claims: dict, claim: dict, ev: Evidence) -> dict:
    """factor (relative efficiency on one device): f_m = value(m) / value(experiment) where lower is better, the
    inverse where higher is better; f = min over `than` (the closest baseline). Reproduced when f >= max(f_paper /
    (1 + tol), 1 + tol), f_paper the paper's smallest factor; contradicted when f < 1 / (1 + tol); otherwise not
    reproduced. Baselines within the tolerance of the closest are named with it."""
    names = [claim["experiment"], *claim["than"]]
    lo, hi = paper_factors(claim)
    paper = {"paper_value": lo, "paper_text": f"x{lo:.2f}-{hi:.2f}, {claim.get('paper_text', '')}".rstrip(", ")}
    means, notes, paths, n = _means(ev, claim, names)
    if not means:
        return verdict_row(claim, reason=notes, evidence=paths, **paper)
    if min(means.values()) <= 0:
        return verdict_row(
            claim,
            reason="a value <= 0: no ratio (" + ", ".join(f"{e} {means[e]:.4g}" for e in names) + ")",
            evidence=paths,
            **paper,
        )
    ours = means[claim["experiment"]]
    lower = claim["better"] == "lower"
    f = {m: means[m] / ours if lower else ours / means[m] for m in claim["than"]}
    closest = min(f, key=f.get)
    fc = f[closest]
    rel = float(claims["tolerances"][claim["tolerance"]]["rel"])
    need, worse = max(lo / (1 + rel), 1 + rel), 1 / (1 + rel)

    def verdict_of(x: float) -> str:
        return REPRODUCED if x >= need else CONTRADICTED if x < worse else NOT_REPRODUCED

    verdict = verdict_of(fc)
    unit = claim.get("unit", "")
    tied = ties(f, closest, rel)
    each = ", ".join(f"{m} x{f[m]:.3g}" for m in claim["than"])
    word = "lower" if lower else "higher"
    reason = (
        f"one record per model: no interval; {word} is better; factor over each baseline: {each}; closest: "
        f"{closest}" + (f", tied with {', '.join(tied)}" if tied else "") + f" x{fc:.3g}; paper "
        f"x{lo:.3g}-{hi:.3g}; reproduced from x{need:.3g} (max(x{lo:.3g} / (1 + {rel:g}), 1 + {rel:g}), "
        f"{claim['tolerance']})"
    )
    if verdict == REPRODUCED:
        reason += (
            (": inside the paper's range" if fc <= hi else ": beyond the paper's range")
            if fc >= lo
            else ": within the tolerance of the paper's smallest factor"
        )
    elif verdict == CONTRADICTED:
        reason += f"; the other way: {closest} is better by x{1 / fc:.3g}"
    elif fc < 1 + rel:
        reason += f": within x{1 + rel:g} of {closest}, no difference established"
    else:
        reason += ": better than every baseline, by less than the paper's factor"
    if claim.get("also_at_paper"):
        fp = means[closest] / float(claim["paper"]) if lower else float(claim["paper"]) / means[closest]
        change = "the same verdict" if verdict_of(fp) == verdict else f"{verdict_of(fp)}"
        reason += (
            f"; rests on our {claim['experiment']}'s {fmt(ours)} {unit}; at the paper's {claim['paper']:g} "
            f"{unit}: x{fp:.2f}, {change}"
        )
    if notes:
        reason += f"; {notes}"
    return verdict_row(
        claim,
        compared_with=closest,
        ours_value=fc,
        n=n,
        tolerance=rel,
        verdict=verdict,
        reason=reason,
        evidence=paths,
        shown=ratio_text(fc, ours, means[closest], unit) + " = ".join([closest, *tied]) + ")",
        **paper,
    )


def judge_unstated_device(claims: dict, claim: dict, ev: Evidence) -> dict:
    """unstated_device (an absolute speed or memory of a device the paper does not name): our value beside the
    paper's, always "not comparable", with our device and the claim that judges it relatively."""
    values, missing, paths = values_of(ev, claim, claim["experiment"])
    if not values:
        return verdict_row(claim, reason="; ".join(missing), evidence=paths)
    mean, lo, hi, n = interval(values)
    recs = ev.records(claim["source"], claim["corpus"], claim["experiment"])
    devices = sorted(
        {str((r.get("provenance") or {}).get("device") or r.get("device") or "an unnamed device") for r in recs}
    )
    reason = (
        f"the paper names no device, precision or software for its {claim['paper']:,g} "
        f"{claim.get('unit', '')}; ours is of {', '.join(devices)}; judged against the baselines on one "
        f"device instead: {claim['judged_by']}"
    )
    return verdict_row(
        claim,
        ours_value=mean,
        ours_ci_low=lo,
        ours_ci_high=hi,
        n=n,
        verdict=NOT_COMPARABLE,
        reason=reason,
        evidence=paths,
    )


JUDGES = {
    "value": judge_value,
    "engineering": judge_value,
    "direction": judge_direction,
    "slope": judge_slope,
    "procedure": judge_procedure,
    "competitive": judge_competitive,
    "factor": judge_factor,
    "unstated_device": judge_unstated_device,
    "unmeasured": lambda claims, claim, ev: verdict_row(claim, reason=" ".join(str(claim["reason"]).split())),
}


def judge(claims: dict, claim: dict, ev: Evidence) -> dict:
    """One claim's row. Evidence from a run that leaks future tokens turns any verdict into "not measured"; a claim
    whose source has no record at all in the folder reads "not measured on this device"."""
    sources = [m["source"] for m in claim.get("measures", [])] or [claim.get("source")]
    claim, note = choose_measure(claim, ev)
    row = JUDGES[claim["kind"]](claims, claim, ev)
    if claim["kind"] != "unmeasured":
        row["commits"] = commits_of(ev, claim)
        blocked, unchecked = check_evidence(ev, claim)
        if blocked and row["verdict"] != NOT_MEASURED:
            row["reason"] = (
                f"{blocked}; would read: {row['verdict']}, {row['shown'] or fmt(row['ours_value'])} ({row['reason']})"
            )
            row.update(verdict=NOT_MEASURED, shown="", ours_value=math.nan, ours_ci_low=math.nan, ours_ci_high=math.nan)
        elif unchecked:
            row["reason"] = f"{row['reason']}; {unchecked}"
    if row["verdict"] == NOT_MEASURED and claim["kind"] != "unmeasured" and not any(ev.has(s) for s in sources):
        row["reason"] = f"{NOT_ON_DEVICE}: no {' or '.join(sources)} record in this folder"
    elif note and len(claim.get("measures", [])) > 1:
        row["reason"] = f"{note}; {row['reason']}"
    if claim["kind"] not in ("slope", "unmeasured"):
        corpus = None if claim["corpus"] == "all" else claim["corpus"]
        leaking = ev.leaking(experiments_of(claim), corpus)
        if leaking:
            row["reason"] = (
                f"evidence leaks future tokens ({', '.join(leaking)} failed the causality audit), "
                f"so it is never judged reproduced; would read: {row['verdict']}; {row['reason']}"
            )
            row["verdict"] = NOT_MEASURED
    return row


def claims_table(claims: dict, ev: Evidence) -> pd.DataFrame:
    """The machine table: one row per claim, numbers in numeric columns, evidence paths joined by ';'."""
    rows = [judge(claims, c, ev) for c in claims["claims"]]
    df = pd.DataFrame(rows, columns=CLAIMS_COLUMNS)
    for col in NUMERIC_CLAIMS_COLUMNS:
        df[col] = pd.to_numeric(df[col], errors="raise").astype(float)
    df["n"] = df["n"].astype(int)
    df["evidence"] = df["evidence"].map(lambda p: ";".join(p))
    return df
