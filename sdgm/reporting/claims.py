"""The paper's claims, judged: one verdict per claim of sdgm/claims.yaml, computed from the pipeline's records.

In: the claims file, the runs' metrics.json (and gmm.json) and the benchmark records (throughput, generation,
scaling). Out: tables/claims.{csv,md,tex,html} (claim, paper, ours, verdict, reason, evidence) and
tables/compact.{csv,md,tex,html} (the paper's main table shape: model, params, WikiText-2 and PTB validation and
test perplexity, speed, memory; "ours ± std (paper)", reasons as footnotes). The verdict rules are in
docs/claims.md; every branch is tested on synthetic records (tests/test_claims.py).

Verdicts: "reproduced", "not reproduced", "contradicted" (the effect goes the other way), "not measured" (with the
reason). Our value is the mean over seeds with a 95 % Student-t interval; with one seed there is no interval, the
reason says so and the claim's stated tolerance decides. A claim whose evidence leaks future tokens (a run that
failed the causality audit) is never judged reproduced: it reads "not measured".

The CSVs are for machines: numbers in numeric columns (empty where absent), reasons in their own columns.

    python -m sdgm.reporting.claims --records results/h100 --readme README.md --results-readme results/README.md
renders the claims and compact tables of a results folder into its tables/, and the verdict section of a README
between the markers CLAIMS_BEGIN and CLAIMS_END.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import write_text_atomic
from .records import ReportError, load_metrics, load_paper, read_yaml_mapping
from .render import to_latex, to_markdown

CLAIMS_PATH = Path(__file__).resolve().parents[1] / "claims.yaml"

REPRODUCED = "reproduced"
NOT_REPRODUCED = "not reproduced"
CONTRADICTED = "contradicted"
NOT_MEASURED = "not measured"
VERDICTS = (REPRODUCED, NOT_REPRODUCED, CONTRADICTED, NOT_MEASURED)

ONE_SEED = "one seed: no interval"
KINDS = ("value", "engineering", "direction", "slope", "procedure", "unmeasured")
SOURCES = ("metrics", "throughput", "generation", "scaling", "gmm")
NEEDS = {  # fields each kind must have, beyond id, claim, where, kind, corpus
    "value": ("source", "metric", "experiment", "paper", "tolerance"),
    "engineering": ("source", "metric", "experiment", "paper", "tolerance"),
    "direction": ("source", "metric", "experiment", "than", "better", "tolerance"),
    "slope": ("source", "metric", "experiment", "than", "views", "mode", "paper", "tolerance"),
    "procedure": ("source", "experiment"),
    "unmeasured": ("reason",),
}

CLAIMS_COLUMNS = ["id", "claim", "reading", "where", "kind", "corpus", "corpus_stated", "metric", "unit", "experiment",
                  "compared_with", "paper_value", "paper_text", "ours_value", "ours_ci_low", "ours_ci_high", "n",
                  "tolerance", "verdict", "reason", "evidence"]
NUMERIC_CLAIMS_COLUMNS = ["paper_value", "ours_value", "ours_ci_low", "ours_ci_high", "n", "tolerance"]

BEGIN, END = "<!-- CLAIMS_BEGIN: rendered by python -m sdgm.reporting.claims; do not edit -->", "<!-- CLAIMS_END -->"


# ---- the claims file ---------------------------------------------------------------------------------------------

def load_claims(path: str | Path | None = None) -> dict:
    """The claims file, validated: {"source", "tolerances", "claims", "compact"}. Errors name the file and claim."""
    path = Path(path) if path is not None else CLAIMS_PATH
    data = read_yaml_mapping(path, "claims", "the claims file")
    tolerances = data.get("tolerances") or {}
    for name, tol in tolerances.items():
        if not isinstance(tol, dict) or len({"rel", "abs"} & set(tol)) != 1 or not tol.get("why"):
            raise ReportError(f"{path}: tolerance {name!r} needs exactly one of 'rel'/'abs' and a 'why'")
        value = tol.get("rel", tol.get("abs"))
        if not _is_number(value) or value < 0:
            raise ReportError(f"{path}: tolerance {name!r} must be a number >= 0, got {value!r}")
    seen = set()
    for i, c in enumerate(data["claims"]):
        where = f"{path}: claim {i} ({c.get('id', '?') if isinstance(c, dict) else '?'})"
        if not isinstance(c, dict):
            raise ReportError(f"{where}: not a mapping")
        missing = [k for k in ("id", "claim", "where", "kind", "corpus") if not c.get(k)]
        if missing:
            raise ReportError(f"{where}: missing {', '.join(missing)}")
        if c["id"] in seen:
            raise ReportError(f"{where}: duplicate id")
        seen.add(c["id"])
        if c["kind"] not in KINDS:
            raise ReportError(f"{where}: kind {c['kind']!r} is not one of {', '.join(KINDS)}")
        missing = [k for k in NEEDS[c["kind"]] if c.get(k) is None]
        if missing:
            raise ReportError(f"{where}: a {c['kind']} claim needs {', '.join(missing)}")
        if "source" in c and c["source"] not in SOURCES:
            raise ReportError(f"{where}: source {c['source']!r} is not one of {', '.join(SOURCES)}")
        if "tolerance" in c and c["tolerance"] not in tolerances:
            raise ReportError(f"{where}: tolerance {c['tolerance']!r} is not defined under 'tolerances'")
        if c.get("better") not in (None, "lower", "higher"):
            raise ReportError(f"{where}: better must be 'lower' or 'higher', got {c['better']!r}")
        if c.get("paper") is not None and not _is_number(c["paper"]):
            raise ReportError(f"{where}: paper must be a number or null, got {c['paper']!r}")
        if "than" in c and (not isinstance(c["than"], list) or not c["than"]):
            raise ReportError(f"{where}: than must be a non-empty list of experiments")
    return {"source": data.get("source", "the SDGM paper"), "tolerances": tolerances, "claims": data["claims"],
            "compact": data.get("compact") or {"rows": [], "engineering_corpus": None}}


# ---- statistics ----------------------------------------------------------------------------------------------------

def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _t_cdf(t: float, df: float) -> float:
    """Student-t CDF by Simpson integration of the density from 0 (no scipy in the report environment)."""
    if t < 0:
        return 1.0 - _t_cdf(-t, df)
    logc = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    # substitute x = t * u on [0, 1]; the density is smooth there, 2000 panels are exact to ~1e-9
    n = 2000
    h = 1.0 / n
    total = 0.0
    for i in range(n + 1):
        x = t * i * h
        w = 1 if i in (0, n) else (4 if i % 2 else 2)
        total += w * math.exp(logc - (df + 1) / 2 * math.log1p(x * x / df))
    return 0.5 + total * h * t / 3


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df degrees of freedom (p in (0.5, 1)), by bisection."""
    lo, hi = 0.0, 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def interval(values: list[float]) -> tuple[float, float, float, int]:
    """(mean, 95 % low, 95 % high, n); low and high are NaN when n < 2 (one seed: no interval)."""
    arr = np.asarray(values, dtype=float)
    n = int(arr.size)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    mean = float(arr.mean())
    if n < 2:
        return mean, math.nan, math.nan, n
    half = t_quantile(0.975, n - 1) * float(arr.std(ddof=1)) / math.sqrt(n)
    return mean, mean - half, mean + half, n


def difference_interval(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """mean(a) - mean(b) with Welch's 95 % interval; NaN bounds when either side has fewer than two values."""
    d = float(np.mean(a)) - float(np.mean(b))
    if len(a) < 2 or len(b) < 2:
        return d, math.nan, math.nan
    va, vb = float(np.var(a, ddof=1)) / len(a), float(np.var(b, ddof=1)) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return d, d, d
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile(0.975, df) * se
    return d, d - half, d + half


# ---- evidence ----------------------------------------------------------------------------------------------------

class Evidence:
    """Every record a verdict may use, indexed by (source, corpus, experiment)."""

    def __init__(self, metrics=(), throughput=(), generation=(), scaling=None, gmm=()):
        self.metrics = load_metrics(list(metrics))
        self.bench = {"throughput": [_load_bench(p, "throughput") for p in throughput],
                      "generation": [_load_bench(p, "generation") for p in generation]}
        self.scaling = _load_bench(scaling, "scaling") if scaling else None
        self.gmm = [_load_gmm(p) for p in gmm]

    def records(self, source: str, corpus: str, experiment: str) -> list[dict]:
        recs = self.metrics if source == "metrics" else self.bench[source]
        return sorted((r for r in recs if r["corpus"] == corpus and r["experiment"] == experiment),
                      key=lambda r: r["seed"])

    def leaking(self, experiments, corpus: str | None = None) -> list[str]:
        """The experiments (of `corpus`, or any) with a run that failed the causality audit."""
        out = []
        for r in self.metrics:
            audit = r["metrics"].get("causal_audit")
            if (r["experiment"] in experiments and (corpus is None or r["corpus"] == corpus)
                    and isinstance(audit, dict) and audit.get("passed") is False):
                out.append(r["experiment"])
        return sorted(set(out))


def _load_bench(path, kind: str) -> dict:
    path = Path(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: cannot read benchmark record ({e})") from e
    if not isinstance(rec, dict) or rec.get("kind") != kind:
        raise ReportError(f"{path}: not a {kind!r} benchmark record")
    if kind != "scaling":
        for key in ("experiment", "corpus", "seed"):
            if key not in rec:
                raise ReportError(f"{path}: missing {key!r}")
    rec["_path"] = str(path)
    return rec


def _load_gmm(path) -> dict:
    """A gmm.json, with corpus and experiment from its run directory (runs/{corpus}/{experiment}-s{seed}[-cfg])."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ReportError(f"{path}: cannot read GMM summary ({e})") from e
    m = re.fullmatch(r"(?P<experiment>[a-z0-9_]+)-s(?P<seed>\d+)(?:-[0-9a-f]{8})?", path.parent.name)
    if not isinstance(rec, dict) or m is None or "components" not in rec:
        raise ReportError(f"{path}: not a GMM summary in a run directory (runs/CORPUS/EXPERIMENT-sSEED-CFG)")
    rec.update(_path=str(path), corpus=path.parent.parent.name, experiment=m.group("experiment"),
               seed=int(m.group("seed")))
    return rec


def _lookup(rec: dict, claim: dict) -> tuple[float | None, str]:
    """(value in the claim's unit, "") or (None, reason) for one record."""
    scale = float(claim.get("scale", 1.0))
    if claim["source"] == "metrics":
        v = rec["metrics"].get(claim["metric"])
        if _is_number(v):
            return float(v) * scale, ""
        return None, str((rec.get("na") or {}).get(claim["metric"]) or "not measured")
    node: Any = rec
    parts = claim["metric"].format(own_path=rec.get("own_path", "")).split(".")
    why = str((rec.get("na") or {}).get(parts[-1]) or f"{claim['metric']} not in the record")
    for part in parts:
        if isinstance(node, dict) and node.get("status") not in (None, "ok"):
            why = str(node.get("error") or node["status"])
        if isinstance(node, dict) and isinstance(node.get("na"), dict) and part in node["na"]:
            why = str(node["na"][part])
        node = node.get(part) if isinstance(node, dict) else None
    if _is_number(node):
        return float(node) * scale, ""
    return None, why


def _values(ev: Evidence, claim: dict, experiment: str) -> tuple[list[float], list[str], list[str]]:
    """(values over seeds, reasons for the seeds without one, evidence paths)."""
    recs = ev.records(claim["source"], claim["corpus"], experiment)
    values, reasons = [], []
    for r in recs:
        v, why = _lookup(r, claim)
        if v is None:
            reasons.append(f"{experiment} seed {r['seed']}: {why}")
        else:
            values.append(v)
    if not recs:
        reasons.append(f"no {claim['source']} record of {experiment} on {claim['corpus']}")
    return values, reasons, [r["_path"] for r in recs]


# ---- verdicts ----------------------------------------------------------------------------------------------------

def _tolerance(claims: dict, claim: dict, reference: float) -> float:
    tol = claims["tolerances"][claim["tolerance"]]
    return float(tol["abs"]) if "abs" in tol else float(tol["rel"]) * abs(reference)


def _row(claim: dict, **kw) -> dict:
    row = {"id": claim["id"], "claim": " ".join(str(claim["claim"]).split()),
           "reading": " ".join(str(claim.get("reading", "")).split()), "where": claim["where"],
           "kind": claim["kind"], "corpus": claim["corpus"],
           "corpus_stated": "stated" if claim.get("corpus_stated", True) else "unstated (our choice)",
           "metric": claim.get("metric", ""), "unit": claim.get("unit", ""), "experiment": claim.get("experiment", ""),
           "compared_with": "", "paper_value": claim.get("paper"), "paper_text": claim.get("paper_text", ""),
           "ours_value": math.nan, "ours_ci_low": math.nan, "ours_ci_high": math.nan, "n": 0,
           "tolerance": math.nan, "verdict": NOT_MEASURED, "reason": "", "evidence": []}
    row.update(kw)
    if row["paper_value"] is None:
        row["paper_value"] = math.nan
    return row


def _fmt(v: float) -> str:
    if not _is_number(v):
        return "–"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def judge_value(claims: dict, claim: dict, ev: Evidence) -> dict:
    """value: reproduced when the paper's number lies inside our 95 % interval over seeds; with one seed, when it
    lies within the tolerance. engineering: reproduced when it lies inside the interval or within the tolerance."""
    values, missing, paths = _values(ev, claim, claim["experiment"])
    if not values:
        return _row(claim, reason="; ".join(missing), evidence=paths)
    mean, lo, hi, n = interval(values)
    paper = float(claim["paper"])
    tol = _tolerance(claims, claim, paper)
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
            reason = (f"paper {'inside' if inside else 'outside'} the 95 % interval over {n} seeds; {gap}, "
                      f"tolerance ±{tol:.4g} ({claim['tolerance']})")
        else:
            verdict = REPRODUCED if inside else NOT_REPRODUCED
            reason = f"paper {'inside' if inside else 'outside'} the 95 % interval over {n} seeds; {gap}"
    return _row(claim, ours_value=mean, ours_ci_low=lo, ours_ci_high=hi, n=n, tolerance=tol, verdict=verdict,
                reason="; ".join([reason, *notes]), evidence=paths)


def judge_direction(claims: dict, claim: dict, ev: Evidence) -> dict:
    """direction: the difference d = ours(experiment) - ours(best of `than`), signed so that the claim says e > 0.
    Reproduced when its 95 % (Welch) interval lies above 0, contradicted when below 0, not reproduced when it
    contains 0. With one seed on either side: the tolerance (of the compared value) replaces the interval."""
    a, missing, paths = _values(ev, claim, claim["experiment"])
    others = {}
    for exp in claim["than"]:
        vals, miss, p = _values(ev, claim, exp)
        paths += p
        missing += miss
        others[exp] = vals
    absent = [e for e in [claim["experiment"], *claim["than"]] if not (a if e == claim["experiment"] else others[e])]
    if absent:
        return _row(claim, reason=f"no value for {', '.join(absent)}: " + "; ".join(missing), evidence=paths)
    pick = min if claim["better"] == "lower" else max
    best = pick(others, key=lambda e: float(np.mean(others[e])))
    b = others[best]
    d, lo, hi = difference_interval(a, b)
    sign = -1.0 if claim["better"] == "lower" else 1.0
    tol = _tolerance(claims, claim, float(np.mean(b)))
    what = (f"{claim['experiment']} - {best} = {d:+.4g} {claim.get('unit', '')}".rstrip()
            + ("" if len(claim["than"]) == 1 else f" ({best}: the {claim['better']} of {', '.join(claim['than'])})"))
    n = min(len(a), len(b))
    if len(a) < 2 or len(b) < 2:
        e = sign * d
        verdict = REPRODUCED if e > tol else CONTRADICTED if e < -tol else NOT_REPRODUCED
        reason = f"{ONE_SEED}; {what}; tolerance ±{tol:.4g} ({claim['tolerance']})"
        if verdict == NOT_REPRODUCED:
            reason += ": within it, no difference established"
    else:
        elo, ehi = sorted((sign * lo, sign * hi))
        verdict = REPRODUCED if elo > 0 else CONTRADICTED if ehi < 0 else NOT_REPRODUCED
        reason = (f"{what}, 95 % interval [{lo:.4g}, {hi:.4g}] over {len(a)} and {len(b)} seeds"
                  + (": contains 0, no difference established" if verdict == NOT_REPRODUCED else ""))
    if verdict == CONTRADICTED:
        reason += f"; the other way: {claim['experiment']} is the {'higher' if sign < 0 else 'lower'}"
    return _row(claim, compared_with=best, ours_value=d, ours_ci_low=lo, ours_ci_high=hi, n=n, tolerance=tol,
                verdict=verdict, reason=reason, evidence=paths)


VIEW_WORDS = {"batch": "fixed batch, per-sequence cost", "tokens": "fixed tokens per batch (B = tokens / L)"}


# A schema-1 scaling record timed the einsum decoder, which materializes the atoms (L x K x D) on every call: it
# measured that implementation, not the model's cost (docs/spectral-decoder.md), so it judges no claim.
SUPERSEDED_SCALING = ("the scaling record is schema 1: it timed the einsum decoder that materializes the atoms "
                      "(L x K x D) on every call, since replaced by the chunked and fused decoders; it measured that "
                      "implementation, not the model (rerun the scaling benchmark)")


def _slope(rec: dict, view: str, model: str, mode: str, what: str) -> tuple[float | None, str]:
    slopes = rec.get("slopes") or {}
    fit = slopes.get(view, {}).get(model, {}).get(mode, {}).get(what)
    if fit is None:
        return None, f"no {view}-view {what} fit of {model} ({mode})"
    if _is_number(fit.get("slope")):
        return float(fit["slope"]), ""
    return None, str((fit.get("na") or {}).get("slope") or "no slope")


def judge_slope(claims: dict, claim: dict, ev: Evidence) -> dict:
    """slope: the log-log slope of the experiment's cost against L, in the first view of `views` the record has.
    Reproduced within the tolerance of the paper's slope; contradicted when it exceeds the slope of the layer it is
    claimed to beat (`than`) by more than the tolerance; otherwise not reproduced. One benchmark run: no interval."""
    rec = ev.scaling
    if rec is None:
        return _row(claim, reason="no scaling record")
    paths = [rec["_path"]]
    if rec.get("schema") == 1:
        return _row(claim, reason=SUPERSEDED_SCALING, evidence=paths)
    found = None
    for view in claim["views"]:
        for layer in claim.get("layers") or [claim["experiment"]]:
            ours, why = _slope(rec, view, layer, claim["mode"], claim["metric"])
            if ours is not None:
                found = view, layer
                break
        if found:
            break
    else:
        return _row(claim, reason=f"no {claim['metric']} slope of {claim['experiment']} in the record", evidence=paths)
    theirs, why_t = _slope(rec, view, claim["than"][0], claim["mode"], claim["metric"])
    paper = float(claim["paper"])
    tol = _tolerance(claims, claim, paper)
    skipped = [v for v in claim["views"][:claim["views"].index(view)]]
    where = f"{found[1]}, {VIEW_WORDS.get(view, view)} view, {claim['mode']}" + (
        f" (the record has no {', '.join(skipped)} view)" if skipped else "")
    if abs(ours - paper) <= tol:
        verdict = REPRODUCED
    elif theirs is not None and ours - theirs > tol:
        verdict = CONTRADICTED
    else:
        verdict = NOT_REPRODUCED
    vs = f"{claim['than'][0]} {theirs:.3g}" if theirs is not None else f"{claim['than'][0]}: {why_t}"
    reason = (f"one benchmark run: no interval; slope {ours:.3g} ({where}) against {vs}; tolerance ±{tol:.3g} "
              f"({claim['tolerance']})")
    if verdict == CONTRADICTED:
        reason += f"; the other way: it grows faster with L than {claim['than'][0]}"
    return _row(claim, compared_with=claim["than"][0], ours_value=ours, n=1, tolerance=tol, verdict=verdict,
                reason=reason, evidence=paths)


def judge_procedure(claims: dict, claim: dict, ev: Evidence) -> dict:
    """procedure (the GMM prior): reproduced when a mixture was fitted for every run of the experiment that has a
    GMM and every chosen fit converged; not reproduced when one did not converge; not measured without a fit."""
    recs = sorted((g for g in ev.gmm if g["experiment"] == claim["experiment"]
                   and claim["corpus"] in ("all", g["corpus"])), key=lambda g: (g["corpus"], g["seed"]))
    if not recs:
        return _row(claim, reason=f"no GMM fitted for {claim['experiment']}")
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
    return _row(claim, ours_value=float(np.mean(comps)), n=len(recs), verdict=verdict, reason=reason,
                evidence=[g["_path"] for g in recs])


JUDGES = {"value": judge_value, "engineering": judge_value, "direction": judge_direction, "slope": judge_slope,
          "procedure": judge_procedure,
          "unmeasured": lambda claims, claim, ev: _row(claim, reason=" ".join(str(claim["reason"]).split()))}


def _experiments(claim: dict) -> list[str]:
    return [e for e in [claim.get("experiment"), *claim.get("than", [])] if e]


def judge(claims: dict, claim: dict, ev: Evidence) -> dict:
    """One claim's row. Evidence from a run that leaks future tokens turns any verdict into "not measured"."""
    row = JUDGES[claim["kind"]](claims, claim, ev)
    if claim["kind"] not in ("slope", "unmeasured"):
        corpus = None if claim["corpus"] == "all" else claim["corpus"]
        leaking = ev.leaking(_experiments(claim), corpus)
        if leaking:
            row["reason"] = (f"evidence leaks future tokens ({', '.join(leaking)} failed the causality audit), "
                             f"so it is never judged reproduced; would read: {row['verdict']}; {row['reason']}")
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


# ---- display ----------------------------------------------------------------------------------------------------

def _rel(path: str, here: Path | None) -> str:
    return Path(os.path.relpath(path, here) if here is not None else path).as_posix()


def paper_cell(r) -> str:
    text = r["paper_text"] or ""
    if _is_number(r["paper_value"]):
        return f"{r['paper_value']:,g}" + (f" ({text})" if text else "")
    return text or "–"


def ours_cell(r) -> str:
    if not _is_number(r["ours_value"]):
        return "–"
    v = _fmt(r["ours_value"])
    if r["kind"] == "procedure":
        v = f"{r['ours_value']:g} {r['unit']}"
    if r["kind"] == "direction":
        sign = "+" if r["ours_value"] > 0 else ""
        v = sign + _fmt(r["ours_value"]) + (f" vs {r['compared_with']}" if r["compared_with"] else "")
    if _is_number(r["ours_ci_low"]) and _is_number(r["ours_ci_high"]):
        v += f" [{_fmt(r['ours_ci_low'])}, {_fmt(r['ours_ci_high'])}]"
    return v


def _evidence_links(paths: str, here: Path | None, markdown: bool) -> list[str]:
    out = []
    for p in filter(None, paths.split(";")):
        label = "/".join(Path(p).parts[-3:])
        out.append(f"[{label}]({_rel(p, here)})" if markdown else
                   f'<a href="{html.escape(_rel(p, here))}">{html.escape(label)}</a>')
    return out


CORPUS_WORDS = {"all": "every corpus", "none": "none (one layer)"}


def claims_display(df: pd.DataFrame, here: Path | None = None, evidence: bool = True,
                   markdown: bool = True, readings: bool = True) -> pd.DataFrame:
    """The table people read: claim, paper, ours (mean [95 % interval]), verdict, reason, evidence links."""
    out = pd.DataFrame({
        "claim": [r["claim"] + (f" (read as: {r['reading']})" if readings and r["reading"] else "")
                  for _, r in df.iterrows()],
        "corpus": [CORPUS_WORDS.get(r["corpus"], r["corpus"]) + ("" if r["corpus_stated"] == "stated" else "*")
                   for _, r in df.iterrows()],
        "paper": [paper_cell(r) for _, r in df.iterrows()],
        "ours": [ours_cell(r) for _, r in df.iterrows()],
        "verdict": [f"**{v}**" if markdown else v for v in df["verdict"]],
        "reason": list(df["reason"]),
    })
    if evidence:
        out["evidence"] = [" ".join(_evidence_links(p, here, markdown)) or "–" for p in df["evidence"]]
    return out


CLAIMS_CAPTION = ("The paper's claims ({source}), judged from this pipeline's records: ours is the mean over seeds "
                  "with its 95 % Student-t interval (none with one seed: the stated tolerance decides); direction "
                  "claims show the difference to the compared model. Rules: docs/claims.md.")


def _summary(df: pd.DataFrame) -> str:
    counts = df["verdict"].value_counts()
    return ", ".join(f"{int(counts[v])} {v}" for v in VERDICTS if v in counts)


def _page(title: str, intro: str, table_html: str, notes: list[str]) -> str:
    from ..publish import PAGE

    body = f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(intro)}</p>\n{table_html}"
    if notes:
        body += "\n<ol>\n" + "\n".join(f"<li>{html.escape(n)}</li>" for n in notes) + "\n</ol>"
    return PAGE.format(title=html.escape(title), body=body)


def _html_table(df: pd.DataFrame, raw: tuple[str, ...] = ()) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for _, r in df.iterrows():
        rows.append("<tr>" + "".join(f"<td>{r[c] if c in raw else html.escape(str(r[c]))}</td>"
                                     for c in df.columns) + "</tr>")
    return f"<table>\n<tr>{head}</tr>\n" + "\n".join(rows) + "\n</table>"


def write_claims(df: pd.DataFrame, stem: Path, source: str) -> list[Path]:
    """claims.csv (machine), claims.md and claims.html (links relative to the tables folder), claims.tex."""
    stem = Path(stem)
    here = stem.parent
    paths = [stem.with_name(stem.name + ext) for ext in (".csv", ".md", ".tex", ".html")]
    caption = CLAIMS_CAPTION.format(source=source)
    write_text_atomic(paths[0], df.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(paths[1], f"Verdicts: {_summary(df)}. {caption}\n\n"
                      + to_markdown(claims_display(df, here)) + f"\n{UNSTATED}\n")
    write_text_atomic(paths[2], to_latex(claims_display(df, here, evidence=False, markdown=False), caption,
                                         label="tab:claims"))
    write_text_atomic(paths[3], _page("The paper's claims, judged", f"Verdicts: {_summary(df)}. {caption}",
                                      _html_table(claims_display(df, here, markdown=False), raw=("evidence",)), []))
    return paths


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
COMPACT_HEADERS = {"params_m": "params (M)", "wikitext2_val_ppl": "WikiText-2 val", "wikitext2_test_ppl":
                   "WikiText-2 test", "ptb_val_ppl": "PTB val", "ptb_test_ppl": "PTB test",
                   "train_tok_s": "train tok/s", "peak_mem_gb": "train memory (GB)"}


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
        row: dict[str, Any] = {"experiment": exp, "model": spec.get("label", exp),
                               "leaks": bool(ev.leaking([exp]))}
        for col, source, corpus, key, scale, pkey, _ in COMPACT_COLUMNS:
            corpus = corpus or eng
            claim = {"source": source, "metric": key, "scale": scale, "corpus": corpus}
            vals, missing, _ = _values(ev, claim, exp) if corpus else ([], ["no corpus named"], [])
            arr = np.asarray(vals, dtype=float)
            row[col] = float(arr.mean()) if arr.size else math.nan
            row[f"{col}_std"] = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
            row[f"{col}_n"] = int(arr.size)
            pv = paper_ix.get((exp, corpus), {}).get(pkey) if pkey else None
            row[f"{col}_paper"] = float(pv) if pv is not None else math.nan
            row[f"{col}_na"] = "" if arr.size else "; ".join(dict.fromkeys(m.split(": ", 1)[-1] for m in missing))
        rows.append(row)
    cols = ["experiment", "model", "leaks"] + [f"{c}{s}" for c, *_ in COMPACT_COLUMNS
                                               for s in ("", "_std", "_n", "_paper", "_na")]
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
            if _is_number(r[col]):
                cell = f"{r[col]:,.{dec}f}"
                if _is_number(r[f"{col}_std"]):
                    cell += f" ± {r[f'{col}_std']:,.{dec}f}"
                if _is_number(r[f"{col}_paper"]):
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
    return (f"Ours ({seeds}), the paper's number in brackets where it gives one. Perplexity: windows of L tokens, "
            f"each without earlier context. Params, memory (peak of training) and speed (training tokens/s, alone "
            f"on the device) from the {eng} runs; the paper does not name the corpus.")


def write_compact(df: pd.DataFrame, stem: Path, caption: str) -> list[Path]:
    stem = Path(stem)
    paths = [stem.with_name(stem.name + ext) for ext in (".csv", ".md", ".tex", ".html")]
    disp, notes = compact_display(df)
    foot = "".join(f"\n{i + 1}. {n}" for i, n in enumerate(notes))
    write_text_atomic(paths[0], df.to_csv(index=False, lineterminator="\n"))
    write_text_atomic(paths[1], f"{caption}\n\n{to_markdown(disp)}{foot}\n")
    write_text_atomic(paths[2], to_latex(disp, caption + " " + " ".join(f"[{i + 1}] {n}." for i, n in
                                                                         enumerate(notes)), label="tab:compact"))
    write_text_atomic(paths[3], _page("Main results", caption, _html_table(disp), notes))
    return paths


# ---- the whole step ----------------------------------------------------------------------------------------------

def build_claims(tables_dir, metrics=(), throughput=(), generation=(), scaling=None, gmm=(), claims_path=None,
                 paper_path=None) -> dict:
    """Write claims.* and compact.* to tables_dir; returns {"<name>_<ext>": path}. Everything is computed before
    anything is written: a bad input leaves no partial table."""
    claims = load_claims(claims_path)
    ev = Evidence(metrics, throughput, generation, scaling, gmm)
    df = claims_table(claims, ev)
    compact = compact_table(claims, ev, load_paper(paper_path))
    tables = Path(tables_dir)
    written = {}
    for p in write_claims(df, tables / "claims", claims["source"]):
        written[f"claims_{p.suffix[1:]}"] = p
    for p in write_compact(compact, tables / "compact", compact_caption(claims, compact)):
        written[f"compact_{p.suffix[1:]}"] = p
    return written


def find_records(root: Path) -> dict:
    """The records of one results folder, by the pipeline's layout."""
    root = Path(root)
    scaling = root / "bench" / "scaling.json"
    return {"metrics": sorted(root.glob("runs/*/*/metrics.json")),
            "throughput": sorted(root.glob("bench/throughput/*/*.json")),
            "generation": sorted(root.glob("bench/generation/*/*.json")),
            "scaling": scaling if scaling.exists() else None,
            "gmm": sorted(root.glob("runs/*/*/gmm.json"))}


def readme_section(tables_dir: Path, readme: Path, metrics_paths) -> str:
    """The verdict section of a README: what ran, the verdicts (claim, paper, ours, verdict), the compact table,
    links to the full tables. Rendered from the CSVs of tables_dir and the runs' provenance."""
    tables_dir, here = Path(tables_dir), Path(readme).parent
    text = {c: str for c in CLAIMS_COLUMNS if c not in NUMERIC_CLAIMS_COLUMNS}
    df = pd.read_csv(tables_dir / "claims.csv", dtype=text, keep_default_na=False,
                     converters={c: lambda v: float(v) if v else math.nan for c in NUMERIC_CLAIMS_COLUMNS})
    na_cols = {f"{c}_na": str for c, *_ in COMPACT_COLUMNS}
    compact = pd.read_csv(tables_dir / "compact.csv", dtype={"model": str, "experiment": str, **na_cols})
    compact["leaks"] = compact["leaks"].astype(bool)
    for c in na_cols:
        compact[c] = compact[c].astype(object).where(compact[c].notna(), "")
    disp = claims_display(df, here, evidence=False, readings=False)[["claim", "corpus", "paper", "ours",
                                                                     "verdict"]]
    cdisp, notes = compact_display(compact)
    claims_md = _rel(str(tables_dir / "claims.md"), here)
    return "\n".join([BEGIN, "", ran_line(metrics_paths), "",
                      f"Verdicts: {_summary(df)}. Reasons and evidence: [{claims_md}]({claims_md}); rules: "
                      f"[docs/claims.md]"
                      f"({_rel('docs/claims.md', here)}).", "", to_markdown(disp).rstrip(), "", UNSTATED, "",
                      to_markdown(cdisp).rstrip(), ""] + [f"{i + 1}. {n}" for i, n in enumerate(notes)]
                     + ["", END])


def ran_line(metrics_paths) -> str:
    """One line: what ran (runs, seeds, device, commit, dates), from the runs' records."""
    recs = load_metrics(list(metrics_paths))
    seeds = sorted({r["seed"] for r in recs})
    devices = sorted({str(r["provenance"].get("device")) for r in recs})
    commits = sorted({str(r["provenance"].get("git_commit"))[:7] for r in recs})
    stamps = sorted(str(r["provenance"]["timestamp"])[:10] for r in recs if r["provenance"].get("timestamp"))
    dates = (stamps[0] if stamps[0] == stamps[-1] else f"{stamps[0]} to {stamps[-1]}") if stamps else "date unknown"
    return (f"What ran: {len(recs)} runs, seed(s) {', '.join(map(str, seeds))}, on {', '.join(devices)}, commit "
            f"{', '.join(commits)}, {dates}.")


def replace_section(text: str, section: str, path: Path) -> str:
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ReportError(f"{path}: needs exactly one {BEGIN!r} ... {END!r} pair")
    return text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Judge the paper's claims from a results folder's records.")
    ap.add_argument("--records", type=Path, required=True, help="a results folder (runs/, bench/)")
    ap.add_argument("--readme", type=Path, default=None, help="a README whose claims section to render")
    ap.add_argument("--results-readme", type=Path, default=None,
                    help="render this results page (sdgm.publish.results_readme) from the folder's tables")
    ap.add_argument("--check", action="store_true", help="only check that --readme is up to date (exit 1 if not)")
    args = ap.parse_args(argv)
    rec = find_records(args.records)
    tables = args.records / "tables"
    if not args.check:
        for name, p in build_claims(tables, **rec).items():
            print(f"{name}: {p}")
    if args.readme is not None:
        text = args.readme.read_text(encoding="utf-8")
        new = replace_section(text, readme_section(tables, args.readme, rec["metrics"]), args.readme)
        if args.check:
            return 0 if new == text else 1
        write_text_atomic(args.readme, new)
        print(f"readme: {args.readme}")
    if args.results_readme is not None and not args.check:
        from ..publish import results_readme

        root = args.records
        figures = sorted((root / "figures").glob("*.png"))
        names = [t for t in ("main", "ablations", "reconstruction", "throughput", "generation", "scaling",
                             "scaling_slopes", "samples") if (tables / f"{t}.md").exists()]
        recs = load_metrics(rec["metrics"])
        summary = {"experiments": sorted({r["experiment"] for r in recs}),
                   "corpora": sorted({r["corpus"] for r in recs}), "seeds": sorted({r["seed"] for r in recs}),
                   "seq_len": sorted({r.get("train_config", {}).get("seq_len") for r in recs} - {None})[0]}
        results_readme(args.results_readme, tables / "main.md", [tables / f"{t}.md" for t in names], figures, [],
                       rec["metrics"], rec["gmm"], summary, claims_md=tables / "claims.md",
                       compact_md=tables / "compact.md")
        print(f"results readme: {args.results_readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
