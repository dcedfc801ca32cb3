"""Checkpoints of a training run: writing them atomically, resuming them exactly, and stopping at a SIGTERM.

`Checkpoints` is the part of sdgm.harness.train.Trainer that reads and writes `ckpt_dir` (last.pt, best.pt). A
checkpoint holds the model, optimizer, scheduler, training state, every random state and the carried model state, and
the fingerprint of what it was trained on; a checkpoint of another configuration or an unreadable one is refused with
CheckpointError naming what differs. A write the storage refuses (full, read-only) raises
sdgm.common.atomic.StorageError naming the file, and the previous checkpoint stays as it was.

A checkpoint may sit on a shared results directory, so resuming trusts nothing in it before checking it: beside
last.pt, last.pt.json records the SHA-256 of the checkpoint (and of the one before it, for a kill between the two
writes) and its fingerprint. Resuming compares both before loading, then loads with torch's weights-only unpickler,
which builds tensors and plain containers only, plus exactly the numpy types of numpy's random state
(RESUME_GLOBALS): a checkpoint that carries code is refused, never run.

SIGTERM (what Slurm sends at a time limit, ahead of it with `--signal`, or on preemption) does not kill a training
in one process: the step in progress finishes, a checkpoint of that step is written, and the job exits with
Preempted (status 143, 128 + SIGTERM), so that Snakemake does not take it as finished and the next attempt resumes
at that step. Under several processes (torchrun) a SIGTERM ends the processes as before; they resume from the
last periodic checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..common.atomic import atomic_writer, sha256_file, write_json_atomic

EXIT_PREEMPTED = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


# what a checkpoint holds beyond tensors and plain containers: numpy's random state (np.random.get_state())
_np_core = getattr(np, "_core", None) or np.core
RESUME_GLOBALS = [_np_core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: unreadable, or written for another configuration or vocabulary."""


def differences(old, new, prefix: str = "") -> list[str]:
    """Dotted paths at which two JSON-like values differ, with both values (for error messages)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += differences(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if old == new else [f"{prefix or 'value'}: {old!r} != {new!r}"]


class Preempted(SystemExit):
    """Training stopped by SIGTERM after writing a checkpoint of the current step; exits with status 143."""

    def __init__(self, message: str):
        super().__init__(EXIT_PREEMPTED)
        self.message = message

    def __str__(self) -> str:
        return self.message


def to_device(state, device):
    """A carried model state (tensors in tuples and lists, or None) on `device`."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.to(device)
    return type(state)(to_device(s, device) for s in state)


def save_atomic(obj, path: Path, before_replace=None) -> None:
    with atomic_writer(path, before_replace) as tmp:  # a full disk is named as such, not as torch's "file write failed"
        torch.save(obj, tmp)


class Checkpoints:
    """Checkpoint writing, exact resume and the SIGTERM stop of a Trainer (a mixin: it uses the trainer's model,
    optimizer, scheduler, state, device and ranks)."""

    stop_signal: int | None = None  # set by the SIGTERM handler; the loop checks it after every step
    ckpt_digest: str | None = None  # SHA-256 of last.pt as last written or resumed from

    @property
    def ckpt_path(self) -> Path:
        return self.ckpt_dir / "last.pt"

    @property
    def ckpt_meta_path(self) -> Path:
        return self.ckpt_dir / "last.pt.json"

    @property
    def best_path(self) -> Path:
        return self.ckpt_dir / "best.pt"

    def last_good(self) -> str:
        if self.ckpt_step is None:
            return "no checkpoint written yet"
        return f"last good checkpoint: {self.ckpt_path} (step {self.ckpt_step})"

    def save_checkpoint(self) -> None:
        self.check_finite(weights=True)  # never overwrite the last good checkpoint with a diverged state
        rng = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        ranks = None
        if self.distributed:  # every rank's random state and carried model state, each resumes its own
            ranks = [None] * self.world
            dist.all_gather_object(ranks, {"rng": rng, "carry": to_device(self.carry, "cpu")})
        if self.rank == 0:
            previous = [self.ckpt_digest] if self.ckpt_digest else []

            def record(tmp: Path) -> None:  # before the rename: last.pt is always one of the digests recorded
                self.ckpt_digest = sha256_file(tmp)
                write_json_atomic(
                    self.ckpt_meta_path,
                    {
                        "sha256": [self.ckpt_digest, *previous],
                        "step": self.state.step,
                        "fingerprint": self.fingerprint,
                        "fingerprint_source": self.fingerprint_source,
                    },
                )

            save_atomic(
                {
                    "model": self.model.state_dict(),
                    "optimizer": self.opt.state_dict(),
                    "scheduler": self.sched.state_dict(),
                    "state": asdict(self.state),
                    "rng": rng,
                    "carry": self.carry,
                    "processes": self.world,
                    "ranks": ranks,
                    "fingerprint": self.fingerprint,
                    "fingerprint_source": self.fingerprint_source,
                },
                self.ckpt_path,
                record,
            )
        self.ckpt_step = self.state.step

    def _check_fingerprint(self, fingerprint, source) -> None:
        if fingerprint != self.fingerprint:
            what = differences(source, self.fingerprint_source)
            what = "; ".join(what) if source and what else f"fingerprint {fingerprint} != {self.fingerprint}"
            raise CheckpointError(
                f"checkpoint {self.ckpt_path} was written for a different configuration "
                f"({what}); delete {self.ckpt_dir} to start over"
            )

    def _check_digest(self) -> None:
        """Before anything of last.pt is loaded: its SHA-256 is one last.pt.json records, and its fingerprint
        this run's. A checkpoint without last.pt.json (written before it existed) is checked after loading."""
        if not self.ckpt_meta_path.exists():
            return
        try:
            meta = json.loads(self.ckpt_meta_path.read_text(encoding="utf-8"))
            digests = list(meta["sha256"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"checkpoint {self.ckpt_path} is unreadable: its record {self.ckpt_meta_path} "
                f"is ({type(e).__name__}: {e}); delete {self.ckpt_dir} to start over"
            ) from e
        digest = sha256_file(self.ckpt_path)
        if digest not in digests:
            raise CheckpointError(
                f"checkpoint {self.ckpt_path} is unreadable: its SHA-256 {digest[:12]} is not the "
                f"one {self.ckpt_meta_path} records (the file was replaced or damaged); it was not "
                f"loaded; delete {self.ckpt_dir} to start over"
            )
        self._check_fingerprint(meta.get("fingerprint"), meta.get("fingerprint_source"))
        self.ckpt_digest = digest

    def try_resume(self) -> bool:
        if not self.ckpt_path.exists():
            return False
        self._check_digest()
        try:
            with torch.serialization.safe_globals(RESUME_GLOBALS):
                ck = torch.load(self.ckpt_path, map_location=self.device, weights_only=True)
            if not isinstance(ck, dict) or not {"model", "optimizer", "scheduler", "state", "rng"} <= set(ck):
                raise ValueError("not a training checkpoint")
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {self.ckpt_path} is unreadable ({type(e).__name__}: {e}); delete it to start over"
            ) from e
        self._check_fingerprint(ck.get("fingerprint"), ck.get("fingerprint_source"))
        written_by = ck.get("processes", 1)
        if self.streams and written_by != self.world:
            raise CheckpointError(
                f"checkpoint {self.ckpt_path} was written by {written_by} training process(es) "
                f"reading contiguous streams, each carrying the model state of its own streams; it "
                f"resumes only with {written_by} (now {self.world}); delete {self.ckpt_dir} to "
                f"start over"
            )
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["optimizer"])
        self.sched.load_state_dict(ck["scheduler"])
        self.state = type(self.state)(**ck["state"])
        # this rank's random state and carried model state; a rank the checkpoint does not know (more processes
        # than wrote it) keeps the fresh random stream it was given
        per_rank = ck.get("ranks") or [{"rng": ck["rng"], "carry": ck.get("carry")}]
        if self.rank < len(per_rank):
            rng = per_rank[self.rank]["rng"]
            self.carry = to_device(per_rank[self.rank]["carry"], self.device)
            torch.set_rng_state(rng["torch"].cpu())  # map_location put it on the device; RNG states live on the CPU
            random.setstate(rng["python"])
            np.random.set_state(rng["numpy"])
            if "cuda" in rng and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)
        self.ckpt_step = self.state.step
        return True

    def load_best(self) -> None:
        self.model.load_state_dict(torch.load(self.best_path, map_location=self.device, weights_only=True))

    @contextlib.contextmanager
    def stop_on_sigterm(self) -> Iterator[None]:
        """While the block runs, a SIGTERM sets stop_signal instead of ending the process (one process only: the
        ranks of a distributed run could not agree on the step to stop at without a collective per step)."""
        if self.distributed or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.getsignal(signal.SIGTERM)

        def request_stop(signum, frame):
            self.stop_signal = signum

        signal.signal(signal.SIGTERM, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def stop_for_signal(self) -> None:
        """Write a checkpoint of the current step (unless there is one) and raise Preempted."""
        step = self.state.step
        if self.ckpt_step != step:
            self.save_checkpoint()
        self.log({"event": "preempted", "step": step, "signal": signal.Signals(self.stop_signal).name})
        msg = (
            f"training stopped by {signal.Signals(self.stop_signal).name} (a time limit or preemption) at step "
            f"{step}: checkpoint {self.ckpt_path} holds that step; run the same command again to resume there "
            f"(exit status {EXIT_PREEMPTED})"
        )
        print(msg, file=sys.stderr, flush=True)
        raise Preempted(msg)
