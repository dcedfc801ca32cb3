"""The statistics of the verdicts (docs/claims.md): Student-t intervals of a mean and of a difference, and the
log-log slope of a scaling record with its fit's interval, from scipy.stats."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with df degrees of freedom."""
    return float(stats.t.ppf(p, df))


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
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(0.975, df) * se
    return d, d - half, d + half


def fit_slope(rec: dict, view: str, model: str, mode: str) -> dict:
    """The log-log least-squares slope of the time per sequence against L of one layer in one view, refitted from
    the record's points (L >= its slope_min_length) with scipy.stats.linregress: {"slope", "low", "high", "n"} (95 %
    t interval on n - 2 degrees of freedom; NaN bounds below 3 points), or {"na": reason}."""
    floor = (rec.get("settings") or {}).get("slope_min_length") or 0
    pts = sorted(
        (r["L"], r["time_per_sequence_s"])
        for r in rec.get("results") or []
        if r.get("view") == view
        and r.get("model") == model
        and r.get("mode") == mode
        and r.get("status", "ok") == "ok"
        and is_number(r.get("time_per_sequence_s"))
        and r["time_per_sequence_s"] > 0
        and r.get("L", 0) >= floor
    )
    if len(pts) < 2:
        return {"na": f"{model}: {len(pts)} measured length(s) in the {view} view", "n": len(pts)}
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    res = stats.linregress(x, y)
    n = len(pts)
    half = t_quantile(0.975, n - 2) * res.stderr if n > 2 else math.nan
    return {"slope": float(res.slope), "low": float(res.slope - half), "high": float(res.slope + half), "n": n}
