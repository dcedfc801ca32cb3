"""Tokens/s of a trained run three ways (train, score, generate), MFU against the device's peak, memory, energy.

    record = throughput_for_run(run_dir, metrics_json, out_json, bench)

Everything is written against sdgm.models.interface.LanguageModel only; no model is named here. Every record carries
provenance (git commit, device, driver, torch, CUDA) and a hash of its settings.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from ..common.missing import NOT_MEASURED, OUT_OF_MEMORY
from ..common.timing import free_memory, is_oom, synchronize, time_calls, tokens_per_second
from ..harness.provenance import config_hash, provenance
from ..models.interface import declared
from .nvml import NvmlSampler

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


# ---- throughput of a trained model -------------------------------------------------------------------------------


def measure_throughput(
    model,
    train_cfg,
    *,
    repeats: int = 5,
    warmup: int = 2,
    score_batch_size: int = 32,
    generate_new_tokens: int = 256,
    generate_batch_sizes=(1, 32),
    sampler_interval_s: float = 0.05,
    energy_min_s: float = 2.0,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Tokens/s of `model` (any LanguageModel) three ways, on the device and precision `train_cfg` trains with.

    train:    forward + backward + optimizer step on (batch_size, seq_len), the trainer's optimizer and clipping
    score:    next-token NLL of (score_batch_size, seq_len), no gradients
    generate: sdgm.harness.generate.sample_autoregressive from a 1-token prompt, `generate_new_tokens` new tokens per
              sequence, at each batch size in `generate_batch_sizes`
    Inputs are random token ids: the cost of these models does not depend on the ids.
    Energy comes from a separate window of at least `energy_min_s` seconds of back-to-back calls (see
    energy_per_token): NVML's energy counter advances in steps too coarse for a few timed calls.
    """
    from ..harness.generate import sample_autoregressive
    from ..harness.recipe import autocast_dtype, make_optimizer, resolve_device

    device = resolve_device(train_cfg.device)
    amp = autocast_dtype(train_cfg, device)
    dtype_name = "bf16" if amp == torch.bfloat16 else "fp32"
    peak, peak_na = peak_flops(device, dtype_name)
    fpt, fpt_na = declared(model, "flops_per_token")
    model = model.to(device)
    V, L, B = _vocab_size(model), train_cfg.seq_len, train_cfg.batch_size
    g = torch.Generator().manual_seed(seed)

    def ids(b: int, n: int) -> torch.Tensor:
        return torch.randint(0, V, (b, n), generator=g).to(device)

    def autocast():
        return torch.autocast(device.type, dtype=amp, enabled=amp is not None)

    modes: dict[str, dict] = {}

    def run(name: str, fn, tokens: int, flops_factor: float, extra: dict) -> None:
        # the protocol the verdicts compare (docs/claims.md): timed in this process, `repeats` timed calls
        extra = {"precision": dtype_name, "compile": False, "steps": repeats, "fresh_process": False, **extra}
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
            modes[name] = {
                **extra,
                "status": "oom",
                "error": error,
                "tokens_per_s": None,
                "na": {"tokens_per_s": f"out of memory: {error}"},
            }
            return
        tok_s = tokens_per_second(tokens, timing)
        mem = sampler.result()
        model_flops = None if fpt is None else flops_factor * fpt
        rec = {
            **extra,
            "status": "ok",
            "tokens_per_call": tokens,
            "timing": timing,
            "tokens_per_s": tok_s,
            "model_flops_per_token": model_flops,
            "achieved_flops_per_s": None if model_flops is None else model_flops * tok_s,
            "peak_flops_per_s": peak,
            "mfu": mfu(model_flops, tok_s, peak),
            "memory": mem,
        }
        if model_flops is None:
            na["model_flops_per_token"] = na["achieved_flops_per_s"] = fpt_na
        if peak is None:
            na["peak_flops_per_s"] = peak_na
        if rec["mfu"] is None:
            na["mfu"] = fpt_na or peak_na
        if mem["energy_j"] is None:  # no NVML or no counter: skip the energy window
            rec["energy_j_per_token"], na["energy_j_per_token"] = None, mem["na"].get("energy_j", NOT_MEASURED)
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
        return {
            "energy_j": mem["energy_j"],
            "energy_source": mem["energy_source"],
            "calls": calls,
            "window_s": clock() - t0,
            "power_mean_w": mem.get("power_mean_w"),
        }

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

        run(
            "train",
            train_step,
            B * L,
            3.0,
            {
                "batch_size": B,
                "seq_len": L,
                "compile": bool(train_cfg.compile),
                "what": "forward + backward + optimizer step (model FLOPs = 3 x forward)",
            },
        )
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

    run(
        "score",
        score,
        score_batch_size * L,
        1.0,
        {"batch_size": score_batch_size, "seq_len": L, "what": "forward + next-token NLL, no gradients"},
    )

    for b in generate_batch_sizes:
        prompt = ids(b, 1)

        def generate(prompt=prompt):
            with autocast():
                return sample_autoregressive(model, prompt, generate_new_tokens, temperature=1.0, seed=seed)

        run(
            f"generate_b{b}",
            generate,
            b * generate_new_tokens,
            1.0,
            {
                "batch_size": b,
                "prompt_tokens": 1,
                "new_tokens": generate_new_tokens,
                "what": "sample_autoregressive (decode_step per token, multinomial sampling at temperature 1)",
            },
        )
    return {
        "device": str(device),
        "precision": dtype_name,
        "modes": modes,
        "incremental_decoding": bool(getattr(model, "incremental_decoding", False)),
    }


def energy_per_token(
    energy_j: float | None, calls: int, window_s: float, tokens_per_call: int, **_
) -> tuple[float | None, str | None]:
    """Joules per token of an energy window of `calls` back-to-back calls, or None and the reason.

    A counter that did not advance is no measurement of zero energy: NVML's total-energy counter is updated at
    intervals of tens of milliseconds, so a short window can read 0 J (seen on an H100 with 27 ms of timed calls).
    """
    if energy_j is None:
        return None, "no energy reading"
    if energy_j <= 0:
        return (
            None,
            f"the energy counter did not advance during {window_s:.3f} s ({calls} calls); lengthen energy_min_s",
        )
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


# the benchmark: settings that time every record of a finished run (warmup, synchronized repeats, the NVML sampler)
TIMING_SETTINGS = ("repeats", "warmup", "sampler_interval_s")


def finished_run(run_dir: str | Path, metrics_path: str | Path):
    """(metrics record, model with its trained weights, training config) of one finished run."""
    from ..harness.recipe import TrainConfig
    from ..models.registry import load_run

    run = json.loads(Path(metrics_path).read_text())
    model, _ = load_run(Path(run_dir))
    return run, model, TrainConfig(**run["train_config"])


def run_record_head(schema: int, kind: str, run: dict, settings: dict, device) -> dict:
    """The fields a benchmark record of a finished run starts with: the run (by fingerprint), the benchmark's
    settings and their hash with the run, and where it ran."""
    return {
        "schema": schema,
        "kind": kind,
        "run_id": run["run_id"],
        "experiment": run["experiment"],
        "model": run["model"],
        "corpus": run["corpus"],
        "seed": run["seed"],
        "run_fingerprint": run["fingerprint"],
        "settings": settings,
        "config_hash": config_hash({"settings": settings, "run": run["fingerprint"]}),
        "provenance": provenance(device),
    }


def throughput_for_run(run_dir: str | Path, metrics_path: str | Path, out_path: str | Path, bench: dict) -> dict:
    """Throughput record of one finished run (its run directory and metrics.json), written to out_path."""
    from ..common.atomic import write_json_atomic
    from ..harness.recipe import resolve_device

    run, model, tcfg = finished_run(run_dir, metrics_path)
    tp = bench["throughput"]
    settings = {
        **{k: bench[k] for k in TIMING_SETTINGS},
        "energy_min_s": bench["energy_min_s"],
        "score_batch_size": tp["score_batch_size"],
        "generate_new_tokens": tp["generate_new_tokens"],
        "generate_batch_sizes": list(tp["generate_batch_sizes"]),
    }
    torch.manual_seed(run["seed"])
    res = measure_throughput(model, tcfg, **settings, seed=run["seed"])  # the settings are its keywords, as recorded
    fpt, fpt_na = declared(model, "flops_per_token")
    metrics, na = {"params": model.num_params(), "flops_per_token": fpt}, {}
    if fpt is None:
        na["flops_per_token"] = fpt_na
    for key, mode, field in SUMMARY + [
        (f"generate_b{b}_tokens_per_s", f"generate_b{b}", "tokens_per_s") for b in settings["generate_batch_sizes"]
    ]:
        m = res["modes"][mode]
        metrics[key] = m.get(field)
        if metrics[key] is None:
            na[key] = m["na"].get(field) or (OUT_OF_MEMORY if m["status"] == "oom" else NOT_MEASURED)
    train_mem = res["modes"]["train"].get("memory", {})
    for key, field in (
        ("train_peak_gpu_mem_bytes", "torch_max_memory_allocated_bytes"),
        ("train_peak_rss_bytes", "cpu_rss_peak_bytes"),
    ):
        metrics[key] = train_mem.get(field)
        if metrics[key] is None:
            na[key] = train_mem.get("na", {}).get(field, OUT_OF_MEMORY)
    record = {
        **run_record_head(SCHEMA_VERSION, "throughput", run, settings, resolve_device(tcfg.device)),
        "device": res["device"],
        "precision": res["precision"],
        "incremental_decoding": res["incremental_decoding"],
        "metrics": metrics,
        "na": na,
        "modes": res["modes"],
    }
    record = json.loads(json.dumps(record))
    write_json_atomic(out_path, record)
    return record
