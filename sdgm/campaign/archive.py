"""The one archive format of the campaign and the GPU window, written and read here.

An archive is a .tar.gz of at most ARCHIVE_LIMIT bytes:

    ARCHIVE.json                          {"schema": 1, "records": [record, run id, run hash, device], "window": root?}
    published/<device>/runs/<corpus>/<experiment>-s<seed>/...   store records (sdgm.campaign.store)
    window/<device>/<stamp>/...           a GPU window's folder (sdgm.campaign.window): window.json, logs, records/

`pack` writes a campaign's records, `pack_window` a window's folder with as many of its campaign's records as fit.
`import_archives` merges archives into the store: an archive comes from elsewhere, so its headers, member names and
sizes are checked before anything is unpacked, and each record and window folder before it is installed.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path

from ..common.atomic import StorageError, atomic_path, remove_stale_temporaries, storage_error
from .costs import CampaignError
from .record import MANIFEST, SLUG, StoreError, check_contents, check_manifest, read_manifest, verify_record
from .render import WINDOW_SUMMARY, window_section
from .store import import_record, inside, store_lock, temp_name, temp_stale

ARCHIVE_LIMIT = 16 * 1024 * 1024  # bytes of one archive, a campaign's or a window's
# what an import unpacks at most: the records of one archive, uncompressed (text compresses about 4-10 times; the
# figures are PNGs, already compressed)
UNPACK_LIMIT = 16 * ARCHIVE_LIMIT
MANIFEST_LIMIT = 1024 * 1024  # one manifest's bytes at most
MEMBER_LIMIT = 5000  # members of one archive at most (a record holds about 20 files, a GPU window's folder ~100)
HEADER_LIMIT = 64 * 1024  # bytes of one extended header (pax, GNU long name) at most; a real one holds a name or two
LOG_TAIL = 256 * 1024  # bytes of each log of a window kept in its archive (the end, where the error is)
ARCHIVE_INDEX = "ARCHIVE.json"
IMPORT_TEMP = ".import"  # STORE/.import.part-<host>-<pid>-<random>: an archive being unpacked
WINDOW_STAMP = re.compile(r"[0-9]{8}T[0-9]{6}Z")


# ---- writing ---------------------------------------------------------------------------------------------------------
def add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 0
    tar.addfile(info, io.BytesIO(data))


def _add_window(tar: tarfile.TarFile, folder: Path, root: str) -> None:
    """A window's folder under `root`: its logs cut to their last LOG_TAIL bytes, without temporaries and without
    the campaign's own archive (its records come in as published/)."""
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and ".part-" not in p.name):
        name = f"{root}/{f.relative_to(folder).as_posix()}"
        try:
            if f.suffix in (".txt", ".log") and f.stat().st_size > LOG_TAIL:
                with open(f, "rb") as fh:
                    fh.seek(-LOG_TAIL, os.SEEK_END)
                    add_bytes(tar, name, b"[... cut to its last 256 KiB ...]\n" + fh.read())
            elif f.suffix != ".gz":
                tar.add(f, arcname=name, recursive=False)
        except FileNotFoundError:  # a running part's temporary, gone since the listing
            continue


def write_archive(path: Path, store: Path | None, recs: list[Path], window: tuple[Path, str] | None = None) -> int:
    """The archive at `path` (atomically): its index, the window's folder (folder, root in the archive) if any, then
    every file of the records `recs` of `store`. Returns its size in bytes."""
    index = [
        {
            "record": d.relative_to(store).as_posix(),
            **{k: read_manifest(d)[k] for k in ("run_id", "run_hash", "device_slug")},
        }
        for d in recs
    ]
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            add_bytes(
                tar,
                ARCHIVE_INDEX,
                json.dumps(
                    {"schema": 1, "records": index, **({"window": window[1]} if window else {})}, indent=2
                ).encode(),
            )
            if window:
                _add_window(tar, *window)
            for d in recs:
                for f in sorted(p for p in d.rglob("*") if p.is_file()):
                    tar.add(f, arcname=f"published/{f.relative_to(store).as_posix()}", recursive=False)
    return path.stat().st_size


def fit(write: Callable[[list[Path]], int], recs: list[Path], limit: int, fewest: int) -> tuple[list[Path], int]:
    """Write with the records `recs` in order, leaving out the last until it fits `limit` bytes (far over it: in
    proportion), but never fewer than `fewest`. (records taken, bytes): bytes over `limit` only with `fewest`."""
    take = list(recs)
    while True:
        size = write(take)
        if size <= limit or len(take) <= fewest:
            return take, size
        take = take[: max(fewest, int(len(take) * limit / size))] if size > 2 * limit else take[:-1]


def pack(store: str | Path, recs, path: str | Path, limit: int = ARCHIVE_LIMIT) -> dict:
    """Pack records (directories of the store) into one .tar.gz of at most `limit` bytes. Records are taken in the
    given order; those that would push it over the limit are left out (and named)."""
    store, path = Path(store).resolve(), Path(path)
    recs = [Path(d).resolve() for d in recs]
    for d in recs:
        if not (d / MANIFEST).is_file() or store not in d.parents:
            raise CampaignError(f"{d}: not a record of the store {store}")
    take, size = fit(lambda t: write_archive(path, store, t), recs, limit, 1)
    if size > limit:
        path.unlink(missing_ok=True)
        raise CampaignError(
            f"{take[0] if take else store}: one record alone packs to {size:,} bytes, over the {limit:,}-byte limit"
        )
    return {"records": take, "left_out": recs[len(take) :], "bytes": size}


def pack_window(
    path: Path, folder: Path, root: str, store: Path, recs: list[Path], limit: int = ARCHIVE_LIMIT
) -> tuple[list[Path], int]:
    """A window's archive: its folder under `root`, and as many of its campaign's records (in priority order) as fit
    `limit`. (records taken, bytes); over `limit` without any record is the caller's to refuse."""
    return fit(lambda t: write_archive(path, store, t, (folder, root)), recs, limit, 0)


# ---- reading -------------------------------------------------------------------------------------------------------
class Refused(Exception):
    """One archive that cannot be imported; the message names it (the other archives go on)."""


def _safe_members(tar: tarfile.TarFile, archive: Path) -> list[tarfile.TarInfo]:
    members = tar.getmembers()
    for m in members:
        parts = Path(m.name).parts
        if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
            raise CampaignError(f"{archive}: refusing member {m.name!r} (absolute, '..', or not a plain file)")
        if m.name != ARCHIVE_INDEX and parts[0] not in ("published", "window"):
            raise CampaignError(f"{archive}: member {m.name!r} is outside published/ and window/")
    return members


def _check_sizes(tar: tarfile.TarFile, members: list[tarfile.TarInfo], archive: Path, limit: int) -> None:
    """Before anything is unpacked: the members' sizes (from the archive's headers) add up to at most `limit`, each
    manifest is small, and each record file has the size its record's manifest lists."""
    total = sum(m.size for m in members if m.isfile())
    if total > limit:
        raise Refused(
            f"{archive}: would unpack to {total:,} bytes, over the {limit:,}-byte limit of an import "
            f"({limit // ARCHIVE_LIMIT} times the {ARCHIVE_LIMIT:,}-byte archive limit); nothing unpacked"
        )
    sizes: dict[tuple, dict] = {}
    for m in members:
        parts = Path(m.name).parts
        if m.isfile() and parts[-1] == MANIFEST and len(parts) == 6:
            if m.size > MANIFEST_LIMIT:
                raise Refused(f"{archive}: {m.name} is {m.size:,} bytes, not a manifest; nothing unpacked")
            try:
                man = check_manifest(json.loads(tar.extractfile(m).read()), f"{archive}:{m.name}")
            except (ValueError, StoreError) as e:
                raise Refused(f"{archive}: {e}") from e
            sizes[parts[:5]] = man.get("sizes") or {}
    for m in members:
        parts = Path(m.name).parts
        if not m.isfile() or len(parts) < 6 or parts[-1] == MANIFEST:
            continue
        want = sizes.get(parts[:5], {}).get("/".join(parts[5:]))
        if want is not None and m.size != want:
            raise Refused(f"{archive}: {m.name} is {m.size:,} bytes, its manifest says {want:,}; nothing unpacked")


def _scan_headers(archive: Path, limit: int) -> None:
    """Before tarfile reads a header (it keeps every member's, and reads an extended header whole into memory): walk the
    raw 512-byte tar headers through gzip, skipping the members' data, and refuse an archive with an extended header
    over HEADER_LIMIT bytes, more than MEMBER_LIMIT members, or members declaring more than `limit` bytes. Reads at
    most `limit` bytes of data; an archive it cannot walk is left to tarfile, which names the damage."""
    extended = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)
    members = total = 0
    try:
        with gzip.open(archive, "rb") as f:
            while len(block := f.read(tarfile.BLOCKSIZE)) == tarfile.BLOCKSIZE and block.count(0) < tarfile.BLOCKSIZE:
                size, kind = tarfile.nti(block[124:136]), block[156:157]
                if kind in extended and size > HEADER_LIMIT:
                    raise Refused(
                        f"{archive}: an extended header of {size:,} bytes (at most {HEADER_LIMIT:,}); nothing unpacked"
                    )
                if kind not in extended:
                    members += 1
                    total += size if kind in tarfile.REGULAR_TYPES else 0
                if members > MEMBER_LIMIT:
                    raise Refused(f"{archive}: more than {MEMBER_LIMIT:,} members; nothing unpacked")
                if total > limit:
                    raise Refused(
                        f"{archive}: would unpack to at least {total:,} bytes, over the {limit:,}-byte "
                        f"limit of an import; nothing unpacked"
                    )
                skip = -(-size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                if kind in extended or size <= 0:
                    f.read(skip)  # at most HEADER_LIMIT
                else:
                    f.seek(skip, os.SEEK_CUR)
    except (OSError, EOFError, zlib.error, tarfile.HeaderError):
        return  # damaged: tarfile.open and getmembers refuse it with their own message


def _failure(e: OSError, store: Path, action: str) -> str:
    """An OSError in words: the storage's refusal naming the store (a full disk), else the error."""
    err = storage_error(e, store, action)
    return err.strerror if isinstance(err, StorageError) else f"{type(e).__name__}: {e}"


def _unpack(archive: Path, tmp: Path, store: Path, limit: int) -> None:
    """The archive's checked members into `tmp`, or Refused (CampaignError for an unsafe member name)."""
    _scan_headers(archive, limit)  # before tarfile keeps any header
    try:
        tar = tarfile.open(archive, "r:gz")
    except (OSError, tarfile.TarError, EOFError, zlib.error) as e:
        raise Refused(f"{archive}: not a campaign archive ({e})") from e
    with tar:
        try:
            members = _safe_members(tar, archive)
            _check_sizes(tar, members, archive, limit)
            tmp.mkdir()
            tar.extractall(tmp, members=members, filter="data")
        except (tarfile.TarError, EOFError, zlib.error) as e:
            raise Refused(
                f"{archive}: truncated or damaged ({type(e).__name__}: {e or 'unexpected end'}); "
                f"nothing of it was imported"
            ) from e
        except OSError as e:
            raise Refused(f"{archive}: {_failure(e, store, 'unpacking into')}; nothing of it was imported") from e


def _import_archive(archive: Path, store: Path, out: dict, limit: int) -> None:
    tmp = store / temp_name(IMPORT_TEMP)
    try:
        _unpack(archive, tmp, store, limit)
        root = tmp / "published"
        for d in sorted(p.parent for p in root.glob(f"*/runs/*/*/{MANIFEST}")):
            where = f"{archive}:{d.relative_to(tmp)}"
            try:
                m = verify_record(d)
                placed = Path(m["device_slug"], "runs", m["corpus"], f"{m['experiment']}-s{m['seed']}")
                if d.relative_to(root) != placed:
                    raise StoreError(f"{d}: its manifest places it at {placed.as_posix()}")
                check_contents(d)
                target, status = import_record(store, d)
            except StoreError as e:
                out["refused"].append(f"{archive}: {str(e).replace(str(d), where)}")
                continue
            except OSError as e:
                out["refused"].append(f"{where}: {_failure(e, store, 'copying into')}")
                continue
            out[status].append(target)
        for d in sorted(p.parent for p in (tmp / "window").glob(f"*/*/{WINDOW_SUMMARY}")):
            try:
                from .window_records import install_records

                out["windows"].append(target := _import_window(d, store))
                out["bench"] += install_records(target, store, target.parent.parent.name, target.name)
            except (StoreError, OSError, ValueError) as e:
                out["refused"].append(f"{archive}: window {d.relative_to(tmp).as_posix()}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _import_window(d: Path, store: Path) -> Path:
    """A GPU window's folder (sdgm.campaign.window) into STORE/<device>/windows/<stamp>/, whole or not at all; the
    same window again is a no-op. Its names must be a device slug and a time stamp, its summary a window's."""
    device, stamp = d.parent.name, d.name
    if not SLUG.fullmatch(device) or not WINDOW_STAMP.fullmatch(stamp):
        raise StoreError(f"names {device!r}/{stamp!r} are not a device slug and a UTC time stamp")
    summary = json.loads((d / WINDOW_SUMMARY).read_text())
    if not isinstance(summary, dict) or summary.get("kind") != "gpu_window" or summary.get("stamp") != stamp:
        raise StoreError(f"{WINDOW_SUMMARY} is not the summary of window {stamp}")
    window_section(d)  # what render makes of it: a window.json that would stop the render is refused here
    target = inside(store, store / device / "windows" / stamp)
    if target.exists():
        return target
    staging = target.parent / temp_name(stamp)
    staging.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(d, staging)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def import_archives(archives, store: str | Path, unpack_limit: int | None = None) -> dict:
    """Merge archives into the store, record by record, holding the store's lock. Each archive is checked before
    it is unpacked (member names, total and per-file sizes), each record before it is installed (its manifest's
    names, its files against the manifest, its metrics against the schema and physical bounds, its destination
    inside the store); the same record again is a no-op, a published copy of it with files missing is repaired, a
    clash is refused naming both. An archive that is truncated or cannot be unpacked (a full disk) is refused in
    one line and the others go on; an unsafe member name stops the import (CampaignError).
    A GPU window's archive also holds the window's own folder (window/<device>/<stamp>/: its parts' statuses,
    environment, benchmark records and logs), installed whole as STORE/<device>/windows/<stamp>/; its benchmark
    records also go to STORE/<device>/bench/, where sdgm.reporting.claims reads them (window_records.install_records).
    Returns {"new": [...], "same": [...], "repaired": [...], "refused": [messages], "windows": [folders],
    "bench": [benchmark records installed]}."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    out: dict = {"new": [], "same": [], "repaired": [], "refused": [], "windows": [], "bench": []}
    try:
        with store_lock(store, "this import"):
            remove_stale_temporaries(store / IMPORT_TEMP, temp_stale)  # what a killed import left
            for archive in archives:
                try:
                    _import_archive(Path(archive), store, out, unpack_limit or UNPACK_LIMIT)
                except Refused as e:
                    out["refused"].append(str(e))
    except StoreError as e:
        if "the store is in use" not in str(e):
            raise
        raise CampaignError(str(e)) from None
    return out
