"""Will a training fit in the memory it was given? An estimate of its peak, checked before the first step.

The peak of a training step is about: the parameters, their gradients, the optimizer's state (two moments per
parameter for Adam), the activations autograd keeps for the backward pass of one batch, and the gradients of the
log-probabilities and the logits (each batch x length x vocabulary floats) during the backward pass. The
activations are measured, not guessed: one forward pass of the model's training objective on one window and on
two, recording the tensors autograd saves (so it works for any registered model), extrapolated to the batch. The
measuring passes draw no random numbers from the training's streams (fork_rng), so a run is the same with or
without the check.

`check_memory` compares the estimate with the memory the job was given (the job's `mem_mb` on the CPU, the GPU's
free memory on CUDA) and raises MemoryEstimateError naming the estimate, its parts and the setting to change,
instead of letting the out-of-memory killer end the job mid-training.
"""

from __future__ import annotations

import os
import resource
import sys

import torch

MiB = 1 << 20


class MemoryEstimateError(MemoryError):
    """The estimated peak of a training does not fit in the memory its job was given."""


def _saved_bytes(loss_fn, x: torch.Tensor, y: torch.Tensor, exclude: set[int], amp) -> int:
    """Bytes of the tensors autograd saves for backward in one forward of `loss_fn`, each storage counted once,
    parameters (`exclude`: their storages) not counted."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        if s.data_ptr() not in exclude:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        torch.autocast(x.device.type, dtype=amp, enabled=amp is not None),
    ):
        loss = loss_fn(x, y)[0]
    total = sum(storages.values())
    del loss
    return total


def estimate_training_bytes(
    model: torch.nn.Module,
    loss_fn,
    batch_size: int,
    length: int,
    vocab_size: int,
    optimizer: str,
    device: torch.device,
    amp=None,
) -> dict[str, int]:
    """Estimated peak bytes of one training step of `batch_size` windows of `length` tokens, by part."""
    params = list(model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    exclude = {p.untyped_storage().data_ptr() for p in params}
    x = torch.zeros(2, length, dtype=torch.long, device=device)
    mode = model.training
    model.train()  # as in the training steps (dropout masks are saved tensors too)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            one = _saved_bytes(loss_fn, x[:1], x[:1], exclude, amp)
            two = _saved_bytes(loss_fn, x, x, exclude, amp)
    finally:
        model.train(mode)
    per_window = max(two - one, 0)
    activations = max(one - per_window, 0) + per_window * batch_size
    return {
        "parameters": param_bytes,
        "gradients": param_bytes,
        "optimizer": 0 if optimizer == "sgd" else 2 * param_bytes,
        "activations": activations,
        # the gradients of the log-probabilities and of the logits, both alive during the backward pass of the
        # loss (float32: the loss is computed in float32); the forward pass's logits are counted in activations
        "logits_backward": 2 * batch_size * length * vocab_size * 4,
        # on a CPU whose allocator keeps freed big blocks (the workflow's jobs: sdgm.harness.config.JOB_MALLOC_ENV), the
        # loss's forward buffers of that size are still held when its backward allocates: two more, measured
        "allocator_kept": 2 * batch_size * length * vocab_size * 4
        if device.type == "cpu" and keeps_freed_blocks()
        else 0,
    }


def keeps_freed_blocks() -> bool:
    """Does glibc keep freed big blocks in this process (MALLOC_MMAP_THRESHOLD_ raised above 32 MiB)?"""
    try:
        return int(os.environ.get("MALLOC_MMAP_THRESHOLD_", "0")) > 1 << 25
    except ValueError:
        return False


def rss_bytes() -> int:
    """Resident memory of this process now (Linux), or its peak so far elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def describe(parts: dict[str, int]) -> str:
    return ", ".join(
        f"{k.replace('_', ' ')} {v / MiB:.0f} MiB" for k, v in parts.items() if v or k != "allocator_kept"
    )  # that part only where the allocator keeps freed blocks


def check_memory(parts: dict[str, int], device: torch.device, mem_mb: int | None, what: str) -> dict:
    """Raise MemoryEstimateError if the estimate `parts` does not fit; return what was compared.

    The model's parameters are already in memory when this runs (on `device`), so they are counted in the
    process's resident memory (CPU) or missing from the GPU's free memory (CUDA), not again."""
    total = sum(parts.values())
    fix = (
        "lower train.batch_size or train.seq_len, or a smaller model; job_resources.train.memory_check: false "
        "turns this check off"
    )
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        need = total - parts["parameters"]
        if need > free:
            raise MemoryEstimateError(
                f"{what}: estimated peak GPU memory {total / MiB:.0f} MiB ({describe(parts)}) does not fit: "
                f"{need / MiB:.0f} MiB more are needed, {free / MiB:.0f} MiB of {device} are free; {fix}"
            )
        return {"estimate_bytes": total, "limit_bytes": free + parts["parameters"], "device": str(device)}
    if mem_mb is None:
        return {"estimate_bytes": total, "limit_bytes": None, "device": str(device)}
    now = rss_bytes()
    need = now + total - parts["parameters"]
    if need > mem_mb * MiB:
        raise MemoryEstimateError(
            f"{what}: estimated peak memory {need / MiB:.0f} MiB (this process now {now / MiB:.0f} MiB, plus "
            f"{describe({k: v for k, v in parts.items() if k != 'parameters'})}) exceeds the job's memory "
            f"{mem_mb} MiB (job_resources.train.mem_mb); raise job_resources.train.mem_mb, or {fix}"
        )
    return {"estimate_bytes": need, "limit_bytes": mem_mb * MiB, "device": str(device)}
