"""The readings run's records, checked and gathered (docs/readings.md): the runs' metrics.json, the readings records
of rule reading_measures (sdgm.harness.readings.measure_run) and the parameter readings of rule parameter_readings,
as ReadingsData, which the readings tables (sdgm.reporting.readings) and the explanations (sdgm.reporting.reading_gaps)
read. A reading's label is what its recorded configuration changed from the default run's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..common.atomic import read_json
from .records import LEAKS, ReportError, load_metrics
from .tables import ablation_label

CLAIMS_PATH = Path(__file__).resolve().parent / "claims.yaml"
PASSED = "passed"
NOT_AUDITED = "not audited"
WINDOWS = "windows of L"  # val_ppl: every window starts without context, the same rule for every model
MEMORY = "state carried"  # val_ppl_mem: a stateful model's state carried across windows


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _problem(rec: dict, kind: str) -> str | None:
    """What makes a readings record unusable, or None."""
    if kind == "readings_parameters":
        rows = rec.get("rows")
        if not isinstance(rows, list) or not all(
            isinstance(r, dict) and isinstance(r.get("corpus"), str) and _number(r.get("params")) for r in rows
        ):
            return "'rows' must be a list of {corpus, options..., params}"
        return None
    if not (isinstance(rec.get("run_id"), str) and isinstance(rec.get("experiment"), str)):
        return "'run_id' and 'experiment' must be strings"
    cosine = rec.get("cosine")
    if cosine is not None and not (isinstance(cosine, dict) and all(_number(v) for v in cosine.values())):
        return "'cosine' must be null or a mapping of numbers"
    evs = rec.get("evaluations")
    if not isinstance(evs, dict) or not all(
        isinstance(e, dict) and isinstance(e.get("options"), dict) and _number(e.get("val_ppl")) for e in evs.values()
    ):
        return "'evaluations' must map names to {options, val_ppl, ...}"
    return None


def load_json_records(paths, kind: str) -> list[dict]:
    """Readings records of one kind, checked before use; errors name the file."""
    out = []
    for p in paths:
        rec = read_json(p, "the readings record", ReportError)
        if not isinstance(rec, dict) or rec.get("kind") != kind:
            raise ReportError(f"{p}: not a {kind} record")
        problem = _problem(rec, kind)
        if problem:
            raise ReportError(f"{p}: {problem}")
        out.append(rec)
    return out


def claims_tolerances() -> dict:
    data = yaml.safe_load(CLAIMS_PATH.read_text(encoding="utf-8"))
    return data["tolerances"], {c["id"]: c for c in data["claims"]}


@dataclass
class Entry:
    """One perplexity reading: a run under one protocol."""

    name: str  # experiment, or experiment + protocol
    experiment: str
    model: str
    protocol: str
    changed: str  # what the run changed from the default run (its recorded configuration)
    val_ppl: float
    valid: bool  # the run's causality audit passed (a run without one is never valid)
    audit: str  # PASSED, LEAKS or NOT_AUDITED
    params: int
    train_tokens: float
    steps: int
    best_step: int  # the evaluated weights: the best of the training's validations (the trainer keeps the best)
    wall_s: float


@dataclass
class ReadingsData:
    """Everything the tables and the explanations read, built from records only (from_records)."""

    default: str
    reference: str
    entries: list[Entry] = field(default_factory=list)
    cosine: dict[str, dict] = field(default_factory=dict)  # experiment -> {target/vectors/pooling: value}
    valid: dict[str, bool] = field(default_factory=dict)  # experiment -> audit passed
    changed: dict[str, str] = field(default_factory=dict)  # experiment -> what it changed
    corpus: str = ""
    parameters: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)

    @classmethod
    def from_records(
        cls, metrics: list[dict], measures: list[dict], parameters: dict | None, default: str, reference: str
    ) -> ReadingsData:
        data = cls(default=default, reference=reference, records=metrics, parameters=(parameters or {}).get("rows", []))
        by_exp = {r["experiment"]: r for r in metrics}
        if len(by_exp) < len(metrics):
            twice = sorted(
                {r["experiment"] for r in metrics if sum(q["experiment"] == r["experiment"] for q in metrics) > 1}
            )
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
            common = dict(
                experiment=exp,
                model=rec["model"],
                changed=changed,
                valid=valid,
                audit=verdict,
                params=m["params"],
                train_tokens=tokens,
                steps=m["steps"],
                best_step=m["best_step"],
                wall_s=m["train_wall_s"],
            )
            data.entries.append(Entry(name=exp, protocol=WINDOWS, val_ppl=m["val_ppl"], **common))
            if m.get("val_ppl_mem") is not None:
                data.entries.append(
                    Entry(name=f"{exp} ({MEMORY})", protocol=MEMORY, val_ppl=m["val_ppl_mem"], **common)
                )
            extra = measured.get(rec["run_id"])
            if extra is None:
                raise ReportError(f"{rec['run_id']}: no readings record (rule reading_measures)")
            for ev_name, ev in extra["evaluations"].items():
                opts = ", ".join(f"{k} {v}" for k, v in ev["options"].items())
                data.entries.append(Entry(name=ev_name, protocol=opts, val_ppl=ev["val_ppl"], **common))
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
        return (
            experiment if changed in ("", "default") or changed.startswith("baseline") else f"{experiment} ({changed})"
        )


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
    return load_data(
        sorted(root.glob("runs/*/*/metrics.json")),
        sorted(root.glob("readings/*/*.json")),
        root / "readings" / "parameters.json",
        default,
        reference,
    )
