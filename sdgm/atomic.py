"""Atomic file writes: write to a temporary name in the same directory, rename onto the target on success.

A crash or kill never leaves a half-written output that a later step (or Snakemake) could take as finished.
A SIGKILL or power loss during a write can leave the temporary file (`NAME.part-XXXX`) behind; the next writer
of NAME removes it with `remove_stale_temporaries`. No torch or pandas here, so every environment can use it.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Iterator

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`, on any error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.part-{secrets.token_hex(6)}")
    try:
        yield tmp
        with open(tmp, "rb") as fh:  # on disk before the rename, so a power loss cannot leave an empty file
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # after a successful os.replace the temporary name no longer exists


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Delete the temporaries of `path` that a killed writer left behind; call it only as `path`'s one writer."""
    path = Path(path)
    stale = sorted(path.parent.glob(f"{glob.escape(path.name)}.part-*")) if path.parent.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_open(path: PathLike) -> Iterator[BinaryIO]:
    """Open a temporary file next to `path` for binary writing; it replaces `path` only if the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, "xb") as fh:
        yield fh


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def write_text_atomic(path: PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: PathLike, obj: Any) -> None:
    """JSON with indent 2, key order preserved."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")
