"""Timing and memory of one call, the way every benchmark here takes them.

    timing = time_calls(fn, repeats=5, warmup=2, device="cuda")   # median of synchronized repeats
    peak, why = peak_call_memory(fn, device)                      # allocator peak above the level before the call

Timing: `warmup` untimed calls, then `repeats` timed calls, each between two device synchronizations
(torch.cuda.synchronize on CUDA); the median is reported, with every raw time beside it. The clock is injectable
(tests use a fake one). A value that cannot be measured is None with its reason, never 0.
"""

from __future__ import annotations

import contextlib
import gc
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import torch


def current_rss_bytes() -> int | None:
    """Resident set size of this process now (Linux /proc), or None where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def load_average() -> list[float] | None:
    """The host's 1, 5 and 15 minute load averages: a busy machine disturbs every CPU timing."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def peak_rss_bytes() -> int:
    """Peak resident set size of this process over its life.

    Linux: VmHWM of /proc/self/status. Not getrusage's ru_maxrss there: a process started by fork and exec (every
    Snakemake job, every subprocess) inherits its parent's peak at the fork, so a small job under a large parent
    would report the parent's memory. Elsewhere ru_maxrss (bytes on macOS, KiB on other systems)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


# ---- timing ------------------------------------------------------------------------------------------------------
def synchronize(device: torch.device | str) -> None:
    """Wait for queued device work (CUDA kernels run asynchronously); nothing to wait for on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[], object],
    *,
    repeats: int,
    warmup: int,
    device: torch.device | str = "cpu",
    clock: Callable[[], float] = time.perf_counter,
    timed_context=None,
) -> dict:
    """Median wall time of fn() over `repeats` synchronized calls after `warmup` untimed ones.

    `timed_context` (e.g. an NvmlSampler) is entered around the timed calls only, not the warmup.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    with timed_context if timed_context is not None else contextlib.nullcontext():
        for _ in range(repeats):
            t0 = clock()
            fn()
            synchronize(device)
            times.append(clock() - t0)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "times_s": times,
        "repeats": repeats,
        "warmup": warmup,
    }


def tokens_per_second(tokens_per_call: int, timing: dict) -> float:
    return tokens_per_call / timing["median_s"]


# ---- peak memory of one call ------------------------------------------------------------------------------------
CPU_MEMORY_METHOD = "torch.profiler CPU allocator events (profile_memory=True): peak of the running sum of allocations"
CUDA_MEMORY_METHOD = "torch.cuda.max_memory_allocated during the call, minus what was allocated before it"


def peak_call_memory(fn: Callable[[], object], device: torch.device | str) -> tuple[int | None, str | None]:
    """(bytes, None) or (None, reason): the most memory fn() held at once above what was allocated before it."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, None
    try:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
        deltas = [e.nbytes() for e in sorted(events, key=lambda e: e.start_ns())]
    except Exception as e:  # the allocator events are not a stable public API: fall back to saying so
        return None, f"torch CPU allocator statistics unavailable ({type(e).__name__}: {e})"
    if not deltas:
        return None, "the profiler recorded no CPU allocator events"
    return int(max(0, np.cumsum(deltas).max())), None


def is_oom(e: BaseException) -> bool:
    if isinstance(e, (torch.OutOfMemoryError, MemoryError)):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and ("out of memory" in msg or "can't allocate memory" in msg)


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
