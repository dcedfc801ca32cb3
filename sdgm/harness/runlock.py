"""One writer per run: a lock file that the training job of a run holds while it trains and writes the run.

Snakemake's own lock lives in the working directory (.snakemake/), so two pipelines started on the same
`results_dir` from two working directories would otherwise train the same run at once, both writing its
checkpoint and its run directory. The training job takes `<checkpoint directory>/lock` with flock (exclusive,
non-blocking) and writes its holder into it (host, pid, working directory, start time); a second job of the same
run stops at once with RunLocked naming the lock and its holder. The kernel releases the lock when the holder's
process ends in any way (even SIGKILL), so a lock file left behind blocks nothing. The file is opened without
following a link, and a lock path that is a link, a hard link or not a regular file is refused (UnsafePath). On a
shared file system the lock works where flock does (NFSv4, Lustre and GPFS mounted with locking).

A lock can outlive its holder when a process the holder started (a forked worker) inherited the open file: the
recorded holder is gone, yet the flock is held. Such a lock is recognized (the holder's host is this host and its
pid no longer runs), named on stderr and cleared: the file is replaced by a new one, which is taken. The same
`file_lock` guards the published store (sdgm.campaign.store.store_lock).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ..common.atomic import UnsafePath, storage_errors


class RunLocked(RuntimeError):
    """Another process holds the lock of this run (it is training it now)."""


def holder() -> dict:
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs (a zombie, ended but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def holder_gone(h: dict | None) -> bool:
    """The recorded holder ran on this host and no longer runs (a holder on another host cannot be checked)."""
    return (
        isinstance(h, dict)
        and h.get("host") == socket.gethostname()
        and isinstance(h.get("pid"), int)
        and not pid_alive(h["pid"])
    )


def describe(h: dict | None) -> str:
    if not isinstance(h, dict) or not {"pid", "host"} <= set(h):
        return "another process"
    return f"pid {h['pid']} on host {h['host']}, started in {h.get('cwd')} at {h.get('since')}"


def _read_holder(fd: int) -> dict | None:
    try:
        h = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace").strip())
    except ValueError:
        return None
    return h if isinstance(h, dict) else None


def _open_lock(path: Path) -> int:
    """The lock file, opened or created without following a link: a link (or a hard link, a FIFO, a device) in its
    place would make the holder's line overwrite some other file; refused, one line."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafePath(
                f"lock {path} is a symbolic link (to {os.readlink(path)}); refusing to follow it (remove the link)"
            ) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        what = "has other hard links" if stat.S_ISREG(st.st_mode) else "is not a regular file"
        raise UnsafePath(f"lock {path} {what}; refusing to write to it (remove it)")
    return fd


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, refuse: Callable[[str], Exception]) -> Iterator[dict]:
    """Hold the lock file `path` for the block; if another process holds it, raise refuse(its holder, in words).
    A lock whose recorded holder is gone is named on stderr and cleared (see the module's doc)."""
    path = Path(path)
    for attempt in (1, 2):
        with storage_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = _open_lock(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            h = _read_holder(fd)
            os.close(fd)
            if attempt == 1 and holder_gone(h):
                print(
                    f"lock {path}: its holder ({describe(h)}) is gone, but a process it left still holds the "
                    f"file; clearing the lock",
                    file=sys.stderr,
                    flush=True,
                )
                with storage_errors(path):
                    path.unlink(missing_ok=True)  # the leftover keeps the old file; the new one is free
                continue
            raise refuse(describe(h)) from None
    try:
        me = holder()
        with storage_errors(path):  # the holder, for the message of a second process; the lock is the flock
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode("utf-8"), 0)
        yield me
    finally:
        os.close(fd)  # releases the flock


@contextlib.contextmanager
def run_lock(path: str | os.PathLike, what: str) -> Iterator[dict]:
    """Hold the lock file `path` for the block, or raise RunLocked naming it and its holder."""

    def refuse(by: str) -> RunLocked:
        return RunLocked(
            f"{what} is being trained by {by} (lock {path}); a second pipeline on the same "
            f"results_dir must not train it at the same time: wait for that one to finish, then "
            f"run this command again"
        )

    with file_lock(path, refuse) as me:
        yield me
