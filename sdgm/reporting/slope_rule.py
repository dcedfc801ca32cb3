"""The rule of a slope claim (the cost's log-log slope against the sequence length, from the scaling benchmark's
record); docs/claims.md: slopes.
"""

from __future__ import annotations

from .claim_row import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, tolerance_of, verdict_row
from .evidence import Evidence
from .statistics import fit_slope

# A schema-1 scaling record timed the einsum decoder, which materializes the atoms (L x K x D) on every call: it
# measured that implementation, not the model's cost (docs/spectral-decoder.md), so it judges no claim.
SUPERSEDED_SCALING = (
    "the scaling record is schema 1: it timed the einsum decoder that materialized the atoms "
    "(L x K x D), since replaced: that implementation, not the model"
)
MIN_LENGTHS = 4  # lengths a slope is fitted on before it judges anything (docs/claims.md: slopes)


def judge_slope(claims: dict, claim: dict, ev: Evidence) -> dict:
    """slope: the log-log slope of the experiment's cost against L. A view judges when every compared layer is fitted
    on >= MIN_LENGTHS lengths and the linear control of the same run (`control`) reads linear within the tolerance;
    there: reproduced within the tolerance of the paper's slope, contradicted when the slope exceeds that of the layer
    it is claimed to beat (`than`) by more than the tolerance, else not reproduced. The views that judge must agree
    (else not reproduced); none judges: not measured. One benchmark run; the fit's 95 % interval is shown."""
    rec = ev.scaling
    if rec is None:
        return verdict_row(claim, reason="no scaling record")
    paths = [rec["_path"]]
    if rec.get("schema") == 1:
        return verdict_row(claim, reason=SUPERSEDED_SCALING, evidence=paths)
    paper = float(claim["paper"])
    tol = tolerance_of(claims, claim, paper)
    control, rival = claim.get("control"), claim["than"][0]
    judged, skipped, first = {}, [], None
    for view in claim["views"]:
        layer = next(
            (
                x
                for x in claim.get("layers") or [claim["experiment"]]
                if "slope" in fit_slope(rec, view, x, claim["mode"])
            ),
            None,
        )
        if layer is None:
            skipped.append(f"{view}: no fit of {claim['experiment']}")
            continue
        fits = {name: fit_slope(rec, view, name, claim["mode"]) for name in (layer, rival, control) if name}
        ours = fits[layer]
        first = first or (view, layer, ours)
        short = [m for m, f in fits.items() if f["n"] < MIN_LENGTHS]
        if short:
            fewest = min(fits[m]["n"] for m in short)
            skipped.append(f"{view}: {', '.join(short)} on {fewest} lengths, fewer than {MIN_LENGTHS}")
            continue
        if control and abs(fits[control]["slope"] - 1.0) > tol:
            skipped.append(f"{view}: the linear control {control} reads {fits[control]['slope']:.2f}")
            continue
        s, a = ours["slope"], fits[rival]["slope"]
        verdict = REPRODUCED if abs(s - paper) <= tol else CONTRADICTED if s - a > tol else NOT_REPRODUCED
        judged[view] = (verdict, layer, ours, a, fits.get(control, {}).get("slope"))
    if first is None:
        return verdict_row(
            claim, reason=f"no {claim['metric']} slope of {claim['experiment']} in the record", evidence=paths
        )

    def text(view, layer, fit):
        return f"{fit['slope']:.2f} [{fit['low']:.2f}, {fit['high']:.2f}] ({view}, {layer}, n = {fit['n']})"

    if not judged:
        view, layer, fit = first
        return verdict_row(
            claim,
            compared_with=rival,
            evidence=paths,
            tolerance=tol,
            n=1,
            reason=f"no view judges: {'; '.join(skipped)}; slope {text(view, layer, fit)}",
        )
    verdicts = {v[0] for v in judged.values()}
    verdict = verdicts.pop() if len(verdicts) == 1 else NOT_REPRODUCED
    parts = [
        f"{text(view, layer, fit)} against {rival} {a:.2f}" + (f", control {control} {c:.2f}" if c else "") + f": {v}"
        for view, (v, layer, fit, a, c) in judged.items()
    ]
    reason = (
        f"one benchmark run, 95 % interval of the fit; {'; '.join(parts)}; tolerance ±{tol:.3g} "
        f"({claim['tolerance']})"
        + (f"; judging nothing: {'; '.join(skipped)}" if skipped else "")
        + ("; the views disagree" if len(judged) > 1 and len({v[0] for v in judged.values()}) > 1 else "")
    )
    view, (_, layer, fit, _, _) = next(iter(judged.items()))
    return verdict_row(
        claim,
        compared_with=rival,
        ours_value=fit["slope"],
        ours_ci_low=fit["low"],
        ours_ci_high=fit["high"],
        n=1,
        tolerance=tol,
        verdict=verdict,
        reason=reason,
        evidence=paths,
        shown=f"{fit['slope']:.2f} [{fit['low']:.2f}, {fit['high']:.2f}] ({view} view)",
    )
