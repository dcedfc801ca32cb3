"""How one token-mixing layer scales with the sequence length L, beside what the hardware must do at least.

    rates  = device_rates("cuda")                     # tensor-core FLOP/s, sines/s, bytes/s, measured once
    record = scaling_benchmark(lengths=[128, ..., 65536], tokens_per_batch=65536,
                               batch_lengths=[1024, ..., 1048576], batch_size=1)

Two views: "tokens" keeps B * L = tokens_per_batch (the training regime: B = tokens / L), "batch" keeps
B = batch_size and grows L (long-context inference and training). Layers: SDGM's encoder + spectral decoder in
each implementation of sdgm/spectral/ops/ (naive, chunked, triton), GPT-2's causal attention (flash
attention where the device has it) and the causal Linformer attention, each exactly as its baseline trains it, all
with their projections.

Every measured case carries its floor: the time the device needs at least for the case's arithmetic, from the
measured rates -- max(FLOPs / matmul rate, elementwise FLOPs / vector rate, sines / sine rate, bytes / bandwidth)
-- and measured / floor.
Log-log slopes of time per sequence and of peak memory against L are fitted per view, layer and mode.
Timing and memory follow sdgm.common.timing (warmup, synchronized repeats, median; allocator peak above the inputs).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ...common.timing import (CPU_MEMORY_METHOD, CUDA_MEMORY_METHOD, free_memory, is_oom, load_average,
                              peak_call_memory, time_calls)
from ...spectral.ops.dispatch import ALGORITHMS, rotation_status, spectral_cost, triton_status
from ...harness.provenance import config_hash, provenance

SCHEMA_VERSION = 2
MODES = ("forward", "forward_backward")
VIEWS = ("tokens", "batch")
SDGM_DECODERS = ("naive", "chunked", "rotation", "triton")


# ---- the layers ------------------------------------------------------------------------------------------------
def _io_bytes(B: int, L: int, D: int, mode: str, bpv: int) -> int:
    """Least memory traffic of a layer (B, L, D) -> (B, L, D): input and output, and in backward their gradients
    and the input again."""
    return bpv * B * L * D * (2 if mode == "forward" else 5)


class CausalAttentionLayer(nn.Module):
    """GPT-2's attention layer, the one the GPT-2 baseline trains with (baselines.gpt2.GPT2Attention: QKV
    projection, causal scaled_dot_product_attention, output projection); `flash_only` pins SDPA's flash kernel."""

    def __init__(self, d_model: int, n_heads: int, seq_len: int, flash_only: bool = False):
        super().__init__()
        from baselines.gpt2 import GPT2Attention

        self.d_model = d_model
        self.layer = GPT2Attention(d_model, n_heads, seq_len)
        self.flash_only = flash_only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = contextlib.nullcontext()
        if self.flash_only:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            ctx = sdpa_kernel([SDPBackend.FLASH_ATTENTION])
        with ctx:
            return self.layer(x)  # (B, L, D)

    def cost(self, B: int, L: int, mode: str, bpv: int) -> dict:
        D = self.d_model
        proj = 2 * B * L * D * 4 * D  # QKV and output projections
        attn = 2 * B * L * L * D  # QK^T and PV over the causal half: 2 x (2 L^2 D / 2)
        k = 1 if mode == "forward" else 3
        return {"flops": k * (proj + attn), "sines": 0, "bytes": _io_bytes(B, L, D, mode, bpv)}


class LinformerLayer(nn.Module):
    """The causal Linformer attention the Linformer baseline trains with (baselines.linformer
    .CausalLinformerAttention): exact attention inside blocks of b positions, and all earlier blocks seen through
    k projected key/value rows (a prefix sum of each block's projection), so O(L (k + b)) instead of O(L^2)."""

    def __init__(self, d_model: int, n_heads: int, seq_len: int, k: int, block_size: int):
        super().__init__()
        from baselines.linformer import CausalLinformerAttention, LinformerConfig

        self.cfg = LinformerConfig(vocab_size=1, seq_len=seq_len, d_model=d_model, n_layer=1, n_head=n_heads, k=k,
                                   block_size=block_size, dropout=0.0)
        self.layer = CausalLinformerAttention(self.cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)  # (B, L, D)

    def cost(self, B: int, L: int, mode: str, bpv: int) -> dict:
        D, k, b = self.cfg.d_model, self.cfg.k, self.cfg.block_size
        # projections; each block's keys and values projected to k rows; every query against k + b keys and values
        fwd = 2 * B * L * D * 4 * D + 2 * 2 * B * L * k * D + 2 * 2 * B * L * (k + b) * D
        return {"flops": fwd * (1 if mode == "forward" else 3), "sines": 0, "bytes": _io_bytes(B, L, D, mode, bpv)}


class SDGMMixingLayer(nn.Module):
    """SDGM's token mixing with SDGM's own code: causal Conv1D encoder, then the spectral decoder (no embedding, no
    head), by the implementation `decoder` (sdgm/spectral/ops/dispatch.py)."""

    def __init__(self, d_model: int, n_atoms: int, seq_len: int, kernel_size: int, decoder: str = "auto"):
        super().__init__()
        from ...spectral.model import SDGM, SDGMConfig

        self.sdgm = SDGM(SDGMConfig(vocab_size=1, d_model=d_model, n_atoms=n_atoms, seq_len=seq_len,
                                    kernel_size=kernel_size, decoder=decoder))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sdgm.decode(self.sdgm.encode(x))  # (B, L, D)

    def cost(self, B: int, L: int, mode: str, bpv: int) -> dict:
        cfg = self.sdgm.cfg
        D, K = cfg.d_model, cfg.n_atoms
        enc = 2 * B * L * cfg.kernel_size * D * K * (1 if mode == "forward" else 3)
        dec = spectral_cost(B, L, K, D, mode, bpv, ALGORITHMS.get(cfg.decoder, "direct"))  # the algorithm it runs
        x_io = bpv * B * L * D * (1 if mode == "forward" else 2)  # the layer's input, and its gradient
        return {**dec, "flops": enc + dec["flops"], "bytes": dec["bytes"] + x_io}


def flash_attention_available(device: torch.device, dtype: torch.dtype | None) -> tuple[bool, str]:
    """Can scaled_dot_product_attention run its flash kernel here (causal, this device and dtype)?"""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 2, 16, 32, device=device, dtype=dtype or torch.float32)
    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            F.scaled_dot_product_attention(q, q, q, is_causal=True)
        return True, "flash"
    except Exception as e:  # "No available kernel" on devices/dtypes the flash kernel does not cover
        return False, f"default selection (flash unavailable: {str(e).splitlines()[0][:200]})"


def default_layers(d_model: int, n_atoms: int, kernel_size: int, n_heads: int, linformer_k: int, flash: bool,
                   decoders=SDGM_DECODERS, linformer_block_size: int = 32) -> dict[str, Callable[[int], nn.Module]]:
    """name -> factory(L) of the layers compared: SDGM per decoder implementation, attention, Linformer."""
    layers: dict[str, Callable[[int], nn.Module]] = {}
    for dec in decoders:
        def sdgm(L, dec=dec):
            return SDGMMixingLayer(d_model, n_atoms, L, kernel_size, dec)
        sdgm.decoder = dec  # each entry of this layer records it (see spectral_decoder)
        layers[f"sdgm_{dec}"] = sdgm
    layers["attention"] = lambda L: CausalAttentionLayer(d_model, n_heads, L, flash_only=flash)
    layers["linformer"] = lambda L: LinformerLayer(d_model, n_heads, L, linformer_k, linformer_block_size)
    return layers


def spectral_decoder(factory) -> str | None:
    """The SDGM decoder implementation a layer factory times (its entries are compared with attention), or None."""
    return getattr(factory, "decoder", None)


def unavailable_layers(layers: dict, device: torch.device) -> dict[str, str]:
    """name -> why the layer is not measured on this device (the Triton decoder times only on CUDA, the rotation
    decoder only on a CPU)."""
    out = {}
    for name, factory in layers.items():
        decoder = spectral_decoder(factory)
        if decoder == "triton":
            ok, why = triton_status(device)
            if device.type != "cuda" or not ok:
                out[name] = why if not ok and device.type == "cuda" else (
                    "the Triton kernels are timed on CUDA devices only (on a CPU they run in Triton's interpreter, "
                    "which is for tests)")
        elif decoder == "rotation":
            ok, why = rotation_status(device)
            if not ok:
                out[name] = why
    return out


# ---- what the device can do: measured once per benchmark ------------------------------------------------------------
def _median_rate(fn, work: float, device, repeats: int = 5, warmup: int = 2) -> float:
    return work / time_calls(fn, repeats=repeats, warmup=warmup, device=device)["median_s"]


def device_rates(device: torch.device | str, dtype: torch.dtype = torch.float32) -> dict:
    """Measured peak-ish rates of `device`: matmul FLOP/s in `dtype`, sines/s, copy bytes/s, with the method.

    matmul: an n x n product (n = 8192 on CUDA, 1024 on CPU). sines: on CUDA a Triton kernel of independent chains
    of hardware sines in registers (the special-function unit's rate); elsewhere torch.sin over a cache-resident
    buffer (the library sine). bandwidth: a copy of a buffer far larger than the caches, read + write bytes.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    n = 8192 if cuda else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    rates = {"matmul_flops_per_s": _median_rate(lambda: a @ a, 2 * n ** 3, device), "matmul_dtype": str(dtype)}
    if cuda and triton_status(device)[0]:
        from ...spectral.ops.rotation_triton import hardware_sine_rate, vector_flops_rate

        rates["sines_per_s"], rates["sine_method"] = hardware_sine_rate(device), "Triton kernel, hardware sine"
        rates["vector_flops_per_s"] = vector_flops_rate(device)
        rates["vector_method"] = "Triton kernel, independent fp32 multiply-add chains in registers"
    else:
        # a CPU's matrix product runs on the same vector multiply-add units as elementwise arithmetic
        rates["vector_flops_per_s"] = rates["matmul_flops_per_s"]
        rates["vector_method"] = "the matmul's rate (a CPU multiplies matrices on its vector units)"
        x = torch.rand(1 << 20, device=device)
        y = torch.empty_like(x)
        rates["sines_per_s"] = _median_rate(lambda: torch.sin(x, out=y), x.numel(), device, repeats=21)
        rates["sine_method"] = "torch.sin over a 4 MiB buffer"
    m = (1 << 28 if cuda else 1 << 24) // 4  # fp32 values: 256 MiB on CUDA, 16 MiB on a CPU
    src = torch.empty(m, device=device)
    dst = torch.empty_like(src)
    rates["bytes_per_s"] = _median_rate(lambda: dst.copy_(src), 2 * 4 * m, device)
    rates["bandwidth_method"] = f"copy of {4 * m >> 20} MiB, read + write"
    return rates


def floor_of(cost: dict, rates: dict) -> dict:
    """{time_s, bound, parts}: the least time of `cost` at `rates`, and which part bounds it."""
    parts = {"flops": cost["flops"] / rates["matmul_flops_per_s"], "sines": cost["sines"] / rates["sines_per_s"],
             "bytes": cost["bytes"] / rates["bytes_per_s"]}
    if cost.get("vector_flops"):  # elementwise arithmetic (the rotation decoder's): the vector rate, else the matmul's
        parts["vector_flops"] = cost["vector_flops"] / rates.get("vector_flops_per_s", rates["matmul_flops_per_s"])
    bound = max(parts, key=parts.get)
    return {**cost, "time_s": parts[bound], "bound": bound, "parts_s": parts}


# ---- the benchmark ------------------------------------------------------------------------------------------------
def available_host_memory() -> int | None:
    """MemAvailable of /proc/meminfo in bytes (Linux), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def predicted_peak(history: list[tuple[int, int, int]], L: int, B: int) -> tuple[int, str] | None:
    """Peak memory of a layer at (L, B) extrapolated from its measured (L, B, peak) points in one view and mode,
    as peak ~ B * L**e: e from the last two points, clamped to [1, 2]; from one point e = 2 (the worst a layer here
    does). None without points."""
    guess = extrapolate(history, L, B)
    return None if guess is None else (int(guess[0]), guess[1])


def extrapolate(history: list[tuple[int, int, float]], L: int, B: int) -> tuple[float, str] | None:
    """A cost at (L, B) from measured (L, B, cost) points (L ascending) as cost ~ B * L**e: e from the last two
    points, clamped to [1, 2]; from one point e = 2. None without points."""
    if not history:
        return None
    L2, B2, p2 = history[-1]
    e, how = 2.0, f"quadratic in L from L = {L2:,}"
    if len(history) > 1 and history[-2][2] > 0 and L2 > history[-2][0]:
        L1, B1, p1 = history[-2]
        e = min(2.0, max(1.0, float(np.log((p2 / B2) / (p1 / B1)) / np.log(L2 / L1))))
        how = f"B * L^{e:.2f} from L = {L1:,} and {L2:,}"
    return p2 * (B / B2) * (L / L2) ** e, how


def fit_loglog_slope(lengths, values, min_length: int = 0) -> dict:
    """Least-squares fit log(value) = slope * log(L) + c over the points with L >= min_length (numpy lstsq)."""
    pts = [(L, t) for L, t in zip(lengths, values) if L >= min_length and t is not None and t > 0]
    if len(pts) < 2:
        return {"slope": None, "intercept": None, "n_points": len(pts), "min_length": min_length,
                "na": {"slope": f"fewer than 2 measured lengths >= {min_length}"}}
    x = np.log([p[0] for p in pts])
    y = np.log([p[1] for p in pts])
    A = np.stack([x, np.ones_like(x)], axis=1)
    (slope, intercept), *_ = np.linalg.lstsq(A, y, rcond=None)
    resid = y - (slope * x + intercept)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid ** 2)) / ss_tot if ss_tot > 0 else None
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2, "n_points": len(pts),
            "min_length": min_length, "lengths": [int(p[0]) for p in pts]}


def scaling_benchmark(lengths, tokens_per_batch: int, *, batch_lengths=(), batch_size: int = 1, d_model: int = 512,
                      n_atoms: int = 256, kernel_size: int = 3, n_heads: int = 8, linformer_k: int = 256,
                      linformer_block_size: int = 32, decoders=SDGM_DECODERS, repeats: int = 3, warmup: int = 1, slope_min_length: int = 0,
                      device: str = "auto", precision: str = "auto",
                      layers: dict[str, Callable[[int], nn.Module]] | None = None, memory_cap_bytes: int | None = None,
                      rates: dict | None = None, clock: Callable[[], float] = time.perf_counter, seed: int = 0,
                      log=print, deadline: float | None = None,
                      on_case: Callable[[dict], None] | None = None) -> dict:
    """Time, peak memory and floor of one token-mixing layer per model, in both views (see the module docstring).

    forward: inference (no gradients); forward_backward: forward, then backward of the output's sum into the
    parameters and the input. An out-of-memory is recorded as {"status": "oom"} and the next case runs; the
    lengths of a layer after its first OOM in a view and mode are recorded as skipped (they would not fit either).
    `memory_cap_bytes` caps the memory a case may use: on CUDA through
    torch.cuda.set_per_process_memory_fraction (the allocator itself refuses), on CPU by comparing the measured
    peak of the case with the cap before it is timed (recorded as oom, with the reason).
    `layers` replaces the default layers (name -> factory(L) -> module mapping (B, L, D) to (B, L, D); a module
    with a cost(B, L, mode, bytes_per_value) method gets a floor). `rates` replaces the measured device rates.
    `deadline` (a time.monotonic() value): the cases of both views run shortest L first, and a case predicted not
    to finish before it (or any once it has passed) is recorded as skipped with the prediction; the record says
    "complete": false. `on_case(record)` gets the record so far after every case (to write it at once).
    """
    from ...harness.train import TrainConfig, autocast_dtype, resolve_device

    dev = resolve_device(device)
    amp = autocast_dtype(TrainConfig(precision=precision), dev)
    flash, backend = flash_attention_available(dev, amp)
    if layers is None:
        layers = default_layers(d_model, n_atoms, kernel_size, n_heads, linformer_k, flash, decoders,
                                linformer_block_size)
    skipped_layers = unavailable_layers(layers, dev)
    lengths = sorted(int(L) for L in lengths)
    batch_lengths = sorted(int(L) for L in batch_lengths)
    bpv = 2 if amp is not None else 4
    settings = {"lengths": lengths, "tokens_per_batch": tokens_per_batch, "batch_lengths": batch_lengths,
                "batch_size": batch_size, "d_model": d_model, "n_atoms": n_atoms, "kernel_size": kernel_size,
                "n_heads": n_heads, "linformer_k": linformer_k,
                "linformer_block_size": linformer_block_size, "repeats": repeats, "warmup": warmup,
                "slope_min_length": slope_min_length, "precision": "bf16" if amp else "fp32",
                "memory_cap_bytes": memory_cap_bytes, "models": list(layers)}
    if rates is None:
        rates = device_rates(dev, amp or torch.float32)
    log("device rates: " + ", ".join(f"{k} {v:.3g}" for k, v in rates.items() if isinstance(v, float)))
    cap_fraction = None
    if memory_cap_bytes is not None and dev.type == "cuda":
        total = torch.cuda.get_device_properties(dev).total_memory
        cap_fraction = min(1.0, memory_cap_bytes / total)
        torch.cuda.set_per_process_memory_fraction(cap_fraction, dev)

    def autocast():
        return torch.autocast(dev.type, dtype=amp, enabled=amp is not None)

    cases = [("tokens", L, tokens_per_batch // L) for L in lengths] + [("batch", L, batch_size) for L in batch_lengths]
    if deadline is not None:  # under a budget the longest cases come last, whatever their view
        cases.sort(key=lambda c: c[1])
    results, failed, peaks, walls = [], set(), {}, {}
    load_start, prov = load_average(), provenance(dev)

    def record_of(results: list[dict], complete: bool) -> dict:
        return _record(results, complete, layers, settings, dev, prov, backend, rates, load_start,
                       tokens_per_batch, batch_size)

    try:
        for view, L, B in cases:  # every model at one L before the next L: slow drifts of the machine hit all alike
            for name, factory in layers.items():
                for mode in MODES:
                    entry = {"view": view, "model": name, "L": L, "B": B, "mode": mode,
                             "spectral_decoder": spectral_decoder(factory)}
                    over = None if deadline is None else _past_budget(_walls_of(walls, name, mode), L, B, deadline)
                    if name in skipped_layers:
                        entry.update({"status": "skipped", "reason": skipped_layers[name]})
                    elif B < 1:
                        entry.update({"status": "skipped", "reason": f"tokens_per_batch {tokens_per_batch} < L"})
                    elif (view, name, mode) in failed:
                        entry.update({"status": "skipped", "reason": "out of memory at a shorter length"})
                    elif over is not None:
                        entry.update({"status": "skipped", "reason": over})
                    elif (why := _beyond_host_memory(dev, peaks.get((view, name, mode), []), L, B)) is not None:
                        # a CPU has no allocator that refuses: a case past the memory would get the process killed
                        entry.update({"status": "oom", "error": why, "predicted": True})
                        failed.add((view, name, mode))
                    else:
                        t_case = time.monotonic()
                        try:
                            entry.update(_case(factory, L, B, d_model, mode, dev, autocast, repeats, warmup,
                                               memory_cap_bytes, clock, seed, rates, bpv))
                            entry["case_s"] = time.monotonic() - t_case  # building, warmup, memory, timed calls
                            walls.setdefault((name, mode), []).append((L, B, entry["case_s"]))
                        except Exception as e:
                            if not is_oom(e):
                                raise
                            entry.update({"status": "oom", "error": str(e).splitlines()[0][:500]})
                            failed.add((view, name, mode))
                        free_memory(dev)
                    if entry.get("peak_mem_bytes"):
                        peaks.setdefault((view, name, mode), []).append((L, B, entry["peak_mem_bytes"]))
                    results.append(entry)
                    ok = entry["status"] == "ok"
                    log(f"scaling {view:6s} {name:12s} L={L:8d} B={B:5d} {mode:16s} {entry['status']:7s} "
                        + (f"{entry['time_per_batch_s'] * 1e3:10.3f} ms/batch" if ok else "")
                        + (f"  {entry['over_floor']:7.1f}x floor ({entry['floor']['bound']})"
                           if ok and entry.get("over_floor") else "")
                        + (f"  ({entry['reason']})" if entry["status"] == "skipped" and over else ""))
                    if on_case is not None:
                        on_case(record_of(results, complete=False))
    finally:
        if cap_fraction is not None:
            torch.cuda.set_per_process_memory_fraction(1.0, dev)
    return record_of(results, complete=not any(
        r["status"] == "skipped" and r["reason"].startswith(BUDGET_SKIP) for r in results))


def _record(results, complete, layers, settings, dev, prov, backend, rates, load_start, tokens_per_batch,
            batch_size) -> dict:
    """The benchmark's record of `results` (so far, or all): slopes and ratios fitted over the finished cases."""
    slopes = {view: {name: {mode: {field: fit_loglog_slope(*_series(results, view, name, mode, key),
                                                          settings["slope_min_length"])
                                   for field, key in (("time", "time_per_sequence_s"), ("memory", "peak_mem_bytes"))}
                            for mode in MODES} for name in layers} for view in VIEWS}
    record = {
        "schema": SCHEMA_VERSION, "kind": "scaling", "complete": complete,
        "settings": settings, "config_hash": config_hash(settings), "provenance": prov,
        "device": str(dev), "attention_backend": backend, "rates": rates,
        "load_average": {"start": load_start, "end": load_average(), "cpu_count": os.cpu_count()},
        "memory_method": CUDA_MEMORY_METHOD if dev.type == "cuda" else CPU_MEMORY_METHOD,
        "notes": {
            "views": f"tokens: B = {tokens_per_batch} // L; batch: B = {batch_size}.",
            "linformer": "the causal Linformer attention the Linformer baseline trains with: exact attention inside "
                         "blocks of linformer_block_size positions, earlier blocks through linformer_k projected "
                         "rows.",
            "attention": "GPT-2's attention layer as the GPT-2 baseline trains it (transformers' GPT2Attention, "
                         "SDPA, causal).",
            "sdgm": "SDGM's own encode + decode, one row per decoder implementation: naive materializes the atoms "
                    "S (L x K x D) once per call; chunked rebuilds them a block of positions at a time in forward "
                    "and backward; rotation (CPU) advances them from position to position by a rotation inside "
                    "fused numba kernels; triton generates them in registers inside fused kernels.",
            "floor": "max(FLOPs / matmul rate, elementwise FLOPs / vector rate, sines / sine rate, bytes / copy "
                     "bandwidth) with the rates measured "
                     "on this device at the start ('rates'); FLOPs and bytes of a layer are its least arithmetic and "
                     "traffic (sdgm.bench.scaling: cost methods), not what an implementation happens to do.",
            "timing": "median of `repeats` calls after `warmup`, each between two device synchronizations; "
                      "time per sequence = time per batch / B. load_average is the host's (1, 5, 15 min) load: "
                      "above the core count, other processes shared the CPU.",
        },
        "results": results, "slopes": slopes, "ratios": _ratios(results, layers),
    }
    return json.loads(json.dumps(record))


BUDGET_SKIP = "not run: the budget"
BACKWARD_OVER_FORWARD = 3.0  # a forward and backward costs about three forwards (the backward: two matmuls each)


def _walls_of(walls: dict, name: str, mode: str) -> list[tuple[int, int, float]]:
    """The finished (L, B, seconds) cases to predict a layer's next case in a mode from: its own; without any yet
    (its first case, the slowest to start), the slowest other layer's in this mode; and for forward_backward
    without either, the same of forward times BACKWARD_OVER_FORWARD."""
    def own_or_slowest(m: str) -> list:
        if walls.get((name, m)):
            return walls[(name, m)]
        others = [h for (n, mm), h in walls.items() if mm == m and h]
        return max(others, key=lambda h: h[-1][2] / h[-1][1]) if others else []

    found = own_or_slowest(mode)
    if found or mode != "forward_backward":
        return found
    return [(L, B, BACKWARD_OVER_FORWARD * t) for L, B, t in own_or_slowest("forward")]


def _past_budget(history: list[tuple[int, int, float]], L: int, B: int, deadline: float) -> str | None:
    """Why a case at (L, B) would not finish before `deadline` (time.monotonic()), or None: its wall time predicted
    from the layer's last finished case in this mode as B * L**e (e from its last two lengths, clamped to [1, 2];
    from one, 2), or the deadline already passed. Without a finished case: None (it runs)."""
    left = deadline - time.monotonic()
    if left <= 0:
        return f"{BUDGET_SKIP} ran out before this case"
    if not history:
        return None
    guess, how = extrapolate(sorted(history), L, B)
    if guess > left:
        return f"{BUDGET_SKIP} would not fit it: predicted {guess:.0f} s ({how}), {left:.0f} s left"
    return None


def _beyond_host_memory(dev: torch.device, history, L: int, B: int) -> str | None:
    """On a CPU: why the case at (L, B) would not fit in the host's available memory, or None."""
    if dev.type != "cpu":
        return None
    guess, available = predicted_peak(history, L, B), available_host_memory()
    if guess is None or available is None or guess[0] <= 0.9 * available:
        return None
    return (f"not run: predicted peak {guess[0] / 2 ** 30:.1f} GiB ({guess[1]}) is more than 90% of the "
            f"{available / 2 ** 30:.1f} GiB the host has available")


def _case(factory, L, B, D, mode, dev, autocast, repeats, warmup, memory_cap_bytes, clock, seed, rates, bpv) -> dict:
    torch.manual_seed(seed)
    layer = factory(L).to(dev)
    x = torch.randn(B, L, D, device=dev, requires_grad=mode == "forward_backward")
    params = [p for p in layer.parameters() if p.requires_grad]

    if mode == "forward":
        @torch.no_grad()
        def fn():
            with autocast():
                return layer(x)
    else:
        def fn():
            with autocast():
                y = layer(x)
            y.sum().backward()
            for p in params:  # each call starts without gradients: the memory baseline holds none
                p.grad = None
            x.grad = None

    for _ in range(warmup):
        fn()
    mem, mem_na = peak_call_memory(fn, dev)
    if memory_cap_bytes is not None and dev.type != "cuda" and mem is not None and mem > memory_cap_bytes:
        raise torch.OutOfMemoryError(f"peak {mem} bytes exceeds the memory cap of {memory_cap_bytes} bytes")
    timing = time_calls(fn, repeats=repeats, warmup=0, device=dev, clock=clock)
    timing["warmup"] = warmup
    out = {"status": "ok", "time_per_batch_s": timing["median_s"], "time_per_sequence_s": timing["median_s"] / B,
           "timing": timing, "peak_mem_bytes": mem}
    na = {}
    if mem is None:
        na["peak_mem_bytes"] = mem_na
    if hasattr(layer, "cost"):
        out["floor"] = floor_of(layer.cost(B, L, mode, bpv), rates)
        out["over_floor"] = timing["median_s"] / out["floor"]["time_s"] if out["floor"]["time_s"] > 0 else None
    else:
        na["floor"] = f"{type(layer).__name__} has no cost model"
    if na:
        out["na"] = na
    return out


def _series(results, view, name, mode, field):
    rows = [r for r in results if r["view"] == view and r["model"] == name and r["mode"] == mode
            and r.get(field) is not None]
    return [r["L"] for r in rows], [r[field] for r in rows]


def _ratios(results, layers) -> list[dict]:
    """Each SDGM implementation over attention, per view, L and mode: time per sequence and peak memory."""
    if "attention" not in layers:
        return []
    index = {(r["view"], r["model"], r["L"], r["mode"]): r for r in results}
    rows = []
    for r in results:
        if r.get("spectral_decoder") is None:  # SDGM rows only, by the decoder they time
            continue
        a = index.get((r["view"], "attention", r["L"], r["mode"]), {})
        row = {"view": r["view"], "model": r["model"], "L": r["L"], "mode": r["mode"]}
        for key, field in (("time", "time_per_sequence_s"), ("memory", "peak_mem_bytes")):
            num, den = r.get(field), a.get(field)
            if num is not None and den:
                row[f"over_attention_{key}"] = num / den
            else:
                row[f"over_attention_{key}"] = None
                row.setdefault("na", {})[f"over_attention_{key}"] = f"{r['model']}: {r['status']}, attention: " \
                                                                     f"{a.get('status', 'not run')}"
        rows.append(row)
    return rows


def scaling_from_config(bench: dict, train: dict, out_path: str | Path, budget_s: float | None = None,
                        **kw) -> dict:
    """Run the scaling benchmark with the config's `benchmark:` section and write its record to out_path: after
    every case (the record so far, "complete": false), and at the end. budget_s: the benchmark stops this many
    seconds from now, keeping what finished (scaling_benchmark's deadline)."""
    from ...common.atomic import write_json_atomic

    if budget_s is not None:
        kw["deadline"] = time.monotonic() + budget_s
    kw.setdefault("on_case", lambda rec: write_json_atomic(out_path, rec))
    sc = bench["scaling"]
    bv = sc.get("batch_view") or {}
    record = scaling_benchmark(
        sc["lengths"], sc["tokens_per_batch"], batch_lengths=bv.get("lengths", []),
        batch_size=bv.get("batch_size", 1), d_model=sc["d_model"], n_atoms=sc["n_atoms"],
        kernel_size=sc["kernel_size"], n_heads=sc["n_heads"], linformer_k=sc["linformer_k"],
        linformer_block_size=sc.get("linformer_block_size", 32),
        decoders=sc.get("sdgm_decoders", SDGM_DECODERS), repeats=bench["repeats"], warmup=bench["warmup"],
        slope_min_length=sc["slope_min_length"], device=train.get("device", "auto"),
        precision=train.get("precision", "auto"), **kw)
    write_json_atomic(out_path, record)
    return record
