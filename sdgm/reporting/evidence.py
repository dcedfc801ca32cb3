"""The evidence of the verdicts: every record a claim may be judged from, indexed by source, corpus and
experiment; a claim's value per record; and whether the records may judge it at all (their commits, staleness and
one protocol: docs/claims.md, "Like with like, noise and staleness")."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..common.atomic import read_json
from .protocol import History, protocol_mismatch, record_protocol
from .records import ReportError, load_metrics
from .statistics import is_number


class Evidence:
    """Every record a verdict may use, indexed by (source, corpus, experiment)."""

    def __init__(
        self, metrics=(), throughput=(), generation=(), scaling=None, gmm=(), quality=(), history: History | None = None
    ):
        self.history = history if history is not None else History()
        self.metrics = load_metrics(list(metrics))
        self.bench = {
            "throughput": [load_bench(p, "throughput") for p in throughput],
            "generation": [load_bench(p, "generation") for p in generation],
            "quality": [load_bench(p, "quality") for p in quality],
        }
        self.scaling = load_bench(scaling, "scaling") if scaling else None
        self.gmm = [load_gmm(p) for p in gmm]

    def records(self, source: str, corpus: str, experiment: str) -> list[dict]:
        recs = self.metrics if source == "metrics" else self.bench[source]
        return sorted(
            (r for r in recs if r["corpus"] == corpus and r["experiment"] == experiment), key=lambda r: r["seed"]
        )

    def has(self, source: str) -> bool:
        """Does this folder hold any record of `source`?"""
        if source == "scaling":
            return self.scaling is not None
        if source == "gmm":
            return bool(self.gmm)
        return bool(self.metrics if source == "metrics" else self.bench[source])

    def leaking(self, experiments, corpus: str | None = None) -> list[str]:
        """The experiments (of `corpus`, or any) with a run that failed the causality audit."""
        out = []
        for r in self.metrics:
            audit = r["metrics"].get("causal_audit")
            if (
                r["experiment"] in experiments
                and (corpus is None or r["corpus"] == corpus)
                and isinstance(audit, dict)
                and audit.get("passed") is False
            ):
                out.append(r["experiment"])
        return sorted(set(out))


def load_bench(path, kind: str) -> dict:
    path = Path(path)
    rec = read_json(path, "benchmark record", ReportError)
    if not isinstance(rec, dict) or rec.get("kind") != kind:
        raise ReportError(f"{path}: not a {kind!r} benchmark record")
    if kind != "scaling":
        for key in ("experiment", "corpus", "seed"):
            if key not in rec:
                raise ReportError(f"{path}: missing {key!r}")
    rec["_path"] = str(path)
    return rec


def load_gmm(path) -> dict:
    """A gmm.json, with corpus and experiment from its run directory (runs/{corpus}/{experiment}-s{seed}[-cfg])."""
    path = Path(path)
    rec = read_json(path, "GMM summary", ReportError)
    m = re.fullmatch(r"(?P<experiment>[a-z0-9_]+)-s(?P<seed>\d+)(?:-[0-9a-f]{8})?", path.parent.name)
    if not isinstance(rec, dict) or m is None or "components" not in rec:
        raise ReportError(f"{path}: not a GMM summary in a run directory (runs/CORPUS/EXPERIMENT-sSEED-CFG)")
    rec.update(
        _path=str(path), corpus=path.parent.parent.name, experiment=m.group("experiment"), seed=int(m.group("seed"))
    )
    return rec


def lookup(rec: dict, claim: dict) -> tuple[float | None, str]:
    """(value in the claim's unit, "") or (None, reason) for one record."""
    scale = float(claim.get("scale", 1.0))
    if claim["source"] == "metrics":
        v = rec["metrics"].get(claim["metric"])
        if is_number(v):
            return float(v) * scale, ""
        return None, str((rec.get("na") or {}).get(claim["metric"]) or "not measured")
    node: Any = rec
    parts = claim["metric"].format(own_path=rec.get("own_path", "")).split(".")
    why = str((rec.get("na") or {}).get(parts[-1]) or f"{claim['metric']} not in the record")
    for part in parts:
        index = re.fullmatch(r"(.+)\[(-?\d+)\]", part)  # name[i]: the i-th element of a list
        part = index.group(1) if index else part
        if isinstance(node, dict) and node.get("status") not in (None, "ok"):
            why = str(node.get("error") or node["status"])
        if isinstance(node, dict) and isinstance(node.get("na"), dict) and part in node["na"]:
            why = str(node["na"][part])
        node = node.get(part) if isinstance(node, dict) else None
        if index:
            i = int(index.group(2))
            node = node[i] if isinstance(node, list) and -len(node) <= i < len(node) else None
    if is_number(node):
        return float(node) * scale, ""
    return None, why


def values_of(ev: Evidence, claim: dict, experiment: str) -> tuple[list[float], list[str], list[str]]:
    """(values over seeds, reasons for the seeds without one, evidence paths)."""
    recs = records_used(ev, claim, experiment)
    values, reasons = [], []
    for r in recs:
        v, why = lookup(r, claim)
        if v is None:
            reasons.append(f"{experiment} seed {r['seed']}: {why}")
        else:
            values.append(v)
    if not recs:
        reasons.append(f"no {claim['source']} record of {experiment} on {claim['corpus']}")
    return values, reasons, [r["_path"] for r in recs]


def records_used(ev: Evidence, claim: dict, experiment: str) -> list[dict]:
    """The records of one experiment a claim reads (the scaling record for a slope claim)."""
    if claim["source"] == "scaling":
        return [ev.scaling] if ev.scaling is not None and experiment == claim["experiment"] else []
    if claim["source"] == "gmm":
        return [g for g in ev.gmm if g["experiment"] == experiment and claim["corpus"] in ("all", g["corpus"])]
    return ev.records(claim["source"], claim["corpus"], experiment)


def commit_of(rec: dict) -> tuple[str | None, str | None, bool]:
    prov = rec.get("provenance") or {}
    return prov.get("git_commit") or None, prov.get("timestamp") or None, bool(prov.get("git_dirty"))


def commits_of(ev: Evidence, claim: dict) -> str:
    """The commits of a claim's evidence, short, "(dirty)" where a record says its tree had uncommitted changes."""
    seen: dict[str, bool] = {}
    for e in experiments_of(claim):
        for r in records_used(ev, claim, e):
            c, _, dirty = commit_of(r)
            if c:
                seen[c[:7]] = seen.get(c[:7], False) or dirty
    return ", ".join(c + (" (dirty)" if d else "") for c, d in sorted(seen.items()))


def check_evidence(ev: Evidence, claim: dict) -> tuple[str, str]:
    """("", note) when the records a claim compares may judge it, else (reason, note): staleness against the
    claim's `components` (a record without commit or date, or of a commit this history lacks, judges nothing) and
    one protocol (`protocol`) across the compared records. The note says where staleness was not checked."""
    comps = claim.get("components") or {}
    note = ""
    problems: dict[str, list[str]] = {}
    if comps:
        for e in experiments_of(claim):
            paths = list(comps.get(e, [])) + list(comps.get("all", []))
            for r in records_used(ev, claim, e) if paths else []:
                commit, stamp, _ = commit_of(r)
                if not commit or not stamp:
                    problems.setdefault("no commit or date in the record: judges nothing", []).append(e)
                elif not ev.history.available:
                    note = "staleness not checked (no git history)"
                else:
                    state, why = ev.history.stale(commit, paths)
                    if state != "fresh":
                        problems.setdefault(why, []).append(e)
    stale: dict[str, dict[str, list[str]]] = {}  # measured at -> changed at -> experiments
    for why in [w for w in problems if w.startswith("stale: ")]:
        measured, changed = re.fullmatch(r"stale: measured at (\w+), changed at (\w+)", why).groups()
        stale.setdefault(measured, {})[changed] = problems.pop(why)
    reasons = [
        f"stale: measured at {m}, changed at "
        + ", ".join(f"{c} ({', '.join(sorted(set(es)))})" for c, es in by.items())
        for m, by in stale.items()
    ]
    reasons += [f"{why} ({', '.join(sorted(set(es)))})" for why, es in problems.items()]
    fields = claim.get("protocol") or []
    if fields:
        protocols = {}
        for e in experiments_of(claim):
            for r in records_used(ev, claim, e):
                key = e if len(records_used(ev, claim, e)) == 1 else f"{e} s{r['seed']}"
                protocols[key] = record_protocol(r, claim["source"], claim.get("at"))
        if len(protocols) > 1 and protocol_mismatch(protocols, fields):
            reasons.append(protocol_mismatch(protocols, fields))
    return "; ".join(reasons), note


def experiments_of(claim: dict) -> list[str]:
    return [e for e in [claim.get("experiment"), *claim.get("than", [])] if e]


def choose_measure(claim: dict, ev: Evidence) -> tuple[dict, str]:
    """The claim with the source and metric of its first measure under which every experiment it compares has a
    value (else the measure with the most), and a note naming it; a claim without `measures` as it is."""
    if "measures" not in claim:
        return claim, ""
    best = None
    for m in claim["measures"]:
        c = {**claim, **m}
        have = sum(bool(values_of(ev, c, e)[0]) for e in experiments_of(c))
        full = have == len(experiments_of(c))
        alike = full and not check_evidence(ev, c)[0]
        if best is None or (have, alike) > best[:2]:
            best = have, alike, c
        if alike:
            break
    c = best[2]
    return c, f"measure: {c['source']} {c['metric']}"
