"""The published store: the weight-free record of every finished run, kept across allocations and machines.

Layout (STORE is `results/published` of the repository, or `{results_dir}/published` of a workflow run):

    STORE/<device>/runs/<corpus>/<experiment>-s<seed>/
        manifest.json      run id and hash, device, commit, and the SHA-256 of every other file (written last)
        metrics.json       the run's metrics (rule train)
        gmm.json           the GMM summary (runs with a GMM)
        samples.txt        the generated text (rule sample)
        throughput.json    the throughput record (the run benchmarked for its model and corpus)
        figures/*.png      the interpretability figures (runs with a GMM)
        config.yaml        the workflow config the run came from (results_dir and resources_dir left out)

`<device>` is a slug of the device the run trained on (`metrics.json` provenance), or the label given in the
environment variable SDGM_DEVICE_LABEL. One record per device, corpus, experiment and seed: a record is never
replaced. Publishing or importing a record whose key is taken by a record of another run hash (or of the same hash
with other files) is refused, naming both; the same record again is a no-op.

A record appears in one rename of a complete temporary directory (`<name>.part-XXXX`, removed by the next
publisher of that key), so a kill at any point leaves either the whole record or none of it. No torch, no pandas:
the report environment publishes.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from pathlib import Path

import yaml

from .atomic import write_json_atomic, write_text_atomic

DEVICE_ENV = "SDGM_DEVICE_LABEL"
MANIFEST = "manifest.json"
SCHEMA = 1
# what a record may hold, by kind: the file names inside the record directory
KINDS = {"metrics": "metrics.json", "gmm": "gmm.json", "samples": "samples.txt", "throughput": "throughput.json",
         "config": "config.yaml"}
FIGURE_DIR = "figures"


class StoreError(RuntimeError):
    """A record that cannot be published or imported; the message names the files."""


def slug(text: str) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not s:
        raise StoreError(f"device label {text!r} has no letters or digits")
    return s


def device_slug(device: str, label: str | None = None) -> str:
    """The store's folder for a device: `label` (or $SDGM_DEVICE_LABEL) when given, else the recorded device name
    without its parenthesized details ("NVIDIA H100 80GB HBM3" -> nvidia-h100-80gb-hbm3, a CPU -> cpu)."""
    label = label if label is not None else os.environ.get(DEVICE_ENV) or None
    if label:
        return slug(label)
    return slug(device.split(" (")[0])


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def record_key(corpus: str, experiment: str, seed: int) -> str:
    return f"{corpus}/{experiment}-s{seed}"


def record_dir(store: str | Path, device: str, corpus: str, experiment: str, seed: int) -> Path:
    return Path(store) / device / "runs" / record_key(corpus, experiment, seed)


def _stored_config(config: dict) -> str:
    keep = {k: v for k, v in config.items() if k not in ("results_dir", "resources_dir")}
    return yaml.safe_dump(keep, sort_keys=True, allow_unicode=True)


def _describe(manifest: dict, where: Path | str) -> str:
    return (f"{manifest.get('run_id')} (hash {manifest.get('run_hash')}, device {manifest.get('device')}, "
            f"commit {str(manifest.get('commit'))[:12]}) in {where}")


def read_manifest(rec_dir: str | Path) -> dict:
    path = Path(rec_dir) / MANIFEST
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise StoreError(f"{path}: unreadable manifest ({e})") from e
    for key in ("schema", "run_id", "run_hash", "corpus", "experiment", "seed", "device_slug", "files"):
        if key not in m:
            raise StoreError(f"{path}: manifest has no {key!r}")
    return m


def verify_record(rec_dir: str | Path) -> dict:
    """Every file the manifest lists is there with its SHA-256, and nothing else; returns the manifest."""
    rec_dir = Path(rec_dir)
    m = read_manifest(rec_dir)
    present = {p.relative_to(rec_dir).as_posix() for p in rec_dir.rglob("*") if p.is_file()} - {MANIFEST}
    if present != set(m["files"]):
        raise StoreError(f"{rec_dir}: files {sorted(present)} differ from the manifest's {sorted(m['files'])}")
    for name, digest in m["files"].items():
        if sha256_file(rec_dir / name) != digest:
            raise StoreError(f"{rec_dir / name}: SHA-256 differs from {rec_dir / MANIFEST}")
    return m


def _same(a: dict, b: dict) -> bool:
    return a["run_hash"] == b["run_hash"] and a["files"] == b["files"]


def _check_clash(existing: Path, new: dict, new_where: str) -> bool:
    """True when `existing` holds the same record (a no-op); raises StoreError when it holds another."""
    old = read_manifest(existing)
    if _same(old, new):
        return True
    what = "another run hash" if old["run_hash"] != new["run_hash"] else "the same run hash but other files"
    raise StoreError(f"refusing to replace a published record with one of {what}: published "
                     f"{_describe(old, existing)}; new {_describe(new, new_where)}. Remove the published record "
                     f"to replace it, or publish under another device label (${DEVICE_ENV}).")


def _remove_stale(target: Path) -> None:
    if target.parent.is_dir():
        for stale in target.parent.glob(f"{target.name}.part-*"):
            shutil.rmtree(stale, ignore_errors=True)


def _install(staging: Path, target: Path, manifest: dict, where: str) -> bool:
    """Rename the complete `staging` directory onto `target`. True: published; False: the same record was there."""
    if target.exists():
        shutil.rmtree(staging, ignore_errors=True)
        _check_clash(target, manifest, where)
        return False
    try:
        os.rename(staging, target)  # atomic; fails if another publisher got there first
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if target.exists():
            _check_clash(target, manifest, where)
            return False
        raise
    return True


def publish_run(store: str | Path, metrics: str | Path, config: dict, run_hash: str, *, samples=None, gmm=None,
                throughput=None, figures=(), device_label: str | None = None) -> tuple[Path, bool]:
    """Publish one finished run's files. Returns (record directory, True if new / False if already there)."""
    metrics = Path(metrics)
    rec = json.loads(metrics.read_text(encoding="utf-8"))
    for key in ("corpus", "experiment", "seed"):
        if key not in rec:
            raise StoreError(f"{metrics}: no {key!r}")
    prov = rec.get("provenance") or {}
    device = str(prov.get("device") or "unknown")
    dev = device_slug(device, device_label)
    target = record_dir(store, dev, rec["corpus"], rec["experiment"], rec["seed"])
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    staging = target.with_name(f"{target.name}.part-{secrets.token_hex(6)}")
    staging.mkdir()
    try:
        sources = {"metrics.json": metrics, "samples.txt": samples, "gmm.json": gmm, "throughput.json": throughput}
        for name, src in sources.items():
            if src is not None:
                shutil.copyfile(src, staging / name)
        for fig in figures:
            (staging / FIGURE_DIR).mkdir(exist_ok=True)
            shutil.copyfile(fig, staging / FIGURE_DIR / Path(fig).name)
        write_text_atomic(staging / "config.yaml", _stored_config(config))
        files = {p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        manifest = {"schema": SCHEMA, "run_id": f"{rec['corpus']}/{rec['experiment']}-s{rec['seed']}-{run_hash}",
                    "run_hash": run_hash, "corpus": rec["corpus"], "experiment": rec["experiment"],
                    "seed": rec["seed"], "model": rec.get("model"), "device": device, "device_slug": dev,
                    "commit": prov.get("git_commit"), "git_dirty": prov.get("git_dirty"),
                    "trained_at": prov.get("timestamp"), "files": files}
        write_json_atomic(staging / MANIFEST, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target, _install(staging, target, manifest, str(metrics.parent))


def import_record(store: str | Path, rec_dir: str | Path) -> tuple[Path, bool]:
    """Copy a verified record (from an unpacked archive or another store) into `store` under its device."""
    rec_dir = Path(rec_dir)
    m = verify_record(rec_dir)
    target = record_dir(store, m["device_slug"], m["corpus"], m["experiment"], m["seed"])
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    if target.exists():
        _check_clash(target, m, str(rec_dir))
        return target, False
    staging = target.with_name(f"{target.name}.part-{secrets.token_hex(6)}")
    try:
        shutil.copytree(rec_dir, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target, _install(staging, target, m, str(rec_dir))


def record_dirs(store: str | Path) -> list[Path]:
    """Every complete record in the store (a directory with a manifest; temporaries are not records)."""
    store = Path(store)
    if not store.is_dir():
        return []
    return sorted(p.parent for p in store.glob(f"*/runs/*/*/{MANIFEST}") if ".part-" not in p.parent.name)


def manifests(store: str | Path) -> list[tuple[Path, dict]]:
    return [(d, read_manifest(d)) for d in record_dirs(store)]


def published_hashes(store: str | Path) -> dict[str, list[str]]:
    """{run hash: [device slugs that published it]}: what a campaign counts as done."""
    out: dict[str, list[str]] = {}
    for _, m in manifests(store):
        out.setdefault(m["run_hash"], []).append(m["device_slug"])
    return out


def published_files(store: str | Path, kind: str) -> dict[str, list[Path]]:
    """The union of published records of one kind, by device: {device slug: [paths]}, records in store order.
    kind: metrics, gmm, samples, throughput, config, or figures (every PNG of a record's figures/)."""
    if kind != "figures" and kind not in KINDS:
        raise StoreError(f"unknown record kind {kind!r}; kinds: {sorted([*KINDS, 'figures'])}")
    out: dict[str, list[Path]] = {}
    for d, m in manifests(store):
        names = [n for n in m["files"] if n.startswith(FIGURE_DIR + "/")] if kind == "figures" else \
            [KINDS[kind]] if KINDS[kind] in m["files"] else []
        if names:
            out.setdefault(m["device_slug"], []).extend(d / n for n in sorted(names))
    return out


def verify_store(store: str | Path) -> list[str]:
    """Problems found (empty: every record matches its manifest and sits where its manifest says)."""
    problems = []
    for d in record_dirs(store):
        try:
            m = verify_record(d)
            expected = record_dir(store, m["device_slug"], m["corpus"], m["experiment"], m["seed"])
            if expected.resolve() != d.resolve():
                problems.append(f"{d}: manifest places it at {expected}")
        except StoreError as e:
            problems.append(str(e))
    return problems
