"""The rule of a competitive claim (generation quality): the reference perplexity of a model's samples against
its yardstick, compared with the best baseline's by a paired interval over sequences; docs/claims.md: generation
quality.
"""

from __future__ import annotations

import math

import numpy as np

from .claim_row import CONTRADICTED, NOT_REPRODUCED, REPRODUCED, verdict_row
from .evidence import Evidence
from .statistics import t_quantile

MIN_SEQUENCES = 20  # sequences a generation-quality verdict needs (docs/claims.md: small samples)


def _ppl_parts(entry: dict) -> tuple[np.ndarray, np.ndarray]:
    per = entry["per_sequence"]
    return np.asarray(per["nll"], dtype=float), np.asarray(per["scored"], dtype=float)


def _distance(model: tuple, real: tuple, idx: np.ndarray) -> np.ndarray:
    """|ln(P_model / P_real)| over the sequences of each row of idx: ln P = sum NLL / sum tokens."""
    (nm, tm), (nr, tr) = model, real
    return np.abs(nm[idx].sum(-1) / tm[idx].sum(-1) - nr[idx].sum(-1) / tr[idx].sum(-1))


def judge_competitive(claims: dict, claim: dict, ev: Evidence) -> dict:
    """competitive (generation quality): D = |ln(P / P_real)|, P the reference perplexity of a model's samples
    and P_real that of its yardstick (the true continuations, else held-out text); the best of `than` has the
    smallest D. dD = D(experiment) - D(best), 95 % interval from a paired bootstrap over sequences. Reproduced when
    the interval lies at or below ln(1 + tolerance), contradicted when above it, not reproduced when it contains it.
    Judged on the first of `sets` that every compared record has, at the lowest seed they share."""
    from .sample_scores import resample_indices

    names = [claim["experiment"], *claim["than"]]
    recs = {e: ev.records("quality", claim["corpus"], e) for e in names}
    paths = [r["_path"] for rs in recs.values() for r in rs]
    absent = [e for e in names if not recs[e]]
    if absent:
        return verdict_row(
            claim, reason=f"no quality record of {', '.join(absent)} on {claim['corpus']}", evidence=paths
        )
    seeds = sorted(set.intersection(*({r["seed"] for r in rs} for rs in recs.values())))
    if not seeds:
        return verdict_row(claim, reason="no seed that every compared model has", evidence=paths)
    run = {e: next(r for r in recs[e] if r["seed"] == seeds[0]) for e in names}
    sets = [s for s in claim["sets"] if all(s in run[e]["sets"] for e in names)]
    if not sets:
        return verdict_row(
            claim,
            reason=f"no set of samples among {', '.join(claim['sets'])} that every compared record has",
            evidence=paths,
        )
    name = sets[0]
    entries = {e: run[e]["sets"][name] for e in names}
    yard = "true_continuations" if all("true_continuations" in x["yardsticks"] for x in entries.values()) else "heldout"
    sizes = {e: (x["n"], x["yardsticks"][yard]["n"]) for e, x in entries.items()}
    if len({n for pair in sizes.values() for n in pair}) != 1:
        return verdict_row(
            claim, reason=f"the sets differ in size (sequences: {sizes}): no paired comparison", evidence=paths
        )
    if name in PROMPTED:  # the same prompts for every model: the settings that fix them agree
        settings = {e: run[e].get("sampling") or {} for e in names}
        differ = [k for k in SAME_PROMPTS if len({repr(s.get(k)) for s in settings.values()}) != 1]
        if differ:
            return verdict_row(
                claim,
                reason=f"the {name} were not of the same prompts: {', '.join(differ)} differ ("
                + "; ".join(f"{e} {settings[e].get(differ[0])}" for e in names)
                + ")",
                evidence=paths,
            )
    n = entries[claim["experiment"]]["n"]
    if n < 2:
        return verdict_row(claim, reason="one sequence: no interval", evidence=paths)
    parts = {e: (_ppl_parts(x), _ppl_parts(x["yardsticks"][yard])) for e, x in entries.items()}
    point = np.arange(n)[None, :]
    dist = {e: float(_distance(*parts[e], point)[0]) for e in names}
    best = min(claim["than"], key=lambda e: dist[e])
    d = dist[claim["experiment"]] - dist[best]
    if n >= MIN_SEQUENCES:
        idx = resample_indices(n)
        boot = _distance(*parts[claim["experiment"]], idx) - _distance(*parts[best], idx)
        lo, hi = (float(x) for x in np.percentile(boot, [2.5, 97.5]))
        how = "paired bootstrap interval"
    else:  # too few sequences for a bootstrap: Student's t on the per-sequence paired differences
        each = np.arange(n)[:, None]
        pair = _distance(*parts[claim["experiment"]], each) - _distance(*parts[best], each)
        half = t_quantile(0.975, n - 1) * float(np.std(pair, ddof=1)) / math.sqrt(n)
        lo, hi = float(pair.mean() - half), float(pair.mean() + half)
        how = "t interval on the per-sequence paired differences"
    tol = math.log1p(float(claims["tolerances"][claim["tolerance"]]["rel"]))
    verdict = REPRODUCED if hi <= tol else CONTRADICTED if lo > tol else NOT_REPRODUCED
    few = n < MIN_SEQUENCES and verdict != NOT_REPRODUCED
    if few:
        verdict = NOT_REPRODUCED

    def ppl(e: str) -> str:
        (nm, tm), (nr, tr) = parts[e]
        return f"P {math.exp(nm.sum() / tm.sum()):.4g} vs {math.exp(nr.sum() / tr.sum()):.4g}"

    what = {"true_continuations": "the true continuations", "heldout": "held-out text"}[yard]
    reason = (
        f"{name}, seed {seeds[0]}, {n} sequences; D = |ln(P / P_real)|, P_real of {what}: "
        f"{claim['experiment']} {dist[claim['experiment']]:.3f} ({ppl(claim['experiment'])}), best baseline "
        f"{best} {dist[best]:.3f} ({ppl(best)}); dD = {d:+.3f}, 95 % {how} "
        f"[{lo:+.3f}, {hi:+.3f}]; tolerance ln(1 + {claims['tolerances'][claim['tolerance']]['rel']:g}) = "
        f"{tol:.3f}"
    )
    reason += {
        REPRODUCED: ": the interval lies at or below it",
        CONTRADICTED: ": the interval lies above it",
        NOT_REPRODUCED: ": the interval contains it, not established either way",
    }[verdict]
    if few:
        reason = reason.rsplit(":", 1)[0] + f": fewer than {MIN_SEQUENCES} sequences, no verdict either way"
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
        shown=f"dD {d:+.2f} [{lo:+.2f}, {hi:+.2f}] vs {best}, n = {n} {SET_WORDS.get(name, name)}",
        reading=what_ran(name, n, run[claim["experiment"]].get("sampling") or {}, seeds[0], what),
    )


SET_WORDS = {
    "continuations": "continuations",
    "gmm_continuations": "GMM-coefficient continuations",
    "free": "free samples",
    "free_gmm": "free GMM-coefficient samples",
}
PROMPTED = ("continuations", "gmm_continuations")  # the sets of prompt continuations (the others: free samples)
SAME_PROMPTS = ("split", "prompts", "prompt_tokens", "new_tokens", "starts")


def what_ran(name: str, n: int, sampling: dict, seed: int, yardstick: str) -> str:
    """The generation-quality claim's reading as what was judged: the set, its n and, for continuations, the
    prompts' settings (never the protocol of a set that did not run)."""
    head = f"what ran: the reference perplexity (Kneser-Ney trigram of the training split) of {n} {SET_WORDS[name]}"
    if name not in PROMPTED:
        return f"{head} per model against {yardstick} of the same lengths; no continuations of validation prompts"
    s = sampling
    split = {"valid": "validation"}.get(s.get("split", "valid"), s.get("split"))
    return (
        f"{head} per model of {split} prompts ({s.get('prompt_tokens', '?')} prompt tokens, "
        f"{s.get('new_tokens', '?')} new tokens, temperature {s.get('temperature', '?')}, top-k "
        f"{s.get('top_k') or 'off'}, seed {seed}) against {yardstick}"
    )
