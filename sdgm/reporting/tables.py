"""The tables as DataFrames: seeds aggregated to mean ± sample std, the paper's value and the difference beside
each metric, main runs, ablations (each beside its main run) and reconstruction. A missing value is "n/a (reason)".
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ..common.missing import (
    CONFIG_NOT_RECORDED,
    LEAKS_FUTURE,
    MAIN_RUN_NOT_IN_REPORT,
    MODEL_NOT_RECORDED,
    NAN_RECORDED,
    NO_RECONSTRUCTION,
    NOT_IN_PAPER,
    NOT_MEASURED,
    SAME_CONFIG_AS_MAIN,
    na,
)
from .records import (
    ABLATION_COLUMNS,
    CAUSAL_YES,
    DISPLAY_COLUMNS,
    LEAKS,
    MAIN_RUN,
    METRIC_COLUMNS,
    NON_CAUSAL_SUFFIX,
    RECONSTRUCTION_COLUMNS,
    ReportError,
    experiment_order,
)


def aggregate(values: list[float]) -> dict:
    """Mean, sample std (ddof=1; 0 when n == 1) and count. Pure; NaN mean/std when n == 0."""
    arr = np.asarray(list(values), dtype=float)
    n = int(arr.size)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if n > 1 else 0.0
    return {"mean": mean, "std": std, "n": n}


def format_aggregate(agg: dict, decimals: int) -> str:
    """``"mean ± std"`` with ``decimals`` places; just the mean when n == 1."""
    mean = f"{agg['mean']:.{decimals}f}"
    if agg["n"] > 1 and math.isfinite(agg["std"]):
        return f"{mean} ± {agg['std']:.{decimals}f}"
    return mean


def _format_paper(v: float) -> str:
    """A published number as published (no re-rounding, no padding)."""
    if float(v).is_integer():
        return str(int(v))
    return repr(float(v))


def _metric_value(rec: dict, key: str) -> tuple[float | None, str | None]:
    """(value, None) or (None, reason)."""
    v = rec["metrics"].get(key)
    if v is not None and not (isinstance(v, float) and math.isnan(v)):
        return float(v), None
    reason = (rec.get("na") or {}).get(key)
    if reason is None:
        reason = NAN_RECORDED if v is not None else NOT_MEASURED
    return None, str(reason)


def _group(records: list[dict]) -> dict[tuple[str, str], list[dict]]:
    groups: dict[tuple[str, str], list[dict]] = {}
    for rec in records:
        groups.setdefault((rec["experiment"], rec["corpus"]), []).append(rec)
    for (exp, corpus), recs in groups.items():
        by_seed: dict[int, list[str]] = {}
        for r in recs:
            by_seed.setdefault(r["seed"], []).append(r.get("_path", "?"))
        dups = {s: p for s, p in by_seed.items() if len(p) > 1}
        if dups:
            detail = "; ".join(f"seed {s}: {', '.join(p)}" for s, p in sorted(dups.items()))
            raise ReportError(f"duplicate runs for {exp}/{corpus} ({detail})")
        recs.sort(key=lambda r: r["seed"])
        specs = {json.dumps(_without_seed(r["run_spec"]), sort_keys=True): r for r in recs if r.get("run_spec")}
        if len(specs) > 1:
            a, b = list(specs.values())[:2]
            raise ReportError(
                f"the seeds of {exp}/{corpus} were run with different configurations "
                f"({a.get('_path', '?')} and {b.get('_path', '?')} differ in more than the seed): "
                f"a row would mix them"
            )
    return groups


def _without_seed(spec: Any) -> Any:
    if not isinstance(spec, dict):
        return spec
    return {k: v for k, v in spec.items() if k != "seed"}


def _sorted_keys(groups: dict[tuple[str, str], list[dict]]) -> list[tuple[str, str]]:
    """(experiment, corpus) keys by corpus, then in the experiments' order (records.experiment_order)."""
    rank = experiment_order(r for recs in groups.values() for r in recs)
    return sorted(groups, key=lambda k: (k[1], rank[k[0]]))


def _paper_index(paper: list[dict]) -> dict[tuple[str, str], dict]:
    return {(r["experiment"], r["corpus"]): r for r in paper}


def _model_name(recs: list[dict]) -> str:
    models = sorted({str(r["model"]) for r in recs if r.get("model") is not None})
    return ",".join(models) if models else na(MODEL_NOT_RECORDED)


def leaks(rec: dict) -> bool:
    """True when the run's causality audit found logits that depend on later tokens."""
    audit = rec["metrics"].get("causal_audit")
    return isinstance(audit, dict) and audit.get("passed") is False


def _causal(recs: list[dict]) -> tuple[str, bool | None]:
    """(display, value) of the causal column: any leaking seed marks the row; unaudited runs say so."""
    if any(leaks(r) for r in recs):
        return LEAKS, False
    unaudited = [r for r in recs if not isinstance(r["metrics"].get("causal_audit"), dict)]
    if unaudited:
        return na(f"not audited: {len(unaudited)} of {len(recs)} seeds"), None
    return CAUSAL_YES, True


def _collect(recs: list[dict], mkey: str, scale: float = 1.0) -> tuple[dict, str, int]:
    """(aggregate of the measured values, the reasons of the missing ones joined, how many are missing)."""
    vals, reasons = [], []
    for r in recs:
        v, why = _metric_value(r, mkey)
        if v is None:
            reasons.append(why)
        else:
            vals.append(v * scale)
    return aggregate(vals), "; ".join(dict.fromkeys(reasons)), len(reasons)


def _show(agg: dict, why: str, n_missing: int, dec: int, constant: bool = False) -> str:
    """Mean ± std, or n/a with the reason; a partly missing cell says how many seeds it covers.
    `constant`: a property of the config (parameter count), shown without ± when every seed agrees."""
    if agg["n"] == 0:
        return na(why)
    n_all = agg["n"] + n_missing
    text = f"{agg['mean']:.{dec}f}" if constant and agg["std"] == 0.0 else format_aggregate(agg, dec)
    return f"{text} (n={agg['n']}/{n_all}; n/a: {why})" if n_missing else text


def _std(agg: dict) -> float:
    return agg["std"] if agg["n"] > 1 else (0.0 if agg["n"] == 1 else float("nan"))


def _paper_diff(agg: dict, why: str, pv: float | None, leaking: bool, dec: int) -> tuple[str, float]:
    """Ours minus the paper's value: (display, number); n/a with the reason where there is nothing to compare."""
    if leaking:  # a model that sees the tokens it predicts is not compared with anything
        return na(LEAKS_FUTURE), float("nan")
    if pv is None:
        return na(NOT_IN_PAPER), float("nan")
    if agg["n"] == 0:
        return na(why), float("nan")
    d = agg["mean"] - float(pv)
    return f"{d:+.{dec}f}", d


def _header(recs: list[dict], exp: str, corpus: str) -> tuple[dict, dict, bool]:
    """The row's name cells (display, numeric) and whether it leaks."""
    causal, is_causal = _causal(recs)
    leaking = is_causal is False
    disp = {
        "experiment": exp + (NON_CAUSAL_SUFFIX if leaking else ""),
        "model": _model_name(recs),
        "corpus": corpus,
        "seeds": len(recs),
        "causal": causal,
    }
    return disp, {**disp, "causal": is_causal}, leaking


def _rows(records: list[dict], paper: list[dict], skip: Iterable[str] = ()):
    """Yield (display_row, numeric_row) per (experiment, corpus) of the main table, sorted; experiments in
    `skip` (the ablations, which have their own table) are left out."""
    groups = _group(records)
    pidx = _paper_index(paper)
    skip = set(skip)
    for key in _sorted_keys(groups):
        exp, corpus = key
        if exp in skip:
            continue
        recs = groups[key]
        prow = pidx.get(key, {})
        disp, num, leaking = _header(recs, exp, corpus)
        for col, mkey, scale, dec, pkey in METRIC_COLUMNS:
            agg, why, n_missing = _collect(recs, mkey, scale)
            disp[col] = _show(agg, why, n_missing, dec, constant=col == "params_m")
            num[col], num[f"{col}_std"], num[f"{col}_n"] = agg["mean"], _std(agg), agg["n"]
            if pkey is None:
                continue
            pv = prow.get(pkey)
            disp[f"{col}_paper"] = na(NOT_IN_PAPER) if pv is None else _format_paper(pv)
            num[f"{col}_paper"] = float("nan") if pv is None else float(pv)
            disp[f"{col}_diff"], num[f"{col}_diff"] = _paper_diff(agg, why, pv, leaking, dec)
        yield disp, num


def main_table(records: list[dict], paper: list[dict], ablations: dict[str, str] | None = None) -> pd.DataFrame:
    """Display table (all cells strings except ``seeds``), one row per (experiment, corpus); the experiments
    named in ``ablations`` ({ablation: main experiment}) are left to :func:`ablation_table`."""
    rows = [d for d, _ in _rows(records, paper, skip=ablations or {})]
    df = pd.DataFrame(rows, columns=DISPLAY_COLUMNS)
    if len(df):
        df["seeds"] = df["seeds"].astype(int)
    return df


def numeric_columns() -> list[str]:
    cols = ["experiment", "model", "corpus", "seeds", "causal"]
    for col, _, _, _, pkey in METRIC_COLUMNS:
        cols += [col, f"{col}_std", f"{col}_n"]
        if pkey is not None:
            cols += [f"{col}_paper", f"{col}_diff"]
    return cols


def main_table_numeric(records: list[dict], paper: list[dict], ablations: dict[str, str] | None = None) -> pd.DataFrame:
    """Same rows as :func:`main_table`; ours as mean/std/n, paper and diff as floats, NaN if missing;
    ``causal`` True / False (leaks) / None (not audited)."""
    rows = [n for _, n in _rows(records, paper, skip=ablations or {})]
    df = pd.DataFrame(rows, columns=numeric_columns())
    float_cols = [
        c for c in df.columns if c not in ("experiment", "model", "corpus", "seeds", "causal") and not c.endswith("_n")
    ]
    df[float_cols] = df[float_cols].astype(float)
    return df


# --------------------------------------------------------------------------- ablations and reconstruction


def _setting(rec: dict) -> dict:
    """The resolved configuration a run recorded: model options, and training options as ``train.<key>``."""
    out = dict(rec.get("model_config") or {})
    out.update({f"train.{k}": v for k, v in (rec.get("train_config") or {}).items() if k != "seed"})
    return out


def setting_diff(rec: dict, ref: dict) -> dict:
    """{option: (run's value, reference's value)} for every recorded option in which the two runs differ."""
    a, b = _setting(rec), _setting(ref)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def ablation_label(rec: dict, ref: dict | None) -> str:
    """ "n_atoms = 32": what the ablation changed relative to its main run, read from both runs' metrics.json."""
    if ref is None:
        return na(MAIN_RUN_NOT_IN_REPORT)
    if not rec.get("model_config") or not ref.get("model_config"):
        return na(CONFIG_NOT_RECORDED)
    diff = setting_diff(rec, ref)
    return ", ".join(f"{k} = {v}" for k, (v, _) in diff.items()) or na(SAME_CONFIG_AS_MAIN)


def _ablation_rows(records: list[dict], paper: list[dict], ablations: dict[str, str]):
    """Yield (display, numeric) per (experiment, corpus) of the ablation table: for each corpus the main run(s)
    first, then its ablations in the order of ``ablations``."""
    groups = _group(records)
    pidx = _paper_index(paper)
    for corpus in sorted({c for _, c in groups}):
        present = [a for a in ablations if (a, corpus) in groups]  # a main run gets a row where it has ablations
        mains = list(dict.fromkeys(ablations[a] for a in present))
        for exp in mains + [a for a in present if a not in mains]:
            recs = groups.get((exp, corpus))
            if not recs:
                continue
            main = ablations.get(exp)
            ref = groups.get((main, corpus)) if main else None
            disp, num, leaking = _header(recs, exp, corpus)
            del disp["model"], num["model"]
            disp["ablation"] = num["ablation"] = MAIN_RUN if main is None else ablation_label(recs[0], ref and ref[0])
            disp["compared_with"] = num["compared_with"] = "–" if main is None else main
            prow, pref = pidx.get((exp, corpus), {}), pidx.get((main, corpus), {})
            measured = {}
            for col in ("val_ppl", "test_ppl"):
                agg, why, n_missing = _collect(recs, col)
                measured[col] = agg, why
                disp[col] = _show(agg, why, n_missing, 1)
                num[col], num[f"{col}_std"], num[f"{col}_n"] = agg["mean"], _std(agg), agg["n"]
                # ours minus our main run of the same corpus (mean over seeds each)
                if main is None:
                    disp[f"{col}_vs_main"], num[f"{col}_vs_main"] = "0 (main run)", 0.0
                elif ref is None:
                    disp[f"{col}_vs_main"] = na(f"main run {main}/{corpus} not in the report")
                    num[f"{col}_vs_main"] = float("nan")
                else:
                    ragg, rwhy, _ = _collect(ref, col)
                    if agg["n"] == 0 or ragg["n"] == 0:
                        disp[f"{col}_vs_main"] = na(why if agg["n"] == 0 else f"main run: {rwhy}")
                        num[f"{col}_vs_main"] = float("nan")
                    else:
                        d = agg["mean"] - ragg["mean"]
                        disp[f"{col}_vs_main"], num[f"{col}_vs_main"] = f"{d:+.1f}", d
            pv = prow.get("val_ppl")
            disp["val_ppl_paper"] = na(NOT_IN_PAPER) if pv is None else _format_paper(pv)
            num["val_ppl_paper"] = float("nan") if pv is None else float(pv)
            disp["val_ppl_diff"], num["val_ppl_diff"] = _paper_diff(*measured["val_ppl"], pv, leaking, 1)
            # the paper's own ablation effect: its ablation minus its main run
            pmain = pref.get("val_ppl")
            if main is None:
                disp["val_ppl_vs_main_paper"] = "0 (main run)" if pv is not None else na(NOT_IN_PAPER)
                num["val_ppl_vs_main_paper"] = 0.0 if pv is not None else float("nan")
            elif pv is None or pmain is None:
                disp["val_ppl_vs_main_paper"], num["val_ppl_vs_main_paper"] = na(NOT_IN_PAPER), float("nan")
            else:
                d = float(pv) - float(pmain)
                disp["val_ppl_vs_main_paper"], num["val_ppl_vs_main_paper"] = f"{d:+.1f}", d
            yield disp, num


def ablation_table(records: list[dict], paper: list[dict], ablations: dict[str, str]) -> pd.DataFrame:
    """Each ablation (``ablations``: {ablation: main experiment}) and its main run, per corpus: validation and
    test perplexity (mean ± std over seeds), the paper's value and ours minus it, and each ablation minus its
    main run, ours and the paper's."""
    df = pd.DataFrame([d for d, _ in _ablation_rows(records, paper, ablations)], columns=ABLATION_COLUMNS)
    if len(df):
        df["seeds"] = df["seeds"].astype(int)
    return df


def ablation_table_numeric(records: list[dict], paper: list[dict], ablations: dict[str, str]) -> pd.DataFrame:
    """Same rows as :func:`ablation_table`, numbers as floats (NaN where the display says n/a)."""
    return pd.DataFrame([n for _, n in _ablation_rows(records, paper, ablations)])


def _reconstruction_rows(records: list[dict], paper: list[dict], ablations: dict[str, str]):
    groups = _group(records)
    pidx = _paper_index(paper)
    for key in _sorted_keys(groups):
        exp, corpus = key
        recs = groups[key]
        if all((r.get("na") or {}).get("cosine_val") == NO_RECONSTRUCTION for r in recs):
            continue  # a model without X_hat: no row, rather than a row of n/a
        disp, num, leaking = _header(recs, exp, corpus)
        del disp["model"], num["model"]
        main = ablations.get(exp)
        ref = groups.get((main, corpus)) if main else None
        disp["ablation"] = num["ablation"] = MAIN_RUN if main is None else ablation_label(recs[0], ref and ref[0])
        for col in ("cosine_val", "cosine_test"):
            agg, why, n_missing = _collect(recs, col)
            disp[col] = _show(agg, why, n_missing, 3)
            num[col], num[f"{col}_std"], num[f"{col}_n"] = agg["mean"], _std(agg), agg["n"]
            if col == "cosine_val":
                pv = pidx.get(key, {}).get("cosine")
                disp["cosine_paper"] = na(NOT_IN_PAPER) if pv is None else _format_paper(pv)
                num["cosine_paper"] = float("nan") if pv is None else float(pv)
                disp["cosine_diff"], num["cosine_diff"] = _paper_diff(agg, why, pv, leaking, 3)
        yield disp, num


def reconstruction_table(
    records: list[dict], paper: list[dict], ablations: dict[str, str] | None = None
) -> pd.DataFrame:
    """Embedding reconstruction, mean over validation (and test) tokens of cos(X_hat_t, X_t), mean ± std over
    seeds, for every run that reconstructs its embeddings (main runs and ablations), beside the paper's value."""
    rows = [d for d, _ in _reconstruction_rows(records, paper, ablations or {})]
    df = pd.DataFrame(rows, columns=RECONSTRUCTION_COLUMNS)
    if len(df):
        df["seeds"] = df["seeds"].astype(int)
    return df


def reconstruction_table_numeric(
    records: list[dict], paper: list[dict], ablations: dict[str, str] | None = None
) -> pd.DataFrame:
    return pd.DataFrame([n for _, n in _reconstruction_rows(records, paper, ablations or {})])
