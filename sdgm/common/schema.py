"""JSON Schemas, checked strictly: the schema of metrics.json (sdgm/common/schemas/metrics.schema.json), which its
writer (sdgm.harness.experiment) and its reader (sdgm.reporting) both check, the validator sdgm.harness.config uses
for the workflow config and sdgm.reporting.claim_rules for the claims file (claims.schema.json).

Strict means more than a plain JSON-schema validator: an "integer" refuses 64.0 and True, and a "number" must be
finite (Python's json reads and writes NaN and Infinity, JSON Schema has no word for them). A violation is reported
as one message naming the field: `metrics.val_ppl must be a finite number >= 1 (...), got -3.0`, the text after
"must be" being the field's "description" in the schema.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

METRICS_SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "metrics.schema.json"
CLAIMS_SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "claims.schema.json"  # sdgm.reporting's claims file


class SchemaViolation(ValueError):
    """A document does not follow its schema; `field` is the dotted path of the offending value."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def strict_validator(schema: dict):
    """A Draft 2020-12 validator for `schema` whose "integer" and "number" are strict (see the module's doc)."""
    import jsonschema

    def is_int(_, v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(_, v):
        return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and math.isfinite(v))

    base = jsonschema.Draft202012Validator
    base.check_schema(schema)
    checker = base.TYPE_CHECKER.redefine_many({"integer": is_int, "number": is_number})
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


@functools.cache
def metrics_schema() -> dict:
    return json.loads(METRICS_SCHEMA_PATH.read_text(encoding="utf-8"))


# The version of metrics.json this code writes and reads: the record's "schema", fixed by the schema itself.
METRICS_SCHEMA_VERSION: int = metrics_schema()["properties"]["schema"]["const"]


@functools.cache
def _metrics_validator():
    return strict_validator(metrics_schema())


def field_name(parts) -> str:
    """["metrics", "val_ppl"] -> "metrics.val_ppl"; ["history", "train", 3, "nll"] -> "history.train[3].nll";
    a top-level key alone is quoted ('seed')."""
    parts = list(parts)
    if len(parts) == 1 and isinstance(parts[0], str):
        return f"'{parts[0]}'"
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 120 else text[:117] + "..."


def violation(error) -> SchemaViolation:
    """A jsonschema ValidationError as a SchemaViolation naming its field."""
    path = list(error.absolute_path)
    if error.validator == "required":
        missing = next(k for k in error.validator_value if k not in error.instance)
        field = field_name(path + [missing])
        return SchemaViolation(field, f"missing required key {field}")
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in known)
        field = field_name(path + extra[:1])
        return SchemaViolation(field, f"unexpected key {field} (not in the schema)")
    field = field_name(path)
    what = error.schema.get("description") if isinstance(error.schema, dict) else None
    if what is None:
        return SchemaViolation(field, f"{field}: {error.message}")
    return SchemaViolation(field, f"{field} must be {what}, got {_short(error.instance)}")


def check(validator, doc: Any) -> None:
    """Raise SchemaViolation for the first violation (ordered by field, so a missing key comes before the values)."""
    errors = sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        raise violation(errors[0])


def check_metrics(record: Any) -> None:
    """Raise SchemaViolation unless `record` (a parsed metrics.json) follows metrics.schema.json."""
    check(_metrics_validator(), record)
