"""One record of the published store (sdgm.campaign.store): the files it may hold, its manifest, and the checks
that a record from elsewhere passes before it is installed or rendered.

A manifest comes from elsewhere (an archive, another store), so nothing in it is trusted: the fields that make the
record's path (device slug, corpus, experiment, seed) must follow the config's name rules and every file it lists
must be a file a record may hold (`check_manifest`); the files must be those it lists, with their sizes and SHA-256
(`verify_record`); the values must be possible ones (`check_contents`). No torch, no pandas.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import yaml

from ..common.atomic import sha256_file
from ..common.recordcheck import RecordError, check_record, numbers

MANIFEST = "manifest.json"
# what a record may hold: record kind -> its file name inside the record directory
RECORD_FILES = {
    "metrics": "metrics.json",
    "gmm": "gmm.json",
    "samples": "samples.txt",
    "throughput": "throughput.json",
    "quality": "quality.json",
    "config": "config.yaml",
}
FIGURE_DIR = "figures"
# the config's rule for corpus and experiment names (workflow/schemas/config.schema.yaml, propertyNames)
NAME = re.compile(r"[a-z0-9_]+")
SLUG = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")  # what sdgm.campaign.store.slug makes
HEX = re.compile(r"[0-9a-f]+")
SHA256 = re.compile(r"[0-9a-f]{64}")
FIGURE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class StoreError(RuntimeError):
    """A record that cannot be published or imported; the message names the files."""


def record_file_ok(name: str) -> bool:
    """A file a record may hold: one of RECORD_FILES, or figures/<name> (one plain name, no directories)."""
    if name in RECORD_FILES.values():
        return True
    head, _, tail = name.partition("/")
    return head == FIGURE_DIR and FIGURE_NAME.fullmatch(tail) is not None


def check_manifest(m, path: Path | str) -> dict:
    """The manifest's fields that become paths follow the config's name rules, its files are files a record may
    hold, with SHA-256 digests (and sizes, where given); raises StoreError naming the field."""
    if not isinstance(m, dict):
        raise StoreError(f"{path}: not a manifest (a JSON object)")
    for key in ("schema", "run_id", "run_hash", "corpus", "experiment", "seed", "device_slug", "files"):
        if key not in m:
            raise StoreError(f"{path}: manifest has no {key!r}")

    def bad(key, rule):
        return StoreError(f"{path}: manifest's {key} {m[key]!r} is not {rule}; refusing the record")

    for key in ("corpus", "experiment"):
        if not isinstance(m[key], str) or not NAME.fullmatch(m[key]):
            raise bad(key, "a name of the config (lower-case letters, digits and _)")
    if not isinstance(m["device_slug"], str) or not SLUG.fullmatch(m["device_slug"]):
        raise bad("device_slug", "a device slug (lower-case letters and digits joined by -)")
    if type(m["seed"]) is not int or m["seed"] < 0:
        raise bad("seed", "an integer >= 0")
    if not isinstance(m["run_hash"], str) or not HEX.fullmatch(m["run_hash"]):
        raise bad("run_hash", "a hex run hash")
    files = m["files"]
    if not isinstance(files, dict):
        raise bad("files", "an object of file name -> SHA-256")
    for name, digest in files.items():
        if not record_file_ok(name):
            raise StoreError(
                f"{path}: manifest lists {name!r}, not a file a record may hold "
                f"({sorted(RECORD_FILES.values())} or {FIGURE_DIR}/NAME); refusing the record"
            )
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise StoreError(f"{path}: manifest's SHA-256 of {name!r} is {digest!r}, not a SHA-256")
    sizes = m.get("sizes")
    if sizes is not None and (
        not isinstance(sizes, dict)
        or set(sizes) != set(files)
        or not all(type(v) is int and v >= 0 for v in sizes.values())
    ):
        raise bad("sizes", "an object of the listed files -> sizes in bytes")
    return m


def read_manifest(rec_dir: str | Path) -> dict:
    path = Path(rec_dir) / MANIFEST
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: unreadable manifest ({e})") from e
    return check_manifest(m, path)


def verify_record(rec_dir: str | Path) -> dict:
    """Every file the manifest lists is there with its size and SHA-256, and nothing else; the message names each
    missing, extra or altered file. Returns the manifest."""
    rec_dir = Path(rec_dir)
    m = read_manifest(rec_dir)
    present = {p.relative_to(rec_dir).as_posix() for p in rec_dir.rglob("*") if p.is_file() or p.is_symlink()} - {
        MANIFEST
    }
    missing, extra = sorted(set(m["files"]) - present), sorted(present - set(m["files"]))
    if missing or extra:
        raise StoreError(
            f"{rec_dir}: "
            + "; ".join(
                [f"missing {', '.join(missing)} (listed in its manifest)"] * bool(missing)
                + [f"extra {', '.join(extra)} (not in its manifest)"] * bool(extra)
            )
        )
    for name, digest in m["files"].items():
        f = rec_dir / name
        if f.is_symlink() or not f.is_file():
            raise StoreError(f"{f}: not a plain file")
        if m.get("sizes") and f.stat().st_size != m["sizes"][name]:
            raise StoreError(f"{f}: {f.stat().st_size} bytes, not the {m['sizes'][name]} of {rec_dir / MANIFEST}")
        if sha256_file(f) != digest:
            raise StoreError(f"{f}: SHA-256 differs from {rec_dir / MANIFEST}")
    return m


# Beyond the schema (which refuses NaN, a perplexity below 1, a rate <= 0): rates and sizes no device reaches.
MAX_TOKENS_PER_S = 1e10
MAX_BYTES = 2**50


def check_contents(rec_dir: str | Path) -> None:
    """The record's metrics follow sdgm/common/schemas/metrics.schema.json and physical bounds, every number of its
    throughput record is finite and not negative, and its files (the quality record's identity and fields included)
    agree with its manifest, each other and physics (sdgm.common.recordcheck.check_record); raises StoreError naming
    the file and the value."""
    from ..common.schema import SchemaViolation, check_metrics

    rec_dir = Path(rec_dir)
    m = read_manifest(rec_dir)
    docs = {}
    for name in ("metrics.json", "throughput.json", "gmm.json", "quality.json"):
        if name not in m["files"]:
            continue
        path = rec_dir / name
        try:
            doc = docs[name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StoreError(f"{path}: unreadable ({e})") from e
        for field, v in numbers(doc):
            if not math.isfinite(v):
                raise StoreError(f"{path}: {field} is {v}, not a finite number")
        if name == "throughput.json":
            for field, v in numbers(doc):
                if v < 0:
                    raise StoreError(f"{path}: {field} is {v}; a count, time or rate is never negative")
        if name != "metrics.json":
            continue
        try:
            check_metrics(doc)
        except SchemaViolation as e:
            raise StoreError(f"{path}: {e}") from e
        if (doc["corpus"], doc["experiment"], doc["seed"]) != (m["corpus"], m["experiment"], m["seed"]):
            raise StoreError(f"{path}: corpus, experiment and seed differ from {rec_dir / MANIFEST}")
        metrics = doc["metrics"]
        for field, v in numbers(metrics):
            if field.endswith("tokens_per_s") and v > MAX_TOKENS_PER_S:
                raise StoreError(f"{path}: metrics.{field} {v:g} is beyond any device ({MAX_TOKENS_PER_S:g})")
            if field.endswith("bytes") and v > MAX_BYTES:
                raise StoreError(f"{path}: metrics.{field} {v:g} is beyond any memory ({MAX_BYTES} bytes)")
    _check_texts(rec_dir, m)
    try:  # the files agree with the manifest and each other, and with physics (sdgm.common.recordcheck)
        check_record(str(rec_dir), m, docs)
    except RecordError as e:
        raise StoreError(str(e)) from None


def _check_texts(rec_dir: Path, m: dict) -> None:
    """The record's config.yaml is a workflow config (a mapping yaml.safe_load reads) and its samples.txt a sample
    file: a record that would stop every later render is refused here, naming the file."""
    from ..reporting.pages import parse_samples

    if RECORD_FILES["config"] in m["files"]:
        path = rec_dir / RECORD_FILES["config"]
        try:
            cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise StoreError(
                f"{path}: not a workflow config ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            ) from None
        if not isinstance(cfg, dict):
            raise StoreError(f"{path}: not a workflow config (a {type(cfg).__name__}, not a mapping)")
    if RECORD_FILES["samples"] in m["files"]:
        try:
            parse_samples(rec_dir / RECORD_FILES["samples"])
        except (OSError, ValueError) as e:
            raise StoreError(str(e).splitlines()[0]) from None
