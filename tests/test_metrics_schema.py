"""metrics.json follows sdgm/common/schemas/metrics.schema.json: the writer checks a record before writing it, the
report refuses a file that breaks it, and either names the field."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import pytest
from helpers import train_tiny

from sdgm.common.schema import (
    METRICS_SCHEMA_PATH,
    METRICS_SCHEMA_VERSION,
    SchemaViolation,
    check_metrics,
    metrics_schema,
)
from sdgm.harness import experiment
from sdgm.reporting import ReportError, load_metrics

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(REPO.glob("results/*/runs/*/*/metrics.json"))
TINY = {"sdgm": {"d_model": 8, "n_atoms": 4}, "lstm": {"d_embed": 8, "d_hidden": 8}}


def tiny_run(tokens, tmp_path, model: str) -> dict:
    train = {"seq_len": 8, "batch_size": 4, "max_steps": 3, "eval_every_steps": 3, "eval_max_windows": 4}
    return train_tiny(tokens, tmp_path, model, "toy", TINY[model], **train)


def test_the_schema_is_a_valid_json_schema_and_fixes_the_version():
    schema = json.loads(METRICS_SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema"] == {**schema["properties"]["schema"], "const": METRICS_SCHEMA_VERSION}
    assert "schema" in schema["required"]


@pytest.mark.parametrize("model", list(TINY))
def test_a_tiny_run_writes_a_record_that_follows_the_schema(toy_tokens, tmp_path, model):
    rec = tiny_run(toy_tokens, tmp_path, model)
    path = tmp_path / "run" / "metrics.json"
    on_disk = json.loads(path.read_text())
    assert on_disk["schema"] == METRICS_SCHEMA_VERSION
    check_metrics(on_disk)
    assert [r["experiment"] for r in load_metrics([path])] == [model]
    assert on_disk == rec


def test_the_writer_refuses_a_record_that_breaks_the_schema(toy_tokens, tmp_path, monkeypatch):
    monkeypatch.setattr(experiment, "peak_rss_bytes", lambda: 1.5e9)  # a float where the schema wants an integer
    with pytest.raises(SchemaViolation, match=r"metrics\.peak_rss_bytes must be a positive integer") as e:
        tiny_run(toy_tokens, tmp_path, "sdgm")
    assert e.value.field == "metrics.peak_rss_bytes"
    assert str(tmp_path / "run" / "metrics.json") in str(e.value)
    assert not (tmp_path / "run" / "metrics.json").exists()  # nothing written


@pytest.mark.skipif(not SHIPPED, reason="no shipped results in this checkout")
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: "/".join(p.parts[-3:-1]))
def test_shipped_results_follow_the_schema(path):
    check_metrics(json.loads(path.read_text()))


def base_record() -> dict:
    """A real record: the shipped SDGM run on PTB when present, else the smallest record the schema accepts."""
    shipped = REPO / "results" / "h100" / "runs" / "ptb" / "sdgm-s0" / "metrics.json"
    if shipped.exists():
        return json.loads(shipped.read_text())
    return {
        "schema": METRICS_SCHEMA_VERSION,
        "experiment": "sdgm",
        "model": "sdgm",
        "corpus": "ptb",
        "seed": 0,
        "provenance": {"git_commit": "abc", "device": "cpu"},
        "metrics": {"val_ppl": 150.0, "params": 10, "causal_audit": {"passed": True, "max_logit_change": 0.0}},
        "na": {},
        "history": {"train": [{"step": 1, "loss": 5.0}], "val": []},
    }


def _drop(*keys):
    def change(rec):
        target = rec
        for k in keys[:-1]:
            target = target[k]
        del target[keys[-1]]

    return change


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def change(rec):
        target = rec
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return change


# (change, the field the message names, what the message says about it)
VIOLATIONS = {
    "missing metrics": (_drop("metrics"), "'metrics'", "missing required key"),
    "missing provenance": (_drop("provenance"), "'provenance'", "missing required key"),
    "missing git commit": (_drop("provenance", "git_commit"), "provenance.git_commit", "missing required key"),
    "missing device": (_drop("provenance", "device"), "provenance.device", "missing required key"),
    "other version": (_set("schema", METRICS_SCHEMA_VERSION + 1), "'schema'", f"must be {METRICS_SCHEMA_VERSION}"),
    "unknown key": (_set("metrcs", {}), "'metrcs'", "unexpected key"),
    "empty experiment": (_set("experiment", ""), "'experiment'", "must be a non-empty string"),
    "seed as text": (_set("seed", "0"), "'seed'", "must be an integer"),
    "seed as float": (_set("seed", 0.0), "'seed'", "must be an integer"),
    "seed as bool": (_set("seed", False), "'seed'", "must be an integer"),
    "metrics as list": (_set("metrics", [1.0]), "'metrics'", "must be an object"),
    "NaN perplexity": (_set("metrics", "val_ppl", float("nan")), "metrics.val_ppl", "must be a finite number >= 1"),
    "infinite perplexity": (_set("metrics", "test_ppl", float("inf")), "metrics.test_ppl", "finite number >= 1"),
    "perplexity below 1": (_set("metrics", "val_ppl", 0.5), "metrics.val_ppl", "must be a finite number >= 1"),
    "parameters as float": (_set("metrics", "params", 1234.5), "metrics.params", "must be a positive integer"),
    "no parameters": (_set("metrics", "params", 0), "metrics.params", "must be a positive integer"),
    "cosine above 1": (_set("metrics", "cosine_val", 1.5), "metrics.cosine_val", "must be a number in [-1, 1]"),
    "negative speed": (
        _set("metrics", "train_tokens_per_s", -1.0),
        "metrics.train_tokens_per_s",
        "must be a finite number > 0",
    ),
    "audit without verdict": (
        _drop("metrics", "causal_audit", "passed"),
        "metrics.causal_audit.passed",
        "missing required key",
    ),
    "audit verdict as text": (
        _set("metrics", "causal_audit", "passed", "yes"),
        "metrics.causal_audit.passed",
        "must be a boolean",
    ),
    "reason not text": (_set("na", "cosine_val", None), "na.cosine_val", "must be a non-empty string"),
    "history point without number": (
        _set("history", "train", 0, "loss", "5.1"),
        "history.train[0].loss",
        "must be a finite number or null",
    ),
}


@pytest.mark.parametrize("case", list(VIOLATIONS))
def test_each_violation_is_refused_naming_the_field(tmp_path, case):
    change, field, says = VIOLATIONS[case]
    rec = copy.deepcopy(base_record())
    check_metrics(rec)  # the unbroken record passes
    change(rec)
    with pytest.raises(SchemaViolation) as e:
        check_metrics(rec)
    assert e.value.field == field and field in str(e.value) and says in str(e.value), str(e.value)

    path = tmp_path / "runs" / "ptb" / "sdgm-s0" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rec))  # NaN and Infinity as Python's json writes them
    with pytest.raises(ReportError) as e:
        load_metrics([path])
    assert str(e.value).startswith(f"{path}: ") and field in str(e.value) and says in str(e.value), str(e.value)


def test_a_null_metric_is_allowed_with_any_type():
    rec = copy.deepcopy(base_record())
    for key in metrics_schema()["properties"]["metrics"]["properties"]:
        rec["metrics"][key] = None
    check_metrics(rec)
