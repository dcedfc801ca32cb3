"""The scaling benchmark: every layer in both views and modes, timed, its peak memory and floor recorded, shortest
lengths first under a budget (scaling_benchmark; scaling_from_config reads the config and writes the record)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from ...common.timing import (
    CPU_MEMORY_METHOD,
    CUDA_MEMORY_METHOD,
    free_memory,
    is_oom,
    load_average,
    peak_call_memory,
    time_calls,
)
from ...harness.provenance import config_hash, provenance
from .fit import extrapolate, fit_loglog_slope, predicted_peak
from .layers import SDGM_DECODERS, default_layers, flash_attention_available, spectral_decoder, unavailable_layers
from .rates import device_rates, floor_of

SCHEMA_VERSION = 2
MODES = ("forward", "forward_backward")
VIEWS = ("tokens", "batch")


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


def scaling_benchmark(
    lengths,
    tokens_per_batch: int,
    *,
    batch_lengths=(),
    batch_size: int = 1,
    d_model: int = 512,
    n_atoms: int = 256,
    kernel_size: int = 3,
    n_heads: int = 8,
    linformer_k: int = 256,
    linformer_block_size: int = 32,
    decoders=SDGM_DECODERS,
    repeats: int = 3,
    warmup: int = 1,
    slope_min_length: int = 0,
    device: str = "auto",
    precision: str = "auto",
    layers: dict[str, Callable[[int], nn.Module]] | None = None,
    memory_cap_bytes: int | None = None,
    rates: dict | None = None,
    clock: Callable[[], float] = time.perf_counter,
    seed: int = 0,
    log=print,
    deadline: float | None = None,
    on_case: Callable[[dict], None] | None = None,
) -> dict:
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
        layers = default_layers(
            d_model, n_atoms, kernel_size, n_heads, linformer_k, flash, decoders, linformer_block_size
        )
    skipped_layers = unavailable_layers(layers, dev)
    lengths = sorted(int(L) for L in lengths)
    batch_lengths = sorted(int(L) for L in batch_lengths)
    bytes_per_value = 2 if amp is not None else 4
    settings = {
        "lengths": lengths,
        "tokens_per_batch": tokens_per_batch,
        "batch_lengths": batch_lengths,
        "batch_size": batch_size,
        "d_model": d_model,
        "n_atoms": n_atoms,
        "kernel_size": kernel_size,
        "n_heads": n_heads,
        "linformer_k": linformer_k,
        "linformer_block_size": linformer_block_size,
        "repeats": repeats,
        "warmup": warmup,
        "slope_min_length": slope_min_length,
        "precision": "bf16" if amp else "fp32",
        "memory_cap_bytes": memory_cap_bytes,
        "models": list(layers),
    }
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
        return _record(
            results, complete, layers, settings, dev, prov, backend, rates, load_start, tokens_per_batch, batch_size
        )

    try:
        for view, L, B in cases:  # every model at one L before the next L: slow drifts of the machine hit all alike
            for name, factory in layers.items():
                for mode in MODES:
                    entry = {
                        "view": view,
                        "model": name,
                        "L": L,
                        "B": B,
                        "mode": mode,
                        "spectral_decoder": spectral_decoder(factory),
                    }
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
                            entry.update(
                                _case(
                                    factory,
                                    L,
                                    B,
                                    d_model,
                                    mode,
                                    dev,
                                    autocast,
                                    repeats,
                                    warmup,
                                    memory_cap_bytes,
                                    clock,
                                    seed,
                                    rates,
                                    bytes_per_value,
                                )
                            )
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
                    log(
                        f"scaling {view:6s} {name:12s} L={L:8d} B={B:5d} {mode:16s} {entry['status']:7s} "
                        + (f"{entry['time_per_batch_s'] * 1e3:10.3f} ms/batch" if ok else "")
                        + (
                            f"  {entry['over_floor']:7.1f}x floor ({entry['floor']['bound']})"
                            if ok and entry.get("over_floor")
                            else ""
                        )
                        + (f"  ({entry['reason']})" if entry["status"] == "skipped" and over else "")
                    )
                    if on_case is not None:
                        on_case(record_of(results, complete=False))
    finally:
        if cap_fraction is not None:
            torch.cuda.set_per_process_memory_fraction(1.0, dev)
    return record_of(
        results, complete=not any(r["status"] == "skipped" and r["reason"].startswith(BUDGET_SKIP) for r in results)
    )


def _record(
    results, complete, layers, settings, dev, prov, backend, rates, load_start, tokens_per_batch, batch_size
) -> dict:
    """The benchmark's record of `results` (so far, or all): slopes and ratios fitted over the finished cases."""
    slopes = {
        view: {
            name: {
                mode: {
                    field: fit_loglog_slope(*_series(results, view, name, mode, key), settings["slope_min_length"])
                    for field, key in (("time", "time_per_sequence_s"), ("memory", "peak_mem_bytes"))
                }
                for mode in MODES
            }
            for name in layers
        }
        for view in VIEWS
    }
    record = {
        "schema": SCHEMA_VERSION,
        "kind": "scaling",
        "complete": complete,
        "settings": settings,
        "config_hash": config_hash(settings),
        "provenance": prov,
        "device": str(dev),
        "attention_backend": backend,
        "rates": rates,
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
        "results": results,
        "slopes": slopes,
        "ratios": _ratios(results, layers),
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
    return (
        f"not run: predicted peak {guess[0] / 2**30:.1f} GiB ({guess[1]}) is more than 90% of the "
        f"{available / 2**30:.1f} GiB the host has available"
    )


def _case(
    factory, L, B, D, mode, dev, autocast, repeats, warmup, memory_cap_bytes, clock, seed, rates, bytes_per_value
) -> dict:
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
    out = {
        "status": "ok",
        "time_per_batch_s": timing["median_s"],
        "time_per_sequence_s": timing["median_s"] / B,
        "timing": timing,
        "peak_mem_bytes": mem,
    }
    na = {}
    if mem is None:
        na["peak_mem_bytes"] = mem_na
    if hasattr(layer, "cost"):
        out["floor"] = floor_of(layer.cost(B, L, mode, bytes_per_value), rates)
        out["over_floor"] = timing["median_s"] / out["floor"]["time_s"] if out["floor"]["time_s"] > 0 else None
    else:
        na["floor"] = f"{type(layer).__name__} has no cost model"
    if na:
        out["na"] = na
    return out


def _series(results, view, name, mode, field):
    rows = [
        r
        for r in results
        if r["view"] == view and r["model"] == name and r["mode"] == mode and r.get(field) is not None
    ]
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
                row.setdefault("na", {})[f"over_attention_{key}"] = (
                    f"{r['model']}: {r['status']}, attention: {a.get('status', 'not run')}"
                )
        rows.append(row)
    return rows


def scaling_from_config(bench: dict, train: dict, out_path: str | Path, budget_s: float | None = None, **kw) -> dict:
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
        sc["lengths"],
        sc["tokens_per_batch"],
        batch_lengths=bv.get("lengths", []),
        batch_size=bv.get("batch_size", 1),
        d_model=sc["d_model"],
        n_atoms=sc["n_atoms"],
        kernel_size=sc["kernel_size"],
        n_heads=sc["n_heads"],
        linformer_k=sc["linformer_k"],
        linformer_block_size=sc.get("linformer_block_size", 32),
        decoders=sc.get("sdgm_decoders", SDGM_DECODERS),
        repeats=bench["repeats"],
        warmup=bench["warmup"],
        slope_min_length=sc["slope_min_length"],
        device=train.get("device", "auto"),
        precision=train.get("precision", "auto"),
        **kw,
    )
    write_json_atomic(out_path, record)
    return record
