"""The published store: the weight-free record of every finished run, kept across allocations and machines.

Layout (STORE is `results/published` of the repository, or `{results_dir}/published` of a workflow run):

    STORE/<device>/runs/<corpus>/<experiment>-s<seed>/
        manifest.json      run id and hash, device, commit, and the SHA-256 of every other file (written last)
        metrics.json       the run's metrics (rule train)
        gmm.json           the GMM summary (runs with a GMM)
        samples.txt        the generated text (rule sample)
        throughput.json    the throughput record (the run benchmarked for its model and corpus)
        quality.json       the generation-quality record of the run's samples and continuations (rule score_samples;
                           records published before it was kept have none)
        figures/*.png      the interpretability figures (runs with a GMM)
        config.yaml        the workflow config the run came from (results_dir and resources_dir left out)

`<device>` is a slug of the device the run trained on (`metrics.json` provenance), or the label given in the
environment variable SDGM_DEVICE_LABEL. One record per device, corpus, experiment and seed: a record is never
replaced. Publishing or importing a record whose key is taken by a record of another run hash (or of the same hash
with other files) is refused, naming both; the same record again is a no-op.

A record appears in one rename of a complete, verified temporary directory (`<name>.part-<host>-<pid>-XXXX`), so
a kill at any point leaves either the whole record or none of it. A temporary belongs to the process named in it;
the next publisher of that key removes it only once that process has ended (a temporary of a running publisher or
import is left alone). No torch, no pandas: the report environment publishes.

A manifest comes from elsewhere (an archive, another store), so nothing in it is trusted: it is checked
(sdgm.campaign.record: `check_manifest`, `verify_record`, `check_contents`), and the destination is resolved and
must lie inside the store before anything is written (`inside`); no folder or file of the store on the way may be a symbolic link (a link
committed into the store would make a write land anywhere). Imports and campaigns hold the store's lock
(`store_lock`, a file opened without following a link).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import yaml

from ..common.atomic import (
    UnsafePath,
    no_links,
    remove_stale_temporaries,
    sha256_file,
    write_json_atomic,
    write_text_atomic,
)
from ..harness.runlock import file_lock, pid_alive
from .record import (
    FIGURE_DIR,
    MANIFEST,
    RECORD_FILES,
    StoreError,
    check_contents,
    check_manifest,
    read_manifest,
    verify_record,
)

DEVICE_ENV = "SDGM_DEVICE_LABEL"
MANIFEST_VERSION = 1  # the "schema" field of every manifest.json the store writes
LOCK = ".lock"  # the store's lock file (store_lock)
TEMP = ".part-"  # in the names of temporaries: <name>.part-<host>-<pid>-<random>


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


def record_key(corpus: str, experiment: str, seed: int) -> str:
    return f"{corpus}/{experiment}-s{seed}"


def record_dir(store: str | Path, device: str, corpus: str, experiment: str, seed: int) -> Path:
    return Path(store) / device / "runs" / record_key(corpus, experiment, seed)


def inside(store: str | Path, path: str | Path) -> Path:
    """`path`, resolved, if it lies inside the resolved `store` and no component of it inside the store is a symbolic
    link; else StoreError (a link, or a name that leads out)."""
    root, where = Path(store).resolve(), Path(path).resolve()
    if where == root or not where.is_relative_to(root):
        raise StoreError(f"{path}: resolves to {where}, outside the store {root}; refusing to write there")
    try:
        no_links(store, path)
    except UnsafePath as e:
        raise StoreError(str(e)) from None
    return where


def manifest_target(store: str | Path, m: dict) -> Path:
    """Where the record of manifest `m` (checked) goes in `store`, checked to lie inside it."""
    target = record_dir(store, m["device_slug"], m["corpus"], m["experiment"], m["seed"])
    inside(store, target)
    return target


@contextlib.contextmanager
def store_lock(store: str | Path, what: str) -> Iterator[dict]:
    """One writer of the store's records at a time (a campaign, an import): the flock of STORE/.lock. A second one
    stops at once with StoreError naming the holder; the kernel releases the lock when its holder ends."""
    store = Path(store)

    def refuse(by: str) -> StoreError:
        return StoreError(
            f"{store}: the store is in use by {by} (lock {store / LOCK}); {what} must wait for it "
            f"to finish (a campaign or an import holds the store while it runs)"
        )

    store.mkdir(parents=True, exist_ok=True)
    with file_lock(store / LOCK, refuse) as me:
        yield me


def temp_name(name: str) -> str:
    """A temporary's name for `name`, unique to this process: <name>.part-<host>-<pid>-<random>."""
    return f"{name}{TEMP}{slug(socket.gethostname())}-{os.getpid()}-{secrets.token_hex(6)}"


def temp_stale(path: Path) -> bool:
    """A temporary whose process has ended: it ran on this host and its pid no longer runs, or its name has no
    process (an older format). A temporary of another host is left alone."""
    _, sep, tag = path.name.partition(TEMP)
    parts = tag.rsplit("-", 2)
    if not sep or len(parts) != 3 or not parts[1].isdigit():
        return True
    return parts[0] == slug(socket.gethostname()) and not pid_alive(int(parts[1]))


def _stored_config(config: dict) -> str:
    keep = {k: v for k, v in config.items() if k not in ("results_dir", "resources_dir")}
    return yaml.safe_dump(keep, sort_keys=True, allow_unicode=True)


def _describe(manifest: dict, where: Path | str) -> str:
    return (
        f"{manifest.get('run_id')} (hash {manifest.get('run_hash')}, device {manifest.get('device')}, "
        f"commit {str(manifest.get('commit'))[:12]}) in {where}"
    )


def _same(a: dict, b: dict) -> bool:
    return a["run_hash"] == b["run_hash"] and a["files"] == b["files"]


def _check_clash(existing: Path, new: dict, new_where: str) -> bool:
    """True when `existing` holds the same record (a no-op); raises StoreError when it holds another."""
    old = read_manifest(existing)
    if _same(old, new):
        return True
    what = "another run hash" if old["run_hash"] != new["run_hash"] else "the same run hash but other files"
    raise StoreError(
        f"refusing to replace a published record with one of {what}: published "
        f"{_describe(old, existing)}; new {_describe(new, new_where)}. Remove the published record "
        f"to replace it, or publish under another device label (${DEVICE_ENV})."
    )


def _remove_stale(target: Path) -> None:
    remove_stale_temporaries(target, temp_stale)  # of publishers and imports that have ended


def _repair(staging: Path, target: Path) -> None:
    """Put the complete `staging` in place of `target`, the same record with files missing or altered."""
    broken = target.with_name(temp_name(target.name))
    os.rename(target, broken)
    os.rename(staging, target)
    shutil.rmtree(broken, ignore_errors=True)


def _install(staging: Path, target: Path, manifest: dict, where: str) -> str:
    """Verify the `staging` directory and rename it onto `target`. Returns "new" (published), "same" (the same
    record was there) or "repaired" (the same record was there, incomplete or altered, and was replaced)."""
    try:
        verify_record(staging)  # only a complete record is installed
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if target.exists():
        _check_clash(target, manifest, where)
        try:
            verify_record(target)
        except StoreError:
            _repair(staging, target)
            return "repaired"
        shutil.rmtree(staging, ignore_errors=True)
        return "same"
    try:
        os.rename(staging, target)  # atomic; fails if another publisher got there first
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if target.exists():
            _check_clash(target, manifest, where)
            return "same"
        raise
    return "new"


def publish_run(
    store: str | Path,
    metrics: str | Path,
    config: dict,
    run_hash: str,
    *,
    samples=None,
    gmm=None,
    throughput=None,
    quality=None,
    figures=(),
    device_label: str | None = None,
) -> tuple[Path, bool]:
    """Publish one finished run's files. Returns (record directory, True if new / False if already there)."""
    metrics = Path(metrics)
    rec = json.loads(metrics.read_text(encoding="utf-8"))
    for key in ("corpus", "experiment", "seed"):
        if key not in rec:
            raise StoreError(f"{metrics}: no {key!r}")
    prov = rec.get("provenance") or {}
    device = str(prov.get("device") or "unknown")
    dev = device_slug(device, device_label)
    check_manifest(
        {
            "schema": MANIFEST_VERSION,
            "run_id": "",
            "run_hash": run_hash,
            "corpus": rec["corpus"],
            "experiment": rec["experiment"],
            "seed": rec["seed"],
            "device_slug": dev,
            "files": {},
        },
        metrics,
    )
    target = manifest_target(store, {**rec, "device_slug": dev})
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    staging = target.with_name(temp_name(target.name))
    staging.mkdir()
    try:
        sources = {
            "metrics.json": metrics,
            "samples.txt": samples,
            "gmm.json": gmm,
            "throughput.json": throughput,
            "quality.json": quality,
        }
        for name, src in sources.items():
            if src is not None:
                shutil.copyfile(src, staging / name)
        for fig in figures:
            (staging / FIGURE_DIR).mkdir(exist_ok=True)
            shutil.copyfile(fig, staging / FIGURE_DIR / Path(fig).name)
        write_text_atomic(staging / "config.yaml", _stored_config(config))
        files = {p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        manifest = {
            "schema": MANIFEST_VERSION,
            "run_id": f"{rec['corpus']}/{rec['experiment']}-s{rec['seed']}-{run_hash}",
            "run_hash": run_hash,
            "corpus": rec["corpus"],
            "experiment": rec["experiment"],
            "seed": rec["seed"],
            "model": rec.get("model"),
            "device": device,
            "device_slug": dev,
            "commit": prov.get("git_commit"),
            "git_dirty": prov.get("git_dirty"),
            "trained_at": prov.get("timestamp"),
            "files": files,
            "sizes": {n: (staging / n).stat().st_size for n in files},
        }
        write_json_atomic(staging / MANIFEST, manifest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target, _install(staging, target, manifest, str(metrics.parent)) != "same"


def import_record(store: str | Path, rec_dir: str | Path) -> tuple[Path, str]:
    """Copy a verified record (from an unpacked archive or another store) into `store` under its device, after
    checking its manifest, its contents (check_contents) and that its destination lies inside the store. Returns
    (record directory, "new" | "same" | "repaired"); a published record of the same run with files missing or
    altered is repaired."""
    rec_dir = Path(rec_dir)
    m = verify_record(rec_dir)
    check_contents(rec_dir)
    target = manifest_target(store, m)
    if target.exists():
        _check_clash(target, m, str(rec_dir))
        try:
            verify_record(target)
            return target, "same"
        except StoreError:
            pass  # the same record, incomplete: copied again below and put in its place
    target.parent.mkdir(parents=True, exist_ok=True)
    inside(store, target.parent)
    _remove_stale(target)
    staging = target.with_name(temp_name(target.name))
    try:
        shutil.copytree(rec_dir, staging, symlinks=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target, _install(staging, target, m, str(rec_dir))


def record_dirs(store: str | Path) -> list[Path]:
    """Every complete record in the store (a directory with a manifest; temporaries are not records)."""
    store = Path(store)
    if not store.is_dir():
        return []
    return sorted(p.parent for p in store.glob(f"*/runs/*/*/{MANIFEST}") if TEMP not in p.parent.name)


def manifests(store: str | Path) -> list[tuple[Path, dict]]:
    return [(d, read_manifest(d)) for d in record_dirs(store)]


def published_hashes(store: str | Path) -> dict[str, list[str]]:
    """{run hash: [device slugs that published it]}: what a campaign counts as done."""
    out: dict[str, list[str]] = {}
    for _, m in manifests(store):
        out.setdefault(m["run_hash"], []).append(m["device_slug"])
    return out


def published_files(store: str | Path, kind: str, only=None) -> dict[str, list[Path]]:
    """The union of published records of one kind, by device: {device slug: [paths]}, records in store order.
    kind: metrics, gmm, samples, throughput, quality, config, or figures (every PNG of a record's figures/). `only`: a
    collection of record directories to take (default: every record)."""
    if kind != "figures" and kind not in RECORD_FILES:
        raise StoreError(f"unknown record kind {kind!r}; kinds: {sorted([*RECORD_FILES, 'figures'])}")
    out: dict[str, list[Path]] = {}
    for d in record_dirs(store):
        if only is not None and d not in only:
            continue
        m = read_manifest(d)
        names = (
            [n for n in m["files"] if n.startswith(FIGURE_DIR + "/")]
            if kind == "figures"
            else [RECORD_FILES[kind]]
            if RECORD_FILES[kind] in m["files"]
            else []
        )
        if names:
            out.setdefault(m["device_slug"], []).extend(d / n for n in sorted(names))
    return out


def verify_store(store: str | Path) -> list[str]:
    """Problems found (empty: every record matches its manifest, sits where its manifest says and passes
    check_contents)."""
    problems = []
    for d in record_dirs(store):
        try:
            m = verify_record(d)
            expected = record_dir(store, m["device_slug"], m["corpus"], m["experiment"], m["seed"])
            if expected.resolve() != d.resolve():
                problems.append(f"{d}: manifest places it at {expected}")
            check_contents(d)
        except StoreError as e:
            problems.append(str(e))
    return problems
