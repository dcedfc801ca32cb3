"""Measurements a performance engineer can check: time, tokens/s, MFU, memory, energy.

    with NvmlSampler("cuda") as s: ...            # s.result(): GPU memory (this process, device), power, energy,
                                                   # torch peak allocated/reserved, CPU RSS; null + reason if absent
    timing = time_calls(fn, repeats=5, warmup=2, device="cuda")   # median of synchronized repeats
    record = throughput_for_run(run_dir, metrics_json, out_json, bench)  # train / score / generate tok/s of a run

The scaling of one mixing layer with the sequence length, with its floors, is sdgm/scaling.py.

Rules every number here follows:
- Timing: `warmup` untimed calls, then `repeats` timed calls, each between two device synchronizations
  (torch.cuda.synchronize on CUDA); the median is reported, with every raw time beside it. The clock is
  injectable (tests use a fake one).
- A value that cannot be measured is null with its reason in the record's "na" dict, never 0.
- Every record carries provenance (git commit, device, driver, torch, CUDA) and a hash of its settings.

Everything is written against sdgm.interface.LanguageModel only; no model is named here.
"""
from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import resource
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .provenance import config_hash, provenance

SCHEMA_VERSION = 1

# ---- device peaks for MFU ------------------------------------------------------------------------------------
# Dense (no structured sparsity) tensor-core peaks from NVIDIA's data sheets, FLOP/s, by compute dtype. "fp32" is
# the non-tensor-core FP32 peak (PyTorch does not use TF32 for matmuls unless asked). Matched on the name
# torch.cuda.get_device_name reports; a device not listed gets no MFU (null with the reason), never a guess.
PEAK_FLOPS: list[tuple[str, str, dict[str, float]]] = [
    # (regex on the device name, what it is, {dtype: FLOP/s})
    (r"H200(?!.*NVL)", "H200 SXM", {"bf16": 989e12, "fp32": 67e12}),
    (r"H100.*(SXM|HBM3)", "H100 SXM", {"bf16": 989e12, "fp32": 67e12}),
    (r"H100.*PCIe", "H100 PCIe", {"bf16": 756e12, "fp32": 51e12}),
    (r"A100", "A100", {"bf16": 312e12, "fp32": 19.5e12}),
]


def peak_flops(device: torch.device | str, dtype: str) -> tuple[float | None, str | None]:
    """(peak FLOP/s, None) or (None, reason) for `device` computing in `dtype` ("bf16" | "fp32")."""
    device = torch.device(device)
    if device.type != "cuda":
        return None, "no known peak for this CPU"
    return match_peak_flops(torch.cuda.get_device_name(device), dtype)


def match_peak_flops(name: str, dtype: str) -> tuple[float | None, str | None]:
    """PEAK_FLOPS looked up by device name."""
    for pattern, _, peaks in PEAK_FLOPS:
        if re.search(pattern, name):
            if dtype in peaks:
                return peaks[dtype], None
            return None, f"no known {dtype} peak for {name}"
    return None, f"no known peak for {name}"


def mfu(flops_per_token: float | None, tokens_per_s: float | None, peak: float | None) -> float | None:
    if flops_per_token is None or tokens_per_s is None or peak is None:
        return None
    return flops_per_token * tokens_per_s / peak


# ---- memory and energy sampler ---------------------------------------------------------------------------------
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


GPU_FIELDS = ("process_gpu_mem_peak_bytes", "device_mem_used_peak_bytes", "device_mem_total_bytes",
              "power_mean_w", "power_max_w", "energy_j", "torch_max_memory_allocated_bytes",
              "torch_max_memory_reserved_bytes")


def _nvml_handle(nvml, device: torch.device):
    """NVML handle of the CUDA device torch calls `device` (CUDA_VISIBLE_DEVICES may renumber devices)."""
    index = device.index if device.index is not None else (torch.cuda.current_device() if torch.cuda.is_available() else 0)
    try:
        uuid = str(torch.cuda.get_device_properties(index).uuid)
        for candidate in (uuid, f"GPU-{uuid}"):
            try:
                return nvml.nvmlDeviceGetHandleByUUID(candidate)
            except nvml.NVMLError:
                pass
    except (AttributeError, RuntimeError, AssertionError):
        pass
    if not os.environ.get("CUDA_VISIBLE_DEVICES"):
        return nvml.nvmlDeviceGetHandleByIndex(index)
    raise RuntimeError(f"cannot map cuda:{index} to an NVML device (CUDA_VISIBLE_DEVICES is set, UUID lookup failed)")


class NvmlSampler:
    """Samples memory and power in a background thread while the block runs; `result()` is a JSON-able dict.

    On a CUDA device with NVML: this process's GPU memory (nvmlDeviceGetComputeRunningProcesses, matched on
    os.getpid()), the device's used memory, power draw, and energy (the device's total-energy counter where the
    GPU has one, else power samples integrated by the trapezoid rule; "energy_source" says which). Power and
    energy are device-wide: other processes on the same GPU count too. Always: torch's peak allocated/reserved
    bytes (CUDA), and the CPU resident set size sampled over the block. Whatever cannot be had is null with
    the reason in result()["na"]; the sampler itself never raises for a missing GPU, driver or NVML.
    """

    def __init__(self, device: torch.device | str = "cpu", interval_s: float = 0.05, clock: Callable[[], float] = time.monotonic):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s}")
        self.device = torch.device(device)
        self.interval_s = interval_s
        self.clock = clock
        self._result: dict | None = None

    # -- lifecycle --
    def __enter__(self) -> "NvmlSampler":
        self.na: dict[str, str] = {}
        self._nvml = self._handle = None
        self._proc_peak = self._dev_peak = self._dev_total = None
        self._power: list[tuple[float, float]] = []  # (time s, watts)
        self._pid_seen = False
        self._energy0 = self._energy_error = None
        self._rss_peak = None
        self._n = 0
        self._lock = threading.Lock()
        self._cuda = self.device.type == "cuda" and torch.cuda.is_available()
        if self.device.type != "cuda":
            for f in GPU_FIELDS:
                self.na[f] = f"measured on {self.device.type}: no GPU in use"
        else:
            if self._cuda:
                torch.cuda.synchronize(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
            else:
                for f in GPU_FIELDS[6:]:
                    self.na[f] = "no CUDA device available to torch (torch.cuda.is_available() is False)"
            self._start_nvml()
        self._load0 = load_average()
        self._t0 = self.clock()
        self._sample()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> bool:
        if self._cuda:
            torch.cuda.synchronize(self.device)
        self._stop.set()
        self._thread.join()
        self._sample()
        self._t1 = self.clock()
        self._result = self._finish()
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._nvml.nvmlShutdown()
        return False

    def _start_nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
        except Exception as e:  # no library, no driver, no permission: say which
            for f in GPU_FIELDS[:6]:
                self.na[f] = f"NVML unavailable ({type(e).__name__}: {e})"
            return
        self._nvml = pynvml
        try:
            self._handle = _nvml_handle(pynvml, self.device)
        except Exception as e:
            for f in GPU_FIELDS[:6]:
                self.na[f] = f"no NVML handle for {self.device} ({type(e).__name__}: {e})"
            return
        try:
            self._dev_total = int(pynvml.nvmlDeviceGetMemoryInfo(self._handle).total)
        except Exception as e:
            self.na["device_mem_total_bytes"] = f"nvmlDeviceGetMemoryInfo failed ({type(e).__name__}: {e})"
        try:
            self._energy0 = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)  # mJ since driver load
        except Exception as e:
            self._energy_error = f"{type(e).__name__}: {e}"

    # -- sampling --
    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _note(self, field: str, reason: str) -> None:
        self.na.setdefault(field, reason)

    def _sample(self) -> None:
        with self._lock:
            self._n += 1
            rss = current_rss_bytes()
            if rss is not None:
                self._rss_peak = rss if self._rss_peak is None else max(self._rss_peak, rss)
            if self._handle is None:
                return
            nv, h = self._nvml, self._handle
            try:
                for p in nv.nvmlDeviceGetComputeRunningProcesses(h):
                    if p.pid == os.getpid():
                        self._pid_seen = True
                        used = getattr(p, "usedGpuMemory", None)
                        if used is None:
                            self._note("process_gpu_mem_peak_bytes", "NVML does not report per-process memory here")
                        else:
                            self._proc_peak = used if self._proc_peak is None else max(self._proc_peak, used)
            except Exception as e:
                self._note("process_gpu_mem_peak_bytes", f"nvmlDeviceGetComputeRunningProcesses failed ({type(e).__name__}: {e})")
            try:
                used = int(nv.nvmlDeviceGetMemoryInfo(h).used)
                self._dev_peak = used if self._dev_peak is None else max(self._dev_peak, used)
            except Exception as e:
                self._note("device_mem_used_peak_bytes", f"nvmlDeviceGetMemoryInfo failed ({type(e).__name__}: {e})")
            try:
                self._power.append((self.clock(), nv.nvmlDeviceGetPowerUsage(h) / 1000.0))  # mW -> W
            except Exception as e:
                self._note("power_mean_w", f"nvmlDeviceGetPowerUsage failed ({type(e).__name__}: {e})")

    # -- summary --
    def _finish(self) -> dict:
        na = self.na
        out: dict = {"device": str(self.device), "interval_s": self.interval_s,
                     "duration_s": self._t1 - self._t0, "n_samples": self._n,
                     "load_average_start": self._load0, "load_average_end": load_average()}
        out["cpu_rss_peak_bytes"] = self._rss_peak
        if self._rss_peak is None:
            na["cpu_rss_peak_bytes"] = "no /proc/self/statm on this platform"
        out["cpu_maxrss_lifetime_bytes"] = peak_rss_bytes()
        out["process_gpu_mem_peak_bytes"] = self._proc_peak
        if self._handle is not None and self._proc_peak is None:
            self._note("process_gpu_mem_peak_bytes", f"this process (pid {os.getpid()}) is not among NVML's compute "
                       "processes on the device (e.g. a container with its own PID namespace)"
                       if not self._pid_seen else "NVML reported no memory for this process")
        out["device_mem_used_peak_bytes"] = self._dev_peak
        out["device_mem_total_bytes"] = self._dev_total
        watts = [w for _, w in self._power]
        out["power_mean_w"] = statistics.fmean(watts) if watts else None
        out["power_max_w"] = max(watts) if watts else None
        if self._handle is not None and not watts:
            self._note("power_mean_w", "no power sample")
        if out["power_max_w"] is None and "power_mean_w" in na:
            na.setdefault("power_max_w", na["power_mean_w"])
        out["energy_j"], out["energy_source"] = None, None
        if self._handle is not None:
            e1 = None
            if self._energy0 is not None:
                try:
                    e1 = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
                except Exception as e:
                    self._energy_error = f"{type(e).__name__}: {e}"
            if e1 is not None:
                out["energy_j"] = (e1 - self._energy0) / 1000.0
                out["energy_source"] = "nvmlDeviceGetTotalEnergyConsumption (device-wide counter)"
            elif len(self._power) >= 2:
                t, w = np.array([p[0] for p in self._power]), np.array(watts)
                out["energy_j"] = float(np.sum((w[1:] + w[:-1]) / 2 * np.diff(t)))
                out["energy_source"] = (f"integrated from power samples (device-wide, trapezoid rule, interval "
                                        f"{self.interval_s} s; no energy counter: {self._energy_error})")
            else:
                self._note("energy_j", "no energy counter and fewer than 2 power samples")
        if self._cuda:
            out["torch_max_memory_allocated_bytes"] = torch.cuda.max_memory_allocated(self.device)
            out["torch_max_memory_reserved_bytes"] = torch.cuda.max_memory_reserved(self.device)
        else:
            out["torch_max_memory_allocated_bytes"] = out["torch_max_memory_reserved_bytes"] = None
        for f in GPU_FIELDS:
            if out[f] is not None:
                na.pop(f, None)
            else:
                na.setdefault(f, "not measured")
        out["na"] = dict(sorted(na.items()))
        return out

    def result(self) -> dict:
        if self._result is None:
            raise RuntimeError("NvmlSampler.result() is available after the with-block ends")
        return self._result


# ---- timing ------------------------------------------------------------------------------------------------------
def synchronize(device: torch.device | str) -> None:
    """Wait for queued device work (CUDA kernels run asynchronously); nothing to wait for on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], *, repeats: int, warmup: int, device: torch.device | str = "cpu",
               clock: Callable[[], float] = time.perf_counter, timed_context=None) -> dict:
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
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "times_s": times, "repeats": repeats, "warmup": warmup}


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


# ---- throughput of a trained model -------------------------------------------------------------------------------
def _flops(model) -> tuple[float | None, str | None]:
    try:
        return float(model.flops_per_token()), None
    except NotImplementedError:
        return None, f"{type(model).__name__} does not implement flops_per_token"


def measure_throughput(model, train_cfg, *, repeats: int = 5, warmup: int = 2, score_batch_size: int = 32,
                       generate_new_tokens: int = 256, generate_batch_sizes=(1, 32), sampler_interval_s: float = 0.05,
                       energy_min_s: float = 2.0, seed: int = 0,
                       clock: Callable[[], float] = time.perf_counter) -> dict:
    """Tokens/s of `model` (any LanguageModel) three ways, on the device and precision `train_cfg` trains with.

    train:    forward + backward + optimizer step on (batch_size, seq_len), the trainer's optimizer and clipping
    score:    next-token NLL of (score_batch_size, seq_len), no gradients
    generate: sdgm.generate.sample_autoregressive from a 1-token prompt, `generate_new_tokens` new tokens per
              sequence, at each batch size in `generate_batch_sizes`
    Inputs are random token ids: the cost of these models does not depend on the ids.
    Energy comes from a separate window of at least `energy_min_s` seconds of back-to-back calls (see
    energy_per_token): NVML's energy counter advances in steps too coarse for a few timed calls.
    """
    from .generate import sample_autoregressive
    from .train import autocast_dtype, make_optimizer, resolve_device

    device = resolve_device(train_cfg.device)
    amp = autocast_dtype(train_cfg, device)
    dtype_name = "bf16" if amp == torch.bfloat16 else "fp32"
    peak, peak_na = peak_flops(device, dtype_name)
    fpt, fpt_na = _flops(model)
    model = model.to(device)
    V, L, B = _vocab_size(model), train_cfg.seq_len, train_cfg.batch_size
    g = torch.Generator().manual_seed(seed)

    def ids(b: int, n: int) -> torch.Tensor:
        return torch.randint(0, V, (b, n), generator=g).to(device)

    def autocast():
        return torch.autocast(device.type, dtype=amp, enabled=amp is not None)

    modes: dict[str, dict] = {}

    def run(name: str, fn, tokens: int, flops_factor: float, extra: dict) -> None:
        sampler = NvmlSampler(device, sampler_interval_s)
        na: dict[str, str] = {}
        error = None
        try:
            timing = time_calls(fn, repeats=repeats, warmup=warmup, device=device, clock=clock, timed_context=sampler)
        except Exception as e:
            if not is_oom(e):
                raise
            error = str(e).splitlines()[0][:500]
        if error is not None:  # outside the except block: the traceback no longer pins the failed call's tensors
            free_memory(device)
            modes[name] = {**extra, "status": "oom", "error": error, "tokens_per_s": None,
                           "na": {"tokens_per_s": f"out of memory: {error}"}}
            return
        tok_s = tokens_per_second(tokens, timing)
        mem = sampler.result()
        model_flops = None if fpt is None else flops_factor * fpt
        rec = {**extra, "status": "ok", "tokens_per_call": tokens, "timing": timing, "tokens_per_s": tok_s,
               "model_flops_per_token": model_flops, "achieved_flops_per_s": None if model_flops is None else model_flops * tok_s,
               "peak_flops_per_s": peak, "mfu": mfu(model_flops, tok_s, peak), "memory": mem}
        if model_flops is None:
            na["model_flops_per_token"] = na["achieved_flops_per_s"] = fpt_na
        if peak is None:
            na["peak_flops_per_s"] = peak_na
        if rec["mfu"] is None:
            na["mfu"] = fpt_na or peak_na
        if mem["energy_j"] is None:  # no NVML or no counter: skip the energy window
            rec["energy_j_per_token"], na["energy_j_per_token"] = None, mem["na"].get("energy_j", "not measured")
        else:
            rec["energy"] = energy_window(fn, tokens)
            rec["energy_j_per_token"], why = energy_per_token(**rec["energy"], tokens_per_call=tokens)
            if why:
                na["energy_j_per_token"] = why
        rec["na"] = na
        modes[name] = rec

    def energy_window(fn, tokens: int) -> dict:
        sampler = NvmlSampler(device, sampler_interval_s)
        calls, t0 = 0, clock()
        with sampler:
            while calls == 0 or clock() - t0 < energy_min_s:
                fn()
                synchronize(device)
                calls += 1
        mem = sampler.result()
        return {"energy_j": mem["energy_j"], "energy_source": mem["energy_source"], "calls": calls,
                "window_s": clock() - t0, "power_mean_w": mem.get("power_mean_w")}

    def train_mode():  # the training step as the trainer takes it; the optimizer state dies with this scope
        model.train()
        opt = make_optimizer(model, train_cfg, device)
        loss_fn = torch.compile(model.training_loss) if train_cfg.compile else model.training_loss
        x, y = ids(B, L), ids(B, L)

        def train_step():
            with autocast():
                loss, _ = loss_fn(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if train_cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
            opt.step()

        run("train", train_step, B * L, 3.0, {"batch_size": B, "seq_len": L,
                                              "what": "forward + backward + optimizer step (model FLOPs = 3 x forward)"})
        opt.zero_grad(set_to_none=True)

    train_mode()
    free_memory(device)

    model.eval()
    xs, ys = ids(score_batch_size, L), ids(score_batch_size, L)

    @torch.no_grad()
    def score():
        with autocast():
            logits = model(xs)
        return F.cross_entropy(logits.flatten(0, 1).float(), ys.flatten())

    run("score", score, score_batch_size * L, 1.0, {"batch_size": score_batch_size, "seq_len": L,
                                                    "what": "forward + next-token NLL, no gradients"})

    for b in generate_batch_sizes:
        prompt = ids(b, 1)

        def generate(prompt=prompt):
            with autocast():
                return sample_autoregressive(model, prompt, generate_new_tokens, temperature=1.0, seed=seed)

        run(f"generate_b{b}", generate, b * generate_new_tokens, 1.0,
            {"batch_size": b, "prompt_tokens": 1, "new_tokens": generate_new_tokens,
             "what": "sample_autoregressive (decode_step per token, multinomial sampling at temperature 1)"})
    return {"device": str(device), "precision": dtype_name, "modes": modes,
            "incremental_decoding": bool(getattr(model, "incremental_decoding", False))}


def energy_per_token(energy_j: float | None, calls: int, window_s: float, tokens_per_call: int,
                     **_) -> tuple[float | None, str | None]:
    """Joules per token of an energy window of `calls` back-to-back calls, or None and the reason.

    A counter that did not advance is no measurement of zero energy: NVML's total-energy counter is updated at
    intervals of tens of milliseconds, so a short window can read 0 J (seen on an H100 with 27 ms of timed calls).
    """
    if energy_j is None:
        return None, "no energy reading"
    if energy_j <= 0:
        return None, f"the energy counter did not advance during {window_s:.3f} s ({calls} calls); lengthen energy_min_s"
    return energy_j / (calls * tokens_per_call), None


def _vocab_size(model) -> int:
    cfg = getattr(model, "cfg", None)
    if cfg is None or not hasattr(cfg, "vocab_size"):
        raise TypeError(f"{type(model).__name__} has no cfg.vocab_size")
    return int(cfg.vocab_size)


SUMMARY = [  # (metrics key, mode, field in the mode's record)
    ("train_tokens_per_s", "train", "tokens_per_s"),
    ("score_tokens_per_s", "score", "tokens_per_s"),
    ("mfu_train", "train", "mfu"),
    ("mfu_score", "score", "mfu"),
    ("energy_j_per_token_train", "train", "energy_j_per_token"),
]


def throughput_for_run(run_dir: str | Path, metrics_path: str | Path, out_path: str | Path, bench: dict) -> dict:
    """Throughput record of one finished run (its run directory and metrics.json), written to out_path."""
    from .atomic import write_json_atomic
    from .registry import load_run
    from .train import TrainConfig, resolve_device

    run_dir = Path(run_dir)
    run = json.loads(Path(metrics_path).read_text())
    model, _ = load_run(run_dir)
    tcfg = TrainConfig(**run["train_config"])
    tp = bench["throughput"]
    settings = {"repeats": bench["repeats"], "warmup": bench["warmup"], "sampler_interval_s": bench["sampler_interval_s"],
                "energy_min_s": bench["energy_min_s"],
                "score_batch_size": tp["score_batch_size"], "generate_new_tokens": tp["generate_new_tokens"],
                "generate_batch_sizes": list(tp["generate_batch_sizes"])}
    torch.manual_seed(run["seed"])
    res = measure_throughput(model, tcfg, repeats=settings["repeats"], warmup=settings["warmup"],
                             score_batch_size=settings["score_batch_size"],
                             generate_new_tokens=settings["generate_new_tokens"],
                             generate_batch_sizes=settings["generate_batch_sizes"],
                             sampler_interval_s=settings["sampler_interval_s"],
                             energy_min_s=settings["energy_min_s"], seed=run["seed"])
    fpt, fpt_na = _flops(model)
    metrics, na = {"params": model.num_params(), "flops_per_token": fpt}, {}
    if fpt is None:
        na["flops_per_token"] = fpt_na
    for key, mode, field in SUMMARY + [(f"generate_b{b}_tokens_per_s", f"generate_b{b}", "tokens_per_s")
                                       for b in settings["generate_batch_sizes"]]:
        m = res["modes"][mode]
        metrics[key] = m.get(field)
        if metrics[key] is None:
            na[key] = m["na"].get(field) or ("out of memory" if m["status"] == "oom" else "not measured")
    train_mem = res["modes"]["train"].get("memory", {})
    for key, field in (("train_peak_gpu_mem_bytes", "torch_max_memory_allocated_bytes"),
                       ("train_peak_rss_bytes", "cpu_rss_peak_bytes")):
        metrics[key] = train_mem.get(field)
        if metrics[key] is None:
            na[key] = train_mem.get("na", {}).get(field, "out of memory")
    device = resolve_device(tcfg.device)
    record = {
        "schema": SCHEMA_VERSION, "kind": "throughput",
        "run_id": run["run_id"], "experiment": run["experiment"], "model": run["model"], "corpus": run["corpus"],
        "seed": run["seed"], "run_fingerprint": run["fingerprint"],
        "settings": settings, "config_hash": config_hash({"settings": settings, "run": run["fingerprint"]}),
        "provenance": provenance(device),
        "device": res["device"], "precision": res["precision"], "incremental_decoding": res["incremental_decoding"],
        "metrics": metrics, "na": na, "modes": res["modes"],
    }
    record = json.loads(json.dumps(record))
    write_json_atomic(out_path, record)
    return record
