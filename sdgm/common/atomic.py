"""Atomic file writes: write to a temporary name in the same directory, rename onto the target on success; and
the one reader of a JSON file (read_json), whose error names the file and what it should hold.

A crash or kill never leaves a half-written output that a later step (or Snakemake) could take as finished.
A SIGKILL or power loss during a write can leave the temporary file (`NAME.part-XXXX`) behind; the next writer
of NAME removes it with `remove_stale_temporaries`. No torch or pandas here, so every environment can use it.

A full disk, an exceeded quota, a read-only file system or a denied permission while writing raises StorageError,
one error naming the path and what happened; the temporary is removed and the previous file is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

PathLike = str | os.PathLike

# what the storage under a path can refuse, in words
STORAGE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large for the file system or the process's file size limit",
}


class StorageError(OSError):
    """The storage refused a write: full, over quota, read-only or not permitted. Names the path."""


class UnsafePath(OSError):
    """A write under a guarded folder (the published store, a results folder) through a symbolic link, or to a
    place that resolves outside that folder: refused, naming the link."""


def no_links(root: PathLike, path: PathLike) -> Path:
    """`path`, if it lies under `root` and no component of it below `root` is a symbolic link (`root` itself may be
    one: where the folder lives is its owner's choice), and it resolves inside `root`; else UnsafePath, one line.
    Call it before writing to `path` or creating anything under it: a link committed into a store or a results
    folder would otherwise make a write land anywhere."""
    root, path = Path(root), Path(path)
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise UnsafePath(f"{path}: not under {root}; refusing to write there") from None
    where = root
    for part in rel.parts:
        if part == "..":
            raise UnsafePath(f"{path}: holds '..'; refusing to write there")
        where = where / part
        if where.is_symlink():
            raise UnsafePath(
                f"{path}: {where} is a symbolic link (to {os.readlink(where)}); refusing to write "
                f"through it (remove the link)"
            )
        if not where.exists():
            break
    if not path.resolve().is_relative_to(root.resolve()):
        raise UnsafePath(f"{path}: resolves to {path.resolve()}, outside {root.resolve()}; refusing to write there")
    return path


def no_links_below(root: PathLike, folder: PathLike) -> Path:
    """no_links for `folder` and for everything already in it (a link anywhere inside is refused too)."""
    folder = no_links(root, folder)
    if folder.is_dir():
        for p in folder.rglob("*"):  # rglob does not descend into linked folders; each link is named here
            if p.is_symlink():
                raise UnsafePath(
                    f"{folder}: {p} is a symbolic link (to {os.readlink(p)}); refusing to write "
                    f"through it (remove the link)"
                )
    return folder


def storage_error(exc: OSError, path: PathLike, action: str = "writing") -> OSError:
    """`exc` as a StorageError naming `path` if the storage refused the write, else `exc` itself."""
    if isinstance(exc, StorageError) or exc.errno not in STORAGE_ERRORS:
        return exc
    err = StorageError(
        exc.errno,
        f"{STORAGE_ERRORS[exc.errno]} {action} {path}; nothing was replaced "
        f"(free space or fix the permissions, then run the same command again)",
    )
    err.path = str(path)
    return err


@contextlib.contextmanager
def storage_errors(path: PathLike, action: str = "writing") -> Iterator[None]:
    """Turn a refused write in the block into a StorageError naming `path`."""
    try:
        yield
    except OSError as e:
        raise storage_error(e, path, action) from e


@contextlib.contextmanager
def atomic_path(path: PathLike, before_replace: Callable[[Path], None] | None = None) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`, on any error removed.
    A write the storage refuses (full, read-only, ...) raises StorageError naming `path`. `before_replace`, if
    given, is called with the complete temporary just before the rename (to record its digest elsewhere)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.part-{secrets.token_hex(6)}")
    with storage_errors(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            with open(tmp, "rb") as fh:  # on disk before the rename, so a power loss cannot leave an empty file
                os.fsync(fh.fileno())
            if before_replace is not None:
                before_replace(tmp)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):  # a read-only file system refuses even the unlink of nothing
                tmp.unlink()  # after a successful os.replace the temporary name no longer exists


class _RecordingWriter:
    """A binary file's write(), remembering the OSError it raised: a library that writes through it (torch.save)
    may turn that error into its own, which would lose the reason (a full disk)."""

    def __init__(self, fh: BinaryIO):
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.fh.flush()


@contextlib.contextmanager
def atomic_writer(path: PathLike, before_replace: Callable[[Path], None] | None = None) -> Iterator[_RecordingWriter]:
    """Like atomic_open, for writers such as torch.save that replace an OSError from write() by their own error:
    the OSError is raised instead (a StorageError naming `path` when the storage refused the write)."""
    with atomic_open(path, before_replace) as fh:
        rec = _RecordingWriter(fh)
        try:
            yield rec
        except Exception as e:
            if rec.error is not None and e is not rec.error:
                raise rec.error from e
            raise


def remove_stale_temporaries(path: PathLike, stale: Callable[[Path], bool] | None = None) -> list[Path]:
    """Delete the temporaries of `path` (`NAME.part-*`, files or folders) that a killed writer left behind: those
    `stale` says are (a folder's writer may still run), else every one (call it then only as `path`'s one writer).
    Returns the ones removed."""
    path = Path(path)
    found = sorted(path.parent.glob(f"{glob.escape(path.name)}.part-*")) if path.parent.is_dir() else []
    gone = [p for p in found if stale is None or stale(p)]
    for p in gone:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return gone


@contextlib.contextmanager
def atomic_open(path: PathLike, before_replace: Callable[[Path], None] | None = None) -> Iterator[BinaryIO]:
    """Open a temporary file next to `path` for binary writing; it replaces `path` only if the block succeeds."""
    with atomic_path(path, before_replace) as tmp:
        with open(tmp, "xb") as fh:
            yield fh


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of the bytes of `path`, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def write_text_atomic(path: PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: PathLike, obj: Any) -> None:
    """JSON with indent 2, key order preserved."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def read_json(path: PathLike, what: str, error: type[Exception]) -> Any:
    """The JSON in `path`; a file that cannot be read, is not UTF-8 or does not parse raises `error` (the caller's
    kind: DataError, ReportError, ...) naming the file and `what` it holds."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path}: cannot read {what} ({e})") from e
