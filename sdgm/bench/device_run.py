"""The device benchmark's run (sdgm.bench.device): each experiment measured with fresh weights and its records
written (throughput, generation, device.json), then the scaling benchmark; the memory peaks come from
device_probe."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from .device_probe import MEMORY_MODES, experiment_setup, fresh_process_probe


def default_experiments(config: dict) -> list[str]:
    """The first experiment of each model in the config's order, but a model that leaks (never compared)."""
    first: dict[str, str] = {}
    for name, exp in config["experiments"].items():
        first.setdefault(exp["model"], name)
    return [e for m, e in first.items() if m != "linformer_noncausal"]


def device_benchmark(
    config: dict,
    configfile: Path,
    out: Path,
    *,
    corpus: str,
    experiments: list[str],
    device: str | None,
    repeats: int,
    warmup: int,
    new_tokens: int,
    batch_sizes: list[int],
    context_multiple: int,
    score_batch_size: int,
    scaling_from: Path | None,
    scaling_args: list[str],
    command: str,
    log=print,
    deadline: float | None = None,
    skip_scaling: bool = False,
) -> dict:
    """Each experiment's records, written as it finishes, then the scaling benchmark. deadline (time.monotonic()):
    an experiment predicted not to finish before it is recorded as skipped in device.json with the prediction;
    device.json is rewritten after every experiment ("complete": false until the end)."""
    import torch

    from ..common.atomic import write_json_atomic
    from ..common.timing import load_average
    from ..harness.provenance import config_hash, provenance
    from ..harness.recipe import TrainConfig, resolve_device
    from ..models.interface import declared
    from ..models.registry import build_model
    from .generation import measure_generation
    from .throughput import measure_throughput

    vocab_size = int(config["corpora"][corpus]["expected"]["vocab_size"])
    settings = {
        "corpus": corpus,
        "vocab_size": vocab_size,
        "experiments": experiments,
        "repeats": repeats,
        "warmup": warmup,
        "generation": {
            "batch_sizes": batch_sizes,
            "new_tokens": new_tokens,
            "context_multiple": context_multiple,
            "paths": "own path only",
        },
        "score_batch_size": score_batch_size,
        "weights": "freshly initialized, seed 0",
        "scaling": (
            "not run (--skip-scaling)"
            if skip_scaling
            else f"not rerun: the record {scaling_from}, a run of the scaling benchmark on this device"
            if scaling_from
            else f"run here: python -m sdgm.bench.scaling {' '.join(scaling_args)}"
        ),
    }
    steps, t_start, load_start = {}, time.perf_counter(), load_average()
    skipped, per_param = {}, []  # experiment -> why not run; seconds per parameter of each finished experiment

    def write_device(complete: bool) -> dict:
        rec = {
            "schema": 1,
            "kind": "device",
            "command": command,
            "settings": settings,
            "wall_s": steps,
            "complete": complete,
            "skipped": skipped,
            "load_average": {"start": load_start, "end": load_average()},
            "provenance": provenance(resolve_device(device or config["train"].get("device", "auto"))),
        }
        write_json_atomic(out / "bench" / "device.json", rec)
        return rec

    for exp in experiments:
        model_name, options, train = experiment_setup(config, exp, device)
        if deadline is not None and (why := _past_deadline(deadline, per_param, model_name, vocab_size, options)):
            skipped[exp] = why
            log(f"{exp}: skipped ({why})", flush=True)
            write_device(False)
            continue
        tcfg = TrainConfig(**train)
        dev = resolve_device(tcfg.device)
        t0 = time.perf_counter()
        mem = {m: fresh_process_probe(configfile, exp, vocab_size, m, device, score_batch_size) for m in MEMORY_MODES}
        t1 = time.perf_counter()
        torch.manual_seed(0)
        net = build_model(model_name, vocab_size, **options)
        tp = measure_throughput(
            net, tcfg, repeats=repeats, warmup=warmup, generate_batch_sizes=(), score_batch_size=score_batch_size
        )
        t2 = time.perf_counter()
        torch.manual_seed(0)  # fresh weights again: the throughput's training steps changed them
        net = build_model(model_name, vocab_size, **options)
        gen = measure_generation(
            net,
            tcfg,
            batch_sizes=batch_sizes,
            new_tokens=new_tokens,
            context_multiple=context_multiple,
            repeats=repeats,
            warmup=warmup,
            only_own_path=True,
        )
        t3 = time.perf_counter()
        fpt, fpt_na = declared(net, "flops_per_token")
        metrics = {
            "params": net.num_params(),
            "flops_per_token": fpt,
            "train_tokens_per_s": tp["modes"]["train"].get("tokens_per_s"),
            "score_tokens_per_s": tp["modes"]["score"].get("tokens_per_s"),
            "train_peak_mem_bytes": mem["train"]["peak_bytes"],
            "score_peak_mem_bytes": mem["score"]["peak_bytes"],
        }
        na = {
            k: v
            for k, v in (
                ("flops_per_token", fpt_na),
                ("train_tokens_per_s", tp["modes"]["train"].get("na", {}).get("tokens_per_s")),
                ("score_tokens_per_s", tp["modes"]["score"].get("na", {}).get("tokens_per_s")),
                ("train_peak_mem_bytes", mem["train"]["na"]),
                ("score_peak_mem_bytes", mem["score"]["na"]),
            )
            if v
        }
        common = {
            "experiment": exp,
            "model": model_name,
            "corpus": corpus,
            "seed": 0,
            "fresh_weights": True,
            "model_options": options,
            "train_config": train,
            "provenance": provenance(dev),
        }
        throughput_rec = {
            "schema": 1,
            "kind": "throughput",
            **common,
            "settings": {
                "repeats": repeats,
                "warmup": warmup,
                "score_batch_size": score_batch_size,
                "generate_batch_sizes": [],
            },
            "config_hash": config_hash({"settings": settings, "options": options, "train": train}),
            "device": tp["device"],
            "precision": tp["precision"],
            "metrics": metrics,
            "na": na,
            "memory": mem,
            "modes": tp["modes"],
        }
        gen_rec = {
            "schema": 1,
            "kind": "generation",
            **common,
            "settings": settings["generation"],
            "config_hash": config_hash({"settings": settings, "options": options, "train": train}),
            **gen,
            "params": net.num_params(),
        }
        for kind, rec in (("throughput", throughput_rec), ("generation", gen_rec)):
            write_json_atomic(out / "bench" / kind / corpus / f"{exp}-s0.json", json.loads(json.dumps(rec)))
        steps[exp] = {"memory_s": t1 - t0, "throughput_s": t2 - t1, "generation_s": t3 - t2}
        per_param.append((t3 - t0) / max(1, net.num_params()))
        write_device(False)
        b1 = gen["paths"][gen["own_path"]]["generate"].get(f"b{batch_sizes[0]}", {}).get("tokens_per_s")
        mib = {m: (metrics[f"{m}_peak_mem_bytes"] or 0) / 2**20 for m in MEMORY_MODES}
        log(
            f"{exp}: {metrics['params'] / 1e6:.2f} M params, train {metrics['train_tokens_per_s'] or 0:,.0f} tok/s, "
            f"generate b{batch_sizes[0]} {b1 or 0:,.1f} tok/s, peaks train {mib['train']:,.0f} MiB, score "
            f"{mib['score']:,.0f} MiB ({t3 - t0:.0f} s)",
            flush=True,
        )
        del net
    t_scaling = time.perf_counter()
    record_path = out / "bench" / "scaling.json"
    if skip_scaling:
        pass
    elif scaling_from is not None:
        if scaling_from.resolve() != record_path.resolve():
            record_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(scaling_from, record_path)
        from ..reporting.bench_report import build_scaling_report

        build_scaling_report(record_path, out / "tables", out / "figures")
    else:
        from .scaling import cli as scaling_cli

        scaling_cli.main(
            ["--configfile", str(configfile), "--out", str(out), *scaling_args]
            + (["--device", device] if device else [])
        )
    steps["scaling_s"] = time.perf_counter() - t_scaling
    steps["total_s"] = time.perf_counter() - t_start
    return write_device(True)


def _past_deadline(deadline: float, per_param: list[float], model: str, vocab_size: int, options: dict) -> str | None:
    """Why an experiment would not finish before `deadline` (time.monotonic()), or None: its seconds predicted as
    its parameter count times the most seconds per parameter of the experiments finished so far (none: it runs)."""
    left = deadline - time.monotonic()
    if left <= 0:
        return "not run: the budget ran out before it"
    if not per_param:
        return None
    import torch

    from ..models.registry import build_model

    try:
        with torch.device("meta"):  # the parameter count without allocating the weights
            n = build_model(model, vocab_size, **options).num_params()
    except Exception:  # a model that cannot be built on the meta device: it runs, the window's deadline still holds
        return None
    guess = n * max(per_param)
    if guess > left:
        return (
            f"not run: predicted {guess:.0f} s ({n / 1e6:.2f} M parameters at the slowest rate so far), "
            f"{left:.0f} s left of the budget"
        )
    return None
