"""One training run in several processes: DistributedDataParallel under torch.distributed.run (torchrun).

    launch(2, run_kwargs, threads=4, log_path="train.log")   # run_training(**run_kwargs) in 2 processes; waits

`launch` starts `python -m torch.distributed.run --standalone --nproc-per-node N -m sdgm.harness.distributed ARGS`: one
node, a rendezvous on a free port of this host, N worker processes. Each worker (`main`) joins the process group
(backend from train.ddp_backend: nccl on CUDA, gloo on CPU by default; on CUDA each uses the GPU numbered by its
LOCAL_RANK) and calls run_training, which trains its share of every global batch (sdgm/harness/train.py says how) and on
rank 0 writes the results. Every process writes its output (progress, errors) to the same log.

torchrun starts its workers in sessions of their own, out of reach of a signal to the job's process group, and a
SIGKILLed process cannot pass a signal on; so on Linux torchrun and every worker ask the kernel to kill them when
their parent dies: killing the job (Ctrl-C, SIGKILL, a scheduler) leaves no process training behind.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARENT = os.getppid()  # of a worker: torchrun's agent
LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process as soon as its parent (pid `parent`) dies; Linux only."""
    if LIBC is None:
        return
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def backend(ddp_backend: str, device_type: str) -> str:
    """The process group's backend: "auto" is nccl on CUDA, gloo on CPU."""
    if ddp_backend == "auto":
        return "nccl" if device_type == "cuda" else "gloo"
    if ddp_backend == "nccl" and device_type != "cuda":
        raise ValueError("train.ddp_backend nccl needs CUDA devices, but training runs on the CPU: use gloo or auto")
    return ddp_backend


def launch(processes: int, run_kwargs: dict, threads: int = 1, log_path: str | Path | None = None) -> None:
    """Run run_training(**run_kwargs) in `processes` processes under torchrun, each with `threads` torch threads,
    their output appended to log_path (else this process's stdout/stderr); raise if any of them fails."""
    args = json.dumps({**run_kwargs, "threads": threads}, default=str)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={processes}",
        "-m",
        "sdgm.harness.distributed",
        args,
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a") if log_path else None
    me = os.getpid()
    try:
        rc = subprocess.run(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT if log else None, preexec_fn=lambda: die_with_parent(me)
        ).returncode
    finally:
        if log:
            log.close()
    if rc != 0:
        where = f"in {log_path}" if log_path else "above"
        raise RuntimeError(
            f"training in {processes} processes failed (torchrun exit status {rc}); each process's error is {where}"
        )


def main() -> None:
    """A worker started by torchrun: join the process group, train, leave."""
    import torch
    import torch.distributed as dist

    from .experiment import run_training
    from .recipe import TrainConfig, resolve_device

    kwargs = json.loads(sys.argv[1])
    torch.set_num_threads(kwargs.pop("threads"))
    cfg = TrainConfig(**kwargs.get("train_overrides") or {})
    device = resolve_device(cfg.device)
    if device.type == "cuda":  # the GPU numbered by LOCAL_RANK, as the trainer uses it
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    dist.init_process_group(backend(cfg.ddp_backend, device.type))
    print(
        f"training process {dist.get_rank()} of {dist.get_world_size()} (pid {os.getpid()}, {dist.get_backend()} "
        f"backend, device {device})",
        file=sys.stderr,
        flush=True,
    )
    try:
        run_training(**kwargs)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    die_with_parent(PARENT)
    from torch.distributed.elastic.multiprocessing.errors import record

    record(main)()  # a failing worker's traceback also goes into torchrun's summary
