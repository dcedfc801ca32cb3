"""Generation benchmark: every model decodes with its own cache, beside the generic window recompute.

    record = generation_for_run(run_dir, metrics_json, out_json, bench)   # one trained run (rule generation)
    res = measure_generation(model, train_cfg, batch_sizes=(1, 32), ...)   # any LanguageModel

Each model is measured along its decoding paths:
    "cache"      its own prefill and decode_step (a cache or a recurrence), where it has them (incremental_decoding)
    "recompute"  the interface's generic fallback, a forward over the last max_context tokens per new token: how
                 every baseline generated before it had a cache (WindowRecompute); for a model without a cache
                 this is its own path
    "..._compiled"  the model's own path with decode_step under torch.compile(**compile_options), when asked
                 for (e.g. {"mode": "reduce-overhead"}, which captures CUDA graphs on a GPU): measured for every
                 model alike, so that a table shows where it helps rather than assuming it
and for each path:
    generate     tokens/s of sdgm.harness.generate.sample_autoregressive from a 1-token prompt, `new_tokens` new tokens
                 per sequence, at each batch size (the sampler and its draws are the same for every path)
    prefill      time of model.prefill over a full window of max_context tokens, at each batch size
    latency      time of one decode_step at each position 1 .. context_multiple x max_context, batch 1
    state        bytes of every tensor the decoding state of one sequence holds (state_bytes), batch 1: after
                 max_context tokens, after the last position, and the peak
Timings follow sdgm.common.timing: warmup excluded, each call between two device synchronizations, the median of
`repeats`, every raw time kept (the latency curve keeps the median per position). An out-of-memory is recorded
as null with its reason, and a compiled path that fails to compile records the error, never a number.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from ..common.timing import free_memory, is_oom, synchronize, time_calls
from ..models.interface import LanguageModel, declared
from .nvml import NvmlSampler
from .throughput import TIMING_SETTINGS, _vocab_size, finished_run, run_record_head

SCHEMA_VERSION = 1


class WindowRecompute(LanguageModel):
    """`model` decoded by the interface's default: a forward over the last max_context tokens per new token."""

    def __init__(self, model: LanguageModel):
        super().__init__()
        self.model = model
        self.max_context = model.max_context

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)


class CompiledSteps(LanguageModel):
    """`model` with decode_step under torch.compile(**compile_options); prefill, state and contract are the model's."""

    def __init__(self, model: LanguageModel, **compile_options):
        super().__init__()
        self.model = model
        self.max_context = model.max_context
        self.incremental_decoding = model.incremental_decoding
        self.decode_beyond_context = model.decode_beyond_context
        self.compile_options = compile_options
        self.step = None  # compiled at the first step, so that a failure to compile is an error of that step

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(idx)

    def init_decode_state(self, batch_size: int, device=None) -> dict:
        return self.model.init_decode_state(batch_size, device)

    def decode_step(self, tokens: torch.Tensor, state: dict):
        if self.step is None:
            self.step = torch.compile(self.model.decode_step, **self.compile_options)
        return self.step(tokens, state)

    def prefill(self, prompt: torch.Tensor, state: dict | None = None):
        return self.model.prefill(prompt, state)


def decoding_paths(model: LanguageModel, compile_options: dict | None = None) -> dict[str, LanguageModel]:
    """name -> the model as decoded that way (see the module docstring)."""
    own = "cache" if model.incremental_decoding else "recompute"
    paths = {own: model}
    if model.incremental_decoding:
        paths["recompute"] = WindowRecompute(model)
    if compile_options is not None:
        paths[f"{own}_compiled"] = CompiledSteps(model, **compile_options)
    return paths


def state_bytes(state) -> int:
    """Bytes of every tensor storage reachable from `state` (dicts, lists, tuples and the attributes of objects
    such as transformers' cache), each storage counted once: what the decoding state holds in memory. A model's
    parameters that the state refers to (SDGM's atom stream watches them) belong to the model and are not counted."""
    storages, seen, total = set(), set(), 0
    todo = [state]
    while todo:
        x = todo.pop()
        if id(x) in seen or isinstance(x, (type, nn.Module, nn.Parameter, str, bytes, int, float, bool)) or x is None:
            continue
        seen.add(id(x))
        if isinstance(x, torch.Tensor):
            s = x.untyped_storage()
            if (s.data_ptr(), x.device) not in storages:
                storages.add((s.data_ptr(), x.device))
                total += s.nbytes()
        elif isinstance(x, dict):
            todo.extend(x.values())
        elif isinstance(x, (list, tuple)):
            todo.extend(x)
        elif isinstance(getattr(x, "__dict__", None), dict):  # objects (a cache); not compiled functions' wrappers
            todo.extend(vars(x).values())
    return total


def _guarded(fn: Callable[[], dict], device: torch.device, allow_errors: bool) -> dict:
    """fn()'s record; an out-of-memory (or, for a compiled path, any error) becomes status and reason instead."""
    try:
        return {"status": "ok", **fn()}
    except Exception as e:
        if not (is_oom(e) or allow_errors):
            raise
        status = "oom" if is_oom(e) else "error"
        error = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:500]}"
    free_memory(device)  # outside the except block: the traceback no longer pins the failed call's tensors
    return {"status": status, "error": error}


@torch.no_grad()
def measure_path(
    model: LanguageModel,
    *,
    device,
    autocast,
    vocab_size: int,
    batch_sizes,
    new_tokens: int,
    context_multiple: int,
    repeats: int,
    warmup: int,
    seed: int,
    sampler_interval_s: float = 0.05,
    clock: Callable[[], float] = time.perf_counter,
    allow_errors: bool = False,
) -> dict:
    """Tokens/s, prefill time, latency per position and state bytes of one decoding path (module docstring)."""
    from ..harness.generate import sample_autoregressive

    model.eval()
    L = model.max_context
    g = torch.Generator().manual_seed(seed)

    def ids(b: int, n: int) -> torch.Tensor:
        return torch.randint(0, vocab_size, (b, n), generator=g).to(device)

    def timed(fn) -> dict:
        return time_calls(fn, repeats=repeats, warmup=warmup, device=device, clock=clock)

    rec: dict = {"generate": {}, "prefill": {}, "state": {}}
    for b in batch_sizes:
        prompt, window = ids(b, 1), ids(b, L)

        def generate(prompt=prompt):
            with autocast():
                return sample_autoregressive(model, prompt, new_tokens, temperature=1.0, seed=seed)

        def prefill(window=window):
            with autocast():
                return model.prefill(window)

        def gen_record(generate=generate, b=b) -> dict:
            sampler = NvmlSampler(device, sampler_interval_s)
            timing = time_calls(
                generate, repeats=repeats, warmup=warmup, device=device, clock=clock, timed_context=sampler
            )
            return {"timing": timing, "tokens_per_s": b * new_tokens / timing["median_s"], "memory": sampler.result()}

        rec["generate"][f"b{b}"] = {
            "batch_size": b,
            "prompt_tokens": 1,
            "new_tokens": new_tokens,
            **_guarded(gen_record, device, allow_errors),
        }
        rec["prefill"][f"b{b}"] = {
            "batch_size": b,
            "prompt_tokens": L,
            **_guarded(lambda prefill=prefill: {"timing": timed(prefill)}, device, allow_errors),
        }
    positions = context_multiple * L
    rec["latency"] = {
        "batch_size": 1,
        "positions": list(range(1, positions + 1)),
        "repeats": repeats,
        "warmup": warmup,
        **_guarded(
            lambda: latency_by_position(model, ids(1, positions), device, autocast, repeats, warmup, clock),
            device,
            allow_errors,
        ),
    }
    rec["state"]["b1"] = {
        "batch_size": 1,
        **_guarded(lambda: state_growth(model, ids(1, positions), device, autocast), device, allow_errors),
    }
    for b in batch_sizes:  # the state plus one step's activations after a context of L (the inference-memory claim)
        entry = rec["state"].setdefault(f"b{b}", {"batch_size": b})
        peak = _guarded(lambda b=b: decode_peak(model, ids(b, L + 1), device, autocast), device, allow_errors)
        entry.setdefault("status", peak["status"])
        if peak["status"] == "ok":
            entry.update({k: v for k, v in peak.items() if k != "status"})
        else:
            entry.update(step_peak_bytes=None, na={"step_peak_bytes": f"{peak['status']}: {peak['error']}"})
    return rec


def decode_peak(model, idx: torch.Tensor, device, autocast) -> dict:
    """idx (B, L + 1): the most memory decoding held at once above the parameters, from an empty state through a
    context of L tokens and one more decode_step: the decoding state plus one step's activations (and its (B, V)
    logits, which every model has). One pass, in this process."""
    from ..common.timing import CPU_MEMORY_METHOD, CUDA_MEMORY_METHOD, peak_call_memory

    def run():
        with autocast():
            state = model.init_decode_state(idx.shape[0], device)
            for p in range(idx.shape[1]):
                _, state = model.decode_step(idx[:, p], state)

    peak, why = peak_call_memory(run, device)
    out = {
        "step_peak_bytes": peak,
        "context": idx.shape[1] - 1,
        "steps": 1,
        "fresh_process": False,
        "step_peak_method": CUDA_MEMORY_METHOD if torch.device(device).type == "cuda" else CPU_MEMORY_METHOD,
    }
    if why:
        out["na"] = {"step_peak_bytes": why}
    return out


def latency_by_position(model, idx: torch.Tensor, device, autocast, repeats: int, warmup: int, clock) -> dict:
    """idx (1, P): the median time of the decode_step that takes token p, for p = 1 .. P, over `repeats` passes
    after `warmup` untimed ones (each pass starts from an empty state)."""
    times = [[] for _ in range(idx.shape[1])]
    for r in range(warmup + repeats):
        with autocast():
            state = model.init_decode_state(idx.shape[0], device)
        for p in range(idx.shape[1]):
            synchronize(device)
            t0 = clock()
            with autocast():
                _, state = model.decode_step(idx[:, p], state)
            synchronize(device)
            if r >= warmup:
                times[p].append(clock() - t0)
    return {"median_s": [statistics.median(t) for t in times], "min_s": [min(t) for t in times]}


def state_growth(model, idx: torch.Tensor, device, autocast) -> dict:
    """Bytes of the decoding state after each token of idx (B, P): after max_context tokens, at the end, peak."""
    L = model.max_context
    with autocast():
        state = model.init_decode_state(idx.shape[0], device)
    sizes = []
    for p in range(idx.shape[1]):
        with autocast():
            _, state = model.decode_step(idx[:, p], state)
        sizes.append(state_bytes(state))
    peak = max(sizes)
    return {
        "after_max_context_bytes": sizes[min(L, len(sizes)) - 1],
        "after_last_bytes": sizes[-1],
        "peak_bytes": peak,
        "peak_at_position": sizes.index(peak) + 1,
        "positions": len(sizes),
    }


def measure_generation(
    model: LanguageModel,
    train_cfg,
    *,
    batch_sizes=(1, 32),
    new_tokens: int = 128,
    context_multiple: int = 4,
    repeats: int = 5,
    warmup: int = 2,
    compile_options: dict | None = None,
    sampler_interval_s: float = 0.05,
    seed: int = 0,
    only_own_path: bool = False,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Every decoding path of `model` on the device and precision `train_cfg` trains with (module docstring);
    only_own_path: the model's own path alone (its cache, else the window recompute), the one claims read."""
    from ..harness.recipe import autocast_dtype, resolve_device

    device = resolve_device(train_cfg.device)
    amp = autocast_dtype(train_cfg, device)
    model = model.to(device).eval()

    def autocast():
        return torch.autocast(device.type, dtype=amp, enabled=amp is not None)

    paths = {}
    own = "cache" if model.incremental_decoding else "recompute"
    for name, path_model in decoding_paths(model, compile_options).items():
        if only_own_path and name != own:
            continue
        compiled = name.endswith("_compiled")
        what = PATH_WHAT[name.removesuffix("_compiled")]
        torch.manual_seed(seed)
        paths[name] = {
            "what": what + (f"; decode_step under torch.compile(**{compile_options})" if compiled else ""),
            "compile": compiled,
            "fresh_process": False,  # the protocol the verdicts compare
            **measure_path(
                path_model,
                device=device,
                autocast=autocast,
                vocab_size=_vocab_size(model),
                batch_sizes=batch_sizes,
                new_tokens=new_tokens,
                context_multiple=context_multiple,
                repeats=repeats,
                warmup=warmup,
                seed=seed,
                sampler_interval_s=sampler_interval_s,
                clock=clock,
                allow_errors=compiled,
            ),
        }
        free_memory(device)
    return {
        "device": str(device),
        "precision": "bf16" if amp == torch.bfloat16 else "fp32",
        "paths": paths,
        "own_path": own,
        "incremental_decoding": bool(model.incremental_decoding),
        "decode_beyond_context": model.decode_beyond_context,
        "max_context": model.max_context,
    }


PATH_WHAT = {
    "cache": "the model's own prefill and decode_step (its cache or recurrence)",
    "recompute": "the generic decode_step: a forward over the last max_context tokens per new token",
}


def generation_for_run(run_dir: str | Path, metrics_path: str | Path, out_path: str | Path, bench: dict) -> dict:
    """Generation record of one finished run (its run directory and metrics.json), written to out_path."""
    from ..common.atomic import write_json_atomic
    from ..harness.recipe import resolve_device

    run, model, tcfg = finished_run(run_dir, metrics_path)
    gen = bench["generation"]
    settings = {
        **{k: bench[k] for k in TIMING_SETTINGS},
        "batch_sizes": list(gen["batch_sizes"]),
        "new_tokens": gen["new_tokens"],
        "context_multiple": gen["context_multiple"],
        "compile": gen["compile"],
    }
    torch.manual_seed(run["seed"])
    res = measure_generation(
        model,
        tcfg,
        batch_sizes=settings["batch_sizes"],
        new_tokens=settings["new_tokens"],
        context_multiple=settings["context_multiple"],
        repeats=settings["repeats"],
        warmup=settings["warmup"],
        compile_options=settings["compile"],
        sampler_interval_s=settings["sampler_interval_s"],
        seed=run["seed"],
    )
    fpt, fpt_na = declared(model, "flops_per_token")
    state_bytes, state_na = declared(model, "state_bytes_per_sequence")
    record = {
        **run_record_head(SCHEMA_VERSION, "generation", run, settings, resolve_device(tcfg.device)),
        **res,
        "params": model.num_params(),
        "flops_per_token": fpt,
        "state_bytes_per_sequence_declared": state_bytes,
        "na": {k: v for k, v in (("flops_per_token", fpt_na), ("state_bytes_per_sequence_declared", state_na)) if v},
    }
    record = json.loads(json.dumps(record))
    write_json_atomic(out_path, record)
    return record
