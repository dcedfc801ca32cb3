"""Loading the inputs of the report: the per-run metrics.json files (checked against
sdgm/common/schemas/metrics.schema.json) and the paper's numbers.

Constants shared by every table: the causal labels and the columns of each table (the "n/a" reasons are in
sdgm.common.missing).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from ..common.recordcheck import RecordError, check_metrics_consistent
from ..common.schema import SchemaViolation, check_metrics

PAPER_PATH = Path(__file__).resolve().parent / "paper_numbers.yaml"

CAUSAL_YES = "yes"
LEAKS = "LEAKS future tokens"
NON_CAUSAL_SUFFIX = " (non-causal)"

# (display column, metric key in metrics.json, scale applied to the raw value,
#  decimals, paper key or None)
METRIC_COLUMNS: tuple[tuple[str, str, float, int, str | None], ...] = (
    ("val_ppl", "val_ppl", 1.0, 1, "val_ppl"),
    ("test_ppl", "test_ppl", 1.0, 1, None),
    ("val_ppl_mem", "val_ppl_mem", 1.0, 1, None),
    ("test_ppl_mem", "test_ppl_mem", 1.0, 1, None),
    ("params_m", "params", 1e-6, 2, "params_m"),
    ("cosine", "cosine_val", 1.0, 3, "cosine"),
    ("train_tokens_per_s", "train_tokens_per_s", 1.0, 0, "train_tokens_per_s"),
    ("peak_mem_gb", "peak_mem_bytes", 1e-9, 2, "peak_mem_gb"),
)

# Every metric the paper reports is followed by the paper's value and ours minus the paper's ("_diff").
DISPLAY_COLUMNS = [
    "experiment",
    "model",
    "corpus",
    "seeds",
    "causal",
    "val_ppl",
    "val_ppl_paper",
    "val_ppl_diff",
    "test_ppl",
    "val_ppl_mem",
    "test_ppl_mem",
    "params_m",
    "params_m_paper",
    "params_m_diff",
    "cosine",
    "cosine_paper",
    "cosine_diff",
    "train_tokens_per_s",
    "train_tokens_per_s_paper",
    "train_tokens_per_s_diff",
    "peak_mem_gb",
    "peak_mem_gb_paper",
    "peak_mem_gb_diff",
]

# The ablation table: each ablation beside the main run it ablates (same corpus), ours and the paper's.
ABLATION_COLUMNS = [
    "experiment",
    "corpus",
    "ablation",
    "compared_with",
    "seeds",
    "causal",
    "val_ppl",
    "val_ppl_paper",
    "val_ppl_diff",
    "val_ppl_vs_main",
    "val_ppl_vs_main_paper",
    "test_ppl",
    "test_ppl_vs_main",
]
# The reconstruction table: cos(X_hat_t, X_t) of every run that reconstructs its embeddings.
RECONSTRUCTION_COLUMNS = [
    "experiment",
    "corpus",
    "ablation",
    "seeds",
    "causal",
    "cosine_val",
    "cosine_paper",
    "cosine_diff",
    "cosine_test",
]
MAIN_RUN = "none (main run)"


class ReportError(RuntimeError):
    """A metrics or paper file is unusable, or the runs are inconsistent."""


# ---- loading ----------------------------------------------------------------------------------------------------


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _validate_record(rec: Any, path: Path) -> None:
    """The record follows sdgm/common/schemas/metrics.schema.json (types, required keys, possible values) and agrees
    with itself (sdgm.common.recordcheck.check_metrics_consistent)."""
    try:
        check_metrics(rec)
    except SchemaViolation as e:
        raise ReportError(f"{path}: {e}") from e
    try:  # and agrees with itself: perplexity and NLL, the audit's verdict and its numbers, physical bounds
        check_metrics_consistent(rec, str(path))
    except RecordError as e:
        raise ReportError(str(e)) from None


def experiment_order(records: Iterable[dict]) -> dict[str, int]:
    """{experiment: rank} in the order the experiments first appear among the records. The workflow passes the
    metrics files in the config's order (sdgm.harness.config.runs), so rows follow the order experiments appear in the
    config."""
    order: dict[str, int] = {}
    for r in records:
        order.setdefault(r["experiment"], len(order))
    return order


def check_run_files(metrics_path: Path, rec: dict) -> None:
    """The files of one run directory belong together: run.json (if there) has the metrics' fingerprint, model
    and vocabulary digest, vocab.json that digest, and model.pt the weights digest run.json records."""
    from ..common.atomic import sha256_file

    run = metrics_path.parent
    if not (run / "run.json").is_file():
        return  # a metrics file on its own (no run directory around it): nothing to compare
    try:
        meta = json.loads((run / "run.json").read_text(encoding="utf-8"))
        vocab = json.loads((run / "vocab.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ReportError(f"{metrics_path}: its run directory is unreadable ({e})") from e
    problems = [
        f"run.json {key} {meta.get(key)!r} != metrics.json {rec.get(key)!r}"
        for key in ("model", "fingerprint", "seed")
        if key in meta and meta[key] != rec.get(key)
    ]
    want = rec.get("data", {}).get("vocab_sha256")
    got = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()
    if want and got != want:
        problems.append("vocab.json is not the vocabulary of metrics.json (digest differs)")
    if want and meta.get("vocab_sha256", want) != want:
        problems.append("run.json's vocabulary digest differs from metrics.json's")
    if "weights_sha256" in meta:
        try:
            if sha256_file(run / "model.pt") != meta["weights_sha256"]:
                problems.append("model.pt is not the weights run.json records (digest differs)")
        except OSError as e:
            problems.append(f"model.pt is unreadable ({e})")
    if problems:
        raise ReportError(
            f"{metrics_path}: the files of run {run} do not belong together: "
            + "; ".join(problems)
            + "; train the run again"
        )


def load_metrics(paths: Iterable[str | Path]) -> list[dict]:
    """Read and validate metrics.json files; each record gets ``"_path"``."""
    records = []
    for p in paths:
        path = Path(p)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ReportError(f"{path}: cannot read metrics file ({e})") from e
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as e:
            raise ReportError(f"{path}: not valid JSON ({e})") from e
        _validate_record(rec, path)
        check_run_files(path, rec)
        rec["_path"] = str(path)
        records.append(rec)
    return records


def read_yaml_mapping(path: Path, key: str, what: str) -> dict:
    """A YAML file holding a mapping with a list under `key`; errors name the file and what it should hold."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ReportError(f"{path}: cannot read {what} ({e})") from e
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ReportError(f"{path}: expected a mapping with a '{key}' list")
    return data


def load_paper(path: str | Path | None = None) -> list[dict]:
    """Rows of published numbers (default: ``paper_numbers.yaml`` next to this module)."""
    path = Path(path) if path is not None else PAPER_PATH
    data = read_yaml_mapping(path, "rows", "paper numbers")
    seen = set()
    rows = []
    for i, row in enumerate(data["rows"]):
        if not isinstance(row, dict) or "experiment" not in row or "corpus" not in row:
            raise ReportError(f"{path}: row {i} needs 'experiment' and 'corpus'")
        key = (row["experiment"], row["corpus"])
        if key in seen:
            raise ReportError(f"{path}: duplicate row for {key[0]}/{key[1]}")
        seen.add(key)
        for k, v in row.items():
            if k not in ("experiment", "corpus") and not _is_number(v):
                raise ReportError(f"{path}: row {i} value {k}={v!r} is not a number")
        rows.append(dict(row))
    return rows
