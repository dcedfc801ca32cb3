"""One validator of a published record: do its files agree with each other and with physics?

The schema (sdgm/common/schemas/metrics.schema.json) says what each value may be on its own; a record can follow it
and still contradict itself, or claim what no device does. `check_record` refuses, in one line naming the record and
the field:

- identity: the corpus, experiment and seed (and the run hash, where a file records it or its `run_id` ends with it)
  are the same in the manifest, `metrics.json` and `throughput.json`, and the model in the three;
- derived values: every perplexity is exp of its NLL (within rounding, REL_TOL); the causality audit's verdict
  follows from its own largest change and tolerance, and that tolerance is not looser than the project's; `gmm.json`
  holds a positive number of components, vectors and dimensions, a known covariance type and a non-empty grid of
  fits, one of them the chosen number of components; `quality.json` (rule score_samples) is a quality record of the
  same corpus, experiment, seed and model, and each of its sets of sequences (and their yardsticks) holds as many
  per-sequence NLLs (finite, >= 0) and scored-token counts (integers >= 0) as its n, with a reference perplexity >= 1
  and distinct-n and seq-rep-4 fractions within [0, 1];
- physical bounds: every `*tokens_per_s` is > 0 and at most MAX_TOKENS_PER_S; every device memory in bytes is > 0
  and at most the device's (the GiB its name states, e.g. "NVIDIA H100 80GB HBM3": 80 GiB; MAX_BYTES otherwise);
  every perplexity is >= 1.

A perplexity above the vocabulary size is not refused: it is worse than a uniform guess, which an untrained or
broken model measures (the gamma = 0 ablation's untrained head measures 33,006 with V = 33,278), a finding to show,
not an impossible value.

Used by the store at import, at render and by `verify` (sdgm.campaign.record.check_contents). No torch here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

CAUSAL_TOLERANCE = 1e-4  # the audit's tolerance (sdgm.models.contract.CAUSAL_TOLERANCE)
REL_TOL = 1e-6  # ppl against exp(nll): both are written from the same float64 NLL
MAX_TOKENS_PER_S = 1e10  # no device processes more tokens per second
MAX_BYTES = 2**50  # no device holds more memory
COVARIANCE_TYPES = {"full", "diag", "tied", "spherical"}
RUN_ID_HASH = re.compile(r"[a-z0-9_]+/[a-z0-9_]+-s\d+-([0-9a-f]+)")
GIB_IN_NAME = re.compile(r"(\d+)\s*GB\b", re.IGNORECASE)


class RecordError(ValueError):
    """A record that contradicts itself or physics; the message names the record and the field."""


def numbers(node: Any, where: str = "") -> Iterator[tuple[str, int | float]]:
    """Every number of a JSON document with its dotted path (booleans are not numbers)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from numbers(v, f"{where}.{k}" if where else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from numbers(v, f"{where}[{i}]")
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        yield where, node


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def device_memory_bytes(device: str | None) -> int:
    """The memory a device's name states ("NVIDIA H100 80GB HBM3": 80 GiB), else MAX_BYTES."""
    found = GIB_IN_NAME.search(device or "")
    return int(found.group(1)) * 2**30 if found else MAX_BYTES


def _is_device_memory(field: str) -> bool:
    """A measured device-memory figure in bytes (a host's resident memory, rss, is not the device's)."""
    return field.endswith("bytes") and "mem" in field and "rss" not in field


def check_bounds(doc: dict, where: str) -> None:
    """Rates and memory of a metrics or throughput record within physics (see the module's doc)."""
    limit = device_memory_bytes((doc.get("provenance") or {}).get("device"))
    for field, v in numbers(doc.get("metrics") or {}, "metrics"):
        if field.endswith("tokens_per_s") and not 0 < v <= MAX_TOKENS_PER_S:
            raise RecordError(f"{where}: {field} is {v:g}; a rate is > 0 and at most {MAX_TOKENS_PER_S:g} tokens/s")
        if _is_device_memory(field) and not 0 < v <= limit:
            raise RecordError(
                f"{where}: {field} is {v:g} bytes; device memory is > 0 and at most the device's {limit:,} bytes"
            )


def check_metrics_consistent(doc: dict, where: str) -> None:
    """A metrics.json (already schema-checked) agrees with itself: perplexities, audit verdict, bounds."""
    m = doc.get("metrics") or {}
    for split in ("val", "test"):
        for suffix in ("", "_mem"):
            ppl, nll = m.get(f"{split}_ppl{suffix}"), m.get(f"{split}_nll{suffix}")
            if _num(ppl) and ppl < 1:
                raise RecordError(f"{where}: metrics.{split}_ppl{suffix} is {ppl:g}; a perplexity is >= 1")
            if _num(ppl) and _num(nll) and not math.isclose(ppl, math.exp(min(nll, 709.0)), rel_tol=REL_TOL):
                raise RecordError(
                    f"{where}: metrics.{split}_ppl{suffix} {ppl:g} is not exp(metrics.{split}_nll"
                    f"{suffix} {nll:g}) = {math.exp(min(nll, 709.0)):g}"
                )
    audit = m.get("causal_audit")
    if isinstance(audit, dict) and _num(audit.get("max_logit_change")) and isinstance(audit.get("passed"), bool):
        tol = audit.get("tolerance", CAUSAL_TOLERANCE)
        if not _num(tol) or not 0 <= tol <= CAUSAL_TOLERANCE:
            raise RecordError(
                f"{where}: metrics.causal_audit.tolerance is {tol!r}, looser than the audit's {CAUSAL_TOLERANCE:g}"
            )
        if audit["passed"] != (audit["max_logit_change"] <= tol):
            raise RecordError(
                f"{where}: metrics.causal_audit.passed is {audit['passed']} but its max_logit_change "
                f"{audit['max_logit_change']:g} is {'within' if not audit['passed'] else 'beyond'} its "
                f"tolerance {tol:g}"
            )
    check_bounds(doc, where)


def check_gmm(doc: Any, where: str) -> None:
    """A gmm.json summary: positive counts, a known covariance type, a non-empty grid holding the chosen fit."""
    if not isinstance(doc, dict):
        raise RecordError(f"{where}: not a GMM summary (a JSON object)")
    for key in ("components", "n_vectors", "dim"):
        v = doc.get(key)
        if type(v) is not int or v < 1:
            raise RecordError(f"{where}: {key} is {v!r}, not an integer >= 1")
    if doc["components"] > doc["n_vectors"]:
        raise RecordError(f"{where}: components {doc['components']} exceed the {doc['n_vectors']} vectors fitted")
    if doc.get("covariance_type") not in COVARIANCE_TYPES:
        raise RecordError(
            f"{where}: covariance_type is {doc.get('covariance_type')!r}, not one of {sorted(COVARIANCE_TYPES)}"
        )
    grid = doc.get("grid")
    if (
        not isinstance(grid, list)
        or not grid
        or not all(isinstance(g, dict) and type(g.get("components")) is int and g["components"] >= 1 for g in grid)
    ):
        raise RecordError(f"{where}: grid is not a non-empty list of fits, each with components >= 1")
    if doc["components"] not in {g["components"] for g in grid}:
        raise RecordError(f"{where}: components {doc['components']} is not among the grid's fits")


FRACTIONS = ("distinct_1", "distinct_2", "distinct_3", "seq_rep_4")  # a quality record's statistics in [0, 1]


def _check_sequences(entry: Any, where: str) -> None:
    """One set of scored sequences of a quality record (sdgm.reporting.sample_scores.score_sequences)."""
    if not isinstance(entry, dict):
        raise RecordError(f"{where}: not a set of scored sequences (a JSON object)")
    n = entry.get("n")
    if type(n) is not int or n < 0:
        raise RecordError(f"{where}.n is {n!r}, not an integer >= 0")
    per = entry.get("per_sequence")
    if not isinstance(per, dict):
        raise RecordError(f"{where}.per_sequence is missing (the per-sequence NLLs the verdict resamples)")
    nll, scored = per.get("nll"), per.get("scored")
    if not isinstance(nll, list) or not isinstance(scored, list) or len(nll) != n or len(scored) != n:
        raise RecordError(f"{where}.per_sequence: nll and scored are not lists of n = {n} numbers")
    if not all(_num(v) and v >= 0 for v in nll):
        raise RecordError(f"{where}.per_sequence.nll holds a value that is not a finite number >= 0")
    if not all(type(v) is int and v >= 0 for v in scored):
        raise RecordError(f"{where}.per_sequence.scored holds a value that is not an integer >= 0")
    stats = entry.get("stats", {})
    if not isinstance(stats, dict):
        raise RecordError(f"{where}.stats is not an object of statistics")
    for name, stat in stats.items():
        v = stat.get("value") if isinstance(stat, dict) else None
        if v is None:
            continue
        if not _num(v):
            raise RecordError(f"{where}.stats.{name}.value is {v!r}, not a finite number")
        if name == "reference_ppl" and v < 1:
            raise RecordError(f"{where}.stats.reference_ppl.value is {v:g}; a perplexity is >= 1")
        if name in FRACTIONS and not 0 <= v <= 1:
            raise RecordError(f"{where}.stats.{name}.value is {v:g}, not a fraction in [0, 1]")


def check_quality(doc: Any, manifest: dict, metrics: dict | None, where: str) -> None:
    """A quality.json: a quality record of the record's corpus, experiment, seed and model, with sane sets."""
    if not isinstance(doc, dict) or doc.get("kind") != "quality":
        raise RecordError(f"{where}: not a quality record (a JSON object of kind 'quality')")
    for key in ("corpus", "experiment", "seed"):
        if doc.get(key) != manifest[key]:
            raise RecordError(f"{where}: {key} is {doc.get(key)!r}, the manifest's is {manifest[key]!r}")
    model = manifest.get("model") if manifest.get("model") is not None else (metrics or {}).get("model")
    if model is not None and doc.get("model") != model:
        raise RecordError(f"{where}: model is {doc.get('model')!r}, the record's is {model!r}")
    sets = doc.get("sets")
    if not isinstance(sets, dict):
        raise RecordError(f"{where}: sets is not an object of scored sets of sequences")
    if doc.get("sampling") is not None and not isinstance(doc["sampling"], dict):
        raise RecordError(f"{where}: sampling is {doc['sampling']!r}, not the settings of the continuations")
    for name, entry in sets.items():
        _check_sequences(entry, f"{where}: sets.{name}")
        yardsticks = entry.get("yardsticks", {})
        if not isinstance(yardsticks, dict):
            raise RecordError(f"{where}: sets.{name}.yardsticks is not an object of scored sets")
        for yard, y in yardsticks.items():
            _check_sequences(y, f"{where}: sets.{name}.yardsticks.{yard}")


def _run_id_names(run_id: Any, corpus: str, experiment: str, seed: int, run_hash: str) -> bool:
    """run_id is '<corpus>/<experiment>-s<seed>-<run hash>' (what the store writes into a manifest)."""
    return run_id == f"{corpus}/{experiment}-s{seed}-{run_hash}"


def _run_id_hash(run_id: Any) -> str | None:
    """The run hash a run_id ends with ('ptb/sdgm-s0-e4a35c74' -> 'e4a35c74'), None if it names none."""
    found = RUN_ID_HASH.fullmatch(run_id) if isinstance(run_id, str) else None
    return found.group(1) if found else None


def check_record(record: str, manifest: dict, docs: dict[str, Any]) -> None:
    """The files of one record (`docs`: file name -> parsed JSON, of metrics.json, throughput.json, gmm.json,
    quality.json where the record holds them) agree with its manifest and each other; RecordError naming `record`
    and the field."""
    who = (manifest["corpus"], manifest["experiment"], manifest["seed"])
    if not _run_id_names(manifest.get("run_id"), *who, manifest["run_hash"]):
        raise RecordError(
            f"{record}: manifest.json run_id {manifest.get('run_id')!r} does not name run "
            f"{who[0]}/{who[1]}-s{who[2]}-{manifest['run_hash']}"
        )
    for name in ("metrics.json", "throughput.json"):
        doc = docs.get(name)
        if doc is None:
            continue
        for key, want in zip(("corpus", "experiment", "seed"), who):
            if doc.get(key) != want:
                raise RecordError(f"{record}: {name} {key} is {doc.get(key)!r}, the manifest's is {want!r}")
        run_hash = doc.get("run_hash")
        if run_hash is not None and run_hash != manifest["run_hash"]:
            raise RecordError(f"{record}: {name} run_hash is {run_hash!r}, the manifest's is {manifest['run_hash']!r}")
        named = _run_id_hash(doc.get("run_id"))
        if named is not None and named != manifest["run_hash"]:
            raise RecordError(
                f"{record}: {name} run_id {doc['run_id']!r} names run hash {named!r}, the manifest's "
                f"is {manifest['run_hash']!r}"
            )
        check_bounds(doc, f"{record}: {name}")
    metrics = docs.get("metrics.json")
    if metrics is not None:
        if manifest.get("model") is not None and metrics.get("model") != manifest["model"]:
            raise RecordError(
                f"{record}: metrics.json model is {metrics.get('model')!r}, the manifest's is {manifest['model']!r}"
            )
        tp = docs.get("throughput.json")
        if tp is not None and tp.get("model") != metrics.get("model"):
            raise RecordError(
                f"{record}: throughput.json model is {tp.get('model')!r}, metrics.json's is {metrics.get('model')!r}"
            )
        check_metrics_consistent(metrics, f"{record}: metrics.json")
    if "gmm.json" in docs:
        check_gmm(docs["gmm.json"], f"{record}: gmm.json")
    if "quality.json" in docs:
        check_quality(docs["quality.json"], manifest, metrics, f"{record}: quality.json")
