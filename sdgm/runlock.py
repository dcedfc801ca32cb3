"""One writer per run: a lock file that the training job of a run holds while it trains and writes the run.

Snakemake's own lock lives in the working directory (.snakemake/), so two pipelines started on the same
`results_dir` from two working directories would otherwise train the same run at once, both writing its
checkpoint and its run directory. The training job takes `<checkpoint directory>/lock` with flock (exclusive,
non-blocking) and writes its holder into it (host, pid, working directory, start time); a second job of the same
run stops at once with RunLocked naming the lock and its holder. The kernel releases the lock when the holder's
process ends in any way (even SIGKILL), so a lock file left behind blocks nothing. On a shared file system the
lock works where flock does (NFSv4, Lustre and GPFS mounted with locking).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from .atomic import storage_errors


class RunLocked(RuntimeError):
    """Another process holds the lock of this run (it is training it now)."""


def holder() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(), "cwd": os.getcwd(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}


@contextlib.contextmanager
def run_lock(path: str | os.PathLike, what: str) -> Iterator[dict]:
    """Hold the lock file `path` for the block, or raise RunLocked naming it and its holder."""
    path = Path(path)
    with storage_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            try:
                h = json.loads(text)
                by = f"pid {h['pid']} on host {h['host']}, started in {h['cwd']} at {h['since']}"
            except (ValueError, KeyError, TypeError):
                by = "another process"
            raise RunLocked(f"{what} is being trained by {by} (lock {path}); a second pipeline on the same "
                            f"results_dir must not train it at the same time: wait for that one to finish, then "
                            f"run this command again") from None
        me = holder()
        with storage_errors(path):  # the holder, for the message of a second job; the lock is the flock
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(me) + "\n").encode("utf-8"), 0)
        yield me
    finally:
        os.close(fd)  # releases the flock
