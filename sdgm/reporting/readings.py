"""The readings of the paper (docs/readings.md): tables, the figure, and one explanation line per claim that is not
reproduced, all from records: the runs' metrics.json, the readings records of rule reading_measures
(sdgm.harness.readings.measure_run) and the parameter readings of rule parameter_readings. Nothing here is written
by hand: a reading's label is what its recorded configuration changed from the default run's.

Tables (build_readings_report):
    readings             one row per (run, perplexity protocol): validation perplexity at the budget, its ratio to
                         the reference (Transformer-XL) under each of the reference's protocols, parameters, the
                         causality audit's verdict, training tokens and wall time
    readings_cosine      the reconstruction cosine of every SDGM run under every measurement reading
    readings_parameters  parameter counts at the paper's sizes: every architecture reading one option away from the
                         default, and every combination within the parameter tolerance of the paper's count
Figure: readings_curves, validation perplexity against training tokens of every run.

explain_claims(claims, data) -> {claim id: line} for every claim judged "not reproduced" or "contradicted": the
closest VALID reading (its causality audit passed) and its gap, or that no reading explains the gap. A reading that
leaks future tokens is never named the closest valid reading; where one comes closer, the line says so.
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ..common.atomic import write_text_atomic
from ..common.missing import na
from .plots import save_figure
from .records import LEAKS, PAPER_PATH, ReportError, load_metrics, load_paper
from .render import write_table
from .tables import ablation_label

CLAIMS_PATH = Path(__file__).resolve().parent / "claims.yaml"
PASSED = "passed"
NOT_AUDITED = "not audited"
WINDOWS = "windows of L"       # val_ppl: every window starts without context, the same rule for every model
MEMORY = "state carried"       # val_ppl_mem: a stateful model's state carried across windows
EXPLAINED_VERDICTS = ("not reproduced", "contradicted")
TARGETS = ("current", "next")
VECTORS = ("raw", "standardized")
POOLING = ("mean", "pooled")


# ---- loading ----------------------------------------------------------------------------------------------------

def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _problem(rec: dict, kind: str) -> str | None:
    """What makes a readings record unusable, or None."""
    if kind == "readings_parameters":
        rows = rec.get("rows")
        if not isinstance(rows, list) or not all(isinstance(r, dict) and isinstance(r.get("corpus"), str)
                                                 and _number(r.get("params")) for r in rows):
            return "'rows' must be a list of {corpus, options..., params}"
        return None
    if not (isinstance(rec.get("run_id"), str) and isinstance(rec.get("experiment"), str)):
        return "'run_id' and 'experiment' must be strings"
    cosine = rec.get("cosine")
    if cosine is not None and not (isinstance(cosine, dict) and all(_number(v) for v in cosine.values())):
        return "'cosine' must be null or a mapping of numbers"
    evs = rec.get("evaluations")
    if not isinstance(evs, dict) or not all(isinstance(e, dict) and isinstance(e.get("options"), dict)
                                            and _number(e.get("val_ppl")) for e in evs.values()):
        return "'evaluations' must map names to {options, val_ppl, ...}"
    return None


def load_json_records(paths, kind: str) -> list[dict]:
    """Readings records of one kind, checked before use; errors name the file."""
    out = []
    for p in paths:
        try:
            rec = json.loads(Path(p).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ReportError(f"{p}: cannot read the readings record ({e})") from e
        if not isinstance(rec, dict) or rec.get("kind") != kind:
            raise ReportError(f"{p}: not a {kind} record")
        problem = _problem(rec, kind)
        if problem:
            raise ReportError(f"{p}: {problem}")
        out.append(rec)
    return out


def _tolerances() -> dict:
    data = yaml.safe_load(CLAIMS_PATH.read_text(encoding="utf-8"))
    return data["tolerances"], {c["id"]: c for c in data["claims"]}


@dataclass
class Entry:
    """One perplexity reading: a run under one protocol."""
    name: str          # experiment, or experiment + protocol
    experiment: str
    model: str
    protocol: str
    changed: str       # what the run changed from the default run (its recorded configuration)
    val_ppl: float
    valid: bool        # the run's causality audit passed (a run without one is never valid)
    audit: str         # PASSED, LEAKS or NOT_AUDITED
    params: int
    train_tokens: float
    steps: int
    best_step: int     # the evaluated weights: the best of the training's validations (the trainer keeps the best)
    wall_s: float


@dataclass
class ReadingsData:
    """Everything the tables and the explanations read, built from records only (from_records)."""
    default: str
    reference: str
    entries: list[Entry] = field(default_factory=list)
    cosine: dict[str, dict] = field(default_factory=dict)      # experiment -> {target/vectors/pooling: value}
    valid: dict[str, bool] = field(default_factory=dict)       # experiment -> audit passed
    changed: dict[str, str] = field(default_factory=dict)      # experiment -> what it changed
    corpus: str = ""
    parameters: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)

    @classmethod
    def from_records(cls, metrics: list[dict], measures: list[dict], parameters: dict | None, default: str,
                     reference: str) -> "ReadingsData":
        data = cls(default=default, reference=reference, records=metrics,
                   parameters=(parameters or {}).get("rows", []))
        by_exp = {r["experiment"]: r for r in metrics}
        if len(by_exp) < len(metrics):
            twice = sorted({r["experiment"] for r in metrics if sum(q["experiment"] == r["experiment"]
                                                                    for q in metrics) > 1})
            raise ReportError(f"the readings compare one run per experiment; several runs of {', '.join(twice)}")
        if default not in by_exp:
            raise ReportError(f"no metrics record of the default run {default!r}")
        if reference not in by_exp:
            raise ReportError(f"no metrics record of the reference run {reference!r}")
        data.corpus = by_exp[default]["corpus"]
        measured = {m["run_id"]: m for m in measures}
        for rec in metrics:
            exp, m = rec["experiment"], rec["metrics"]
            audit = m.get("causal_audit")
            valid = bool(audit and audit.get("passed"))
            verdict = NOT_AUDITED if not audit else PASSED if valid else LEAKS
            if exp == default:
                changed = "default"
            elif rec["model"] == by_exp[default]["model"]:
                changed = ablation_label(rec, by_exp[default])
            else:
                changed = f"baseline: {rec['model']}"
            data.valid[exp], data.changed[exp] = valid, changed
            tokens = m["train_tokens_per_s"] * m["train_seconds"]
            common = dict(experiment=exp, model=rec["model"], changed=changed, valid=valid, audit=verdict,
                          params=m["params"],
                          train_tokens=tokens, steps=m["steps"], best_step=m["best_step"], wall_s=m["train_wall_s"])
            data.entries.append(Entry(name=exp, protocol=WINDOWS, val_ppl=m["val_ppl"], **common))
            if m.get("val_ppl_mem") is not None:
                data.entries.append(Entry(name=f"{exp} ({MEMORY})", protocol=MEMORY, val_ppl=m["val_ppl_mem"],
                                          **common))
            extra = measured.get(rec["run_id"])
            if extra is None:
                raise ReportError(f"{rec['run_id']}: no readings record (rule reading_measures)")
            for ev_name, ev in extra["evaluations"].items():
                opts = ", ".join(f"{k} {v}" for k, v in ev["options"].items())
                data.entries.append(Entry(name=ev_name, protocol=opts, val_ppl=ev["val_ppl"],
                                          **common))
            if extra.get("cosine"):
                data.cosine[exp] = extra["cosine"]
        return data

    def reference_entries(self) -> list[Entry]:
        return [e for e in self.entries if e.experiment == self.reference]

    def ratio(self, e: Entry, protocol: str = WINDOWS) -> float:
        ref = next(r for r in self.reference_entries() if r.protocol == protocol)
        return e.val_ppl / ref.val_ppl

    def label(self, experiment: str) -> str:
        changed = self.changed.get(experiment, "")
        return experiment if changed in ("", "default") or changed.startswith("baseline") else \
            f"{experiment} ({changed})"


# ---- tables ------------------------------------------------------------------------------------------------------

def _fmt(v: float, decimals: int) -> str:
    return f"{v:,.{decimals}f}" if isinstance(v, (int, float)) and math.isfinite(v) else na("not finite")


def readings_table(data: ReadingsData) -> pd.DataFrame:
    """One row per (run, protocol); ratio columns: to each of the reference's protocols."""
    refs = data.reference_entries()
    rows = []
    for e in data.entries:
        row = {"reading": e.name, "changed": e.changed, "protocol": e.protocol, "val_ppl": e.val_ppl}
        for r in refs:
            row[f"ratio to {r.name}"] = e.val_ppl / r.val_ppl
        row.update({"params_m": e.params / 1e6, "audit": e.audit,
                    "train_tokens": e.train_tokens, "steps": e.steps, "best_step": e.best_step, "wall_s": e.wall_s})
        rows.append(row)
    return pd.DataFrame(rows)


def readings_display(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if col in ("val_ppl", "wall_s"):
            out[col] = out[col].map(lambda v: _fmt(v, 1))
        elif col.startswith("ratio to"):
            out[col] = out[col].map(lambda v: f"×{v:.3f}" if math.isfinite(v) else na("not finite"))
        elif col == "params_m":
            out[col] = out[col].map(lambda v: _fmt(v, 2))
        elif col == "train_tokens":
            out[col] = out[col].map(lambda v: _fmt(v, 0))
    return out


def cosine_table(data: ReadingsData) -> pd.DataFrame:
    rows = []
    for rec in data.records:
        exp = rec["experiment"]
        if exp not in data.cosine:
            continue
        audit = next(e.audit for e in data.entries if e.experiment == exp)
        row = {"reading": exp, "changed": data.changed[exp], "audit": audit,
               "cosine_val (record)": rec["metrics"].get("cosine_val")}
        row.update({k: data.cosine[exp][k] for k in _cosine_keys()})
        rows.append(row)
    return pd.DataFrame(rows)


def _cosine_keys() -> list[str]:
    return [f"{t}/{v}/{p}" for t in TARGETS for v in VECTORS for p in POOLING]


def parameters_table(data: ReadingsData, paper_m: float, rel_tol: float) -> pd.DataFrame:
    """Architecture readings one option away from the default (per corpus), then every combination within rel_tol
    of the paper's count."""
    rows = data.parameters
    if not rows:
        return pd.DataFrame()
    options = [k for k in rows[0] if k not in ("corpus", "vocab_size", "params")]
    default = next(r for r in data.records if r["experiment"] == data.default)  # from_records: it is there
    base = {k: default["model_config"][k] for k in options}
    out = []
    for r in rows:
        away = [k for k in options if r[k] != base.get(k)]
        within = abs(r["params"] / 1e6 - paper_m) <= rel_tol * paper_m
        if len(away) <= 1 or within:
            out.append({"corpus": r["corpus"], "vocab_size": r["vocab_size"], **{k: r[k] for k in options},
                        "changed": ", ".join(f"{k} = {r[k]}" for k in away) or "default",
                        "params_m": round(r["params"] / 1e6, 3),
                        "vs_paper_pct": round(100 * (r["params"] / 1e6 - paper_m) / paper_m, 1),
                        "within_tolerance": "yes" if within else "no"})
    return pd.DataFrame(out)


# ---- the figure --------------------------------------------------------------------------------------------------

def plot_curves(data: ReadingsData, out_stem: Path) -> list[Path]:
    """Validation perplexity (log) against training tokens, every run; the budget's full-split value as a dot."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    default_model = next(r["model"] for r in data.records if r["experiment"] == data.default)
    colors = plt.get_cmap("tab20").colors  # one colour per run (the default cycle has 10, the readings 17 runs)
    for i, rec in enumerate(data.records):
        exp, m = rec["experiment"], rec["metrics"]
        per_step = m["train_tokens_per_s"] * m["train_seconds"] / max(m["steps"], 1)
        pts = [(p["step"] * per_step, p["ppl"]) for p in rec.get("history", {}).get("val", [])
               if math.isfinite(p.get("ppl", math.nan)) and p["ppl"] > 0]
        style = ":" if not data.valid[exp] else "-" if rec["model"] == default_model else "--"  # leaks, SDGM, baseline
        label = data.label(exp) + ("" if data.valid[exp] else " [LEAKS]")
        line, = ax.plot([x for x, _ in pts], [y for _, y in pts], style, marker=".", label=label,
                        color=colors[i % len(colors)])
        ax.plot([m["train_tokens_per_s"] * m["train_seconds"]], [m["val_ppl"]], "o", color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("validation perplexity")
    ax.set_title(f"Readings on {data.corpus}: validation perplexity against training tokens\n"
                 "(dots: the whole split at the budget, windows of L)", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return save_figure(fig, out_stem)


# ---- one explanation per claim -----------------------------------------------------------------------------------

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
    further = [c for ok, c in candidates if not ok and
               (gap(value(c), target) < gap(value(best), target) or (value(c) - value(best)) * side > 0)]
    return best, further


def explain_claim(claim: dict, data: ReadingsData, paper: list[dict] | None = None) -> str | None:
    """One line for a claim judged not reproduced or contradicted (None for any other verdict). `claim` is a row of
    the claims table (sdgm.reporting.verdicts: id, kind, metric, experiment, compared_with, corpus, paper_value,
    verdict)."""
    if claim.get("verdict") not in EXPLAINED_VERDICTS:
        return None
    paper = load_paper(PAPER_PATH) if paper is None else paper
    tolerances, claims = _tolerances()
    metric, exp, corpus = claim.get("metric", ""), claim.get("experiment", ""), claim.get("corpus", "")
    other = str(claim.get("compared_with") or "")
    if not metric:  # claims with several measures name theirs in claims.yaml
        metric = (claims.get(claim["id"], {}).get("measures") or [{}])[0].get("metric", "")
    metric = metric.removeprefix("metrics.")  # a metrics.json key, as the claims table names it
    where = "" if corpus == data.corpus else f" (readings on {data.corpus})"
    sdgm_model = next((e.model for e in data.entries if e.experiment == data.default), "sdgm")

    between_readings = claim.get("kind") == "direction" and other not in ("", "nan", data.reference)
    if metric in ("val_ppl", "val_ppl_mem", "cosine_val") and between_readings:  # e.g. the STFT loss lowers the PPL
        return _explain_difference(claim, data, exp, other, "cosine_val" if metric == "cosine_val" else "val_ppl",
                                   where)
    ours, ref = _paper_ppl(paper, exp, corpus), _paper_ppl(paper, data.reference, corpus)
    if metric in ("val_ppl", "val_ppl_mem") and exp != data.reference and ours is not None and ref is not None:
        target = ours / ref
        tol = tolerances["perplexity"]["rel"]
        cands = [(e.valid, e) for e in data.entries if e.model == sdgm_model and e.protocol == WINDOWS]
        best, closer = _closest(cands, data.ratio, target, _log_gap)
        if best is None:
            return "no valid SDGM reading was measured"
        r = data.ratio(best)
        head = (f"closest valid reading{where}: {data.label(best.experiment)}, PPL ×{r:.2f} of {data.reference} at "
                f"the same budget (paper ×{target:.2f})")
        verdict = ("it closes the gap" if abs(r / target - 1) <= tol else
                   f"no valid reading closes the gap (tolerance ±{100 * tol:.0f} %)")
        leak = ("; only the leaking " + ", ".join(f"{data.label(c.experiment)}: ×{data.ratio(c):.2f}"
                                                  for c in closer) + " gets further") if closer else ""
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
        return (f"closest reading{where}: {desc(best)}, PPL {best.val_ppl:.1f} at the "
                f"budget of {best.train_tokens:,.0f} training tokens against the paper's {target:g} "
                f"({others}); " + ("it closes the gap" if within else "no protocol reading closes the gap"))
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
        return (f"{'fewest-change reading within' if within else 'closest reading, outside'} ±{100 * tol:.0f} % of "
                f"{target:g} M: {what}: {best['params'] / 1e6:.2f} M "
                f"({100 * (best['params'] / 1e6 - target) / target:+.1f} %); {len(within)} of {len(rows)} architecture "
                f"readings lie within" + ("" if within else "; no reading explains the gap"))
    if metric == "cosine_val":
        target, tol = float(claim["paper_value"]), tolerances["cosine"]["abs"]
        if exp not in data.cosine:
            return f"no reading explains the gap: no cosine readings of {exp}"
        if not data.valid.get(exp, False):
            return f"no valid reading: {exp} leaks future tokens"
        key = min(data.cosine[exp], key=lambda k: abs(data.cosine[exp][k] - target))
        v = data.cosine[exp][key]
        return (f"closest measurement reading{where}: {exp}, cosine {key} (target/vectors/pooling) = {v:.3f} "
                f"(paper {target:g}); " + ("it closes the gap" if abs(v - target) <= tol else
                                           f"no measurement reading closes the gap (tolerance ±{tol:g})"))
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
    return (f"at the readings' budget{where}: {exp} − {other} = {d:+.4g} ({metric}; paper {paper:+g}): "
            + ("the readings agree with the paper's direction" if agree else
               "the readings contradict it too: no reading explains the gap"))


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


# ---- the rule ----------------------------------------------------------------------------------------------------

def load_data(metrics_paths, readings_paths, parameters_path, default: str, reference: str) -> ReadingsData:
    metrics = load_metrics(metrics_paths)
    measures = load_json_records(readings_paths, "readings_run")
    params = load_json_records([parameters_path], "readings_parameters")[0] if parameters_path else None
    return ReadingsData.from_records(metrics, measures, params, default, reference)


def load_folder(root, default: str = "sdgm", reference: str = "transformer_xl") -> ReadingsData:
    """The readings of one results folder (the readings config's results_dir), by the pipeline's layout."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: no readings results folder")
    return load_data(sorted(root.glob("runs/*/*/metrics.json")), sorted(root.glob("readings/*/*.json")),
                     root / "readings" / "parameters.json", default, reference)


def build_readings_report(metrics_paths, readings_paths, parameters_path, tables_dir, figures_dir, *, default: str,
                          reference: str) -> list[Path]:
    data = load_data(metrics_paths, readings_paths, parameters_path, default, reference)
    tables_dir, figures_dir = Path(tables_dir), Path(figures_dir)
    _, claims = _tolerances()
    tol = _tolerances()[0]["parameters"]["rel"]
    paper_m = float(claims["params"]["paper"])
    numeric = readings_table(data)
    written = write_table(readings_display(numeric), tables_dir / "readings",
                          f"Readings on {data.corpus}: validation perplexity at the same training budget, its ratio "
                          f"to {reference}'s, the causality audit (a leaking reading is not a language model)")
    write_text_atomic(written[0], numeric.to_csv(index=False, lineterminator="\n"))  # the CSV keeps the numbers
    cosines = cosine_table(data)
    written += write_table(cosines.round(3), tables_dir / "readings_cosine",
                           "Reconstruction cosine of every SDGM reading: target (current or next token's embedding), "
                           "vectors (raw or standardized per channel), mean per token or pooled")
    write_text_atomic(written[3], cosines.to_csv(index=False, lineterminator="\n"))  # the CSV keeps the numbers
    written += write_table(parameters_table(data, paper_m, tol), tables_dir / "readings_parameters",
                           f"Parameter readings at the paper's sizes: one option away from the default, and every "
                           f"combination within {100 * tol:.0f} % of the paper's {paper_m:g} M "
                           f"({len(data.parameters)} combinations counted)")
    written += plot_curves(data, figures_dir / "readings_curves")
    return written


def main(argv: list[str] | None = None) -> int:
    """Print one explanation line per not-reproduced claim of a claims table, from a readings results folder."""
    ap = argparse.ArgumentParser(prog="python -m sdgm.reporting.readings", description=main.__doc__)
    ap.add_argument("--records", required=True, help="the readings results folder (results_dir of the readings)")
    ap.add_argument("--claims", required=True, help="a claims table, tables/claims.csv")
    ap.add_argument("--default", default="sdgm")
    ap.add_argument("--reference", default="transformer_xl")
    args = ap.parse_args(argv)
    data = load_folder(args.records, args.default, args.reference)
    for cid, line in explain_claims(pd.read_csv(args.claims), data).items():
        print(f"{cid}: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
