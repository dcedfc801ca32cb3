"""The fits of the scaling benchmark: log-log slopes against L (fit_loglog_slope), and a layer's next case
extrapolated from its measured ones as B * L**e (extrapolate, predicted_peak)."""

from __future__ import annotations

import numpy as np


def predicted_peak(history: list[tuple[int, int, int]], L: int, B: int) -> tuple[int, str] | None:
    """Peak memory of a layer at (L, B) extrapolated from its measured (L, B, peak) points in one view and mode,
    as peak ~ B * L**e: e from the last two points, clamped to [1, 2]; from one point e = 2 (the worst a layer here
    does). None without points."""
    guess = extrapolate(history, L, B)
    return None if guess is None else (int(guess[0]), guess[1])


def extrapolate(history: list[tuple[int, int, float]], L: int, B: int) -> tuple[float, str] | None:
    """A cost at (L, B) from measured (L, B, cost) points (L ascending) as cost ~ B * L**e: e from the last two
    points, clamped to [1, 2]; from one point e = 2. None without points."""
    if not history:
        return None
    L2, B2, p2 = history[-1]
    e, how = 2.0, f"quadratic in L from L = {L2:,}"
    if len(history) > 1 and history[-2][2] > 0 and L2 > history[-2][0]:
        L1, B1, p1 = history[-2]
        e = min(2.0, max(1.0, float(np.log((p2 / B2) / (p1 / B1)) / np.log(L2 / L1))))
        how = f"B * L^{e:.2f} from L = {L1:,} and {L2:,}"
    return p2 * (B / B2) * (L / L2) ** e, how


def fit_loglog_slope(lengths, values, min_length: int = 0) -> dict:
    """Least-squares fit log(value) = slope * log(L) + c over the points with L >= min_length (numpy lstsq)."""
    pts = [(L, t) for L, t in zip(lengths, values) if L >= min_length and t is not None and t > 0]
    if len(pts) < 2:
        return {
            "slope": None,
            "intercept": None,
            "n_points": len(pts),
            "min_length": min_length,
            "na": {"slope": f"fewer than 2 measured lengths >= {min_length}"},
        }
    x = np.log([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    A = np.stack([x, np.ones_like(x)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - (slope * x + intercept)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else None
    return {
        "slope": float(slope),
        "intercept": float(intercept),
        "r2": r2,
        "n_points": len(pts),
        "min_length": min_length,
        "lengths": [int(p[0]) for p in pts],
    }
