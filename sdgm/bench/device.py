"""The architecture's costs on one device, at a config's sizes, with freshly initialized weights: every benchmark
that needs no trained model, written as the records the claims code reads, and the device's claims table.

    python -m sdgm.bench.device --configfile config/config.yaml --out results/cpu

A freshly initialized model decodes, scores and back-propagates at the cost of a trained one, so the claims about
cost (O(KL), inference latency and memory, parameters, training memory and speed against the baselines) can be
judged on any machine. For each experiment (default: the first of each model in the config, but the non-causal
Linformer, which leaks future tokens and is never compared), built with its config options and the corpus's
vocabulary size, seed 0, on the device of --device:

    OUT/bench/throughput/CORPUS/EXP-s0.json   training tokens/s (the trainer's step: its optimizer, clipping and
                                              precision), scoring tokens/s of 32 windows, the parameter count,
                                              and two peaks of torch's allocator, each in a fresh process that
                                              does nothing else: building the model and its optimizer and two
                                              training steps (metrics.train_peak_mem_bytes), and building the
                                              model and scoring 32 windows of L (metrics.score_peak_mem_bytes)
    OUT/bench/generation/CORPUS/EXP-s0.json   sdgm.bench.generation along the model's own decoding path (its
                                              cache): tokens/s at each batch size, latency per position, state
    OUT/bench/scaling.json                    the layer benchmark (sdgm.bench.scaling), or --scaling-from: a
                                              record of that benchmark on this device, copied and named
    OUT/bench/device.json                     the command, its settings, per-step wall times, load, provenance;
                                              rewritten after every experiment ("complete": false until the end)
    OUT/tables/claims.*                       the claims judged from OUT's records (quality claims: not measured
                                              on this device)

The flags shrink the work to a machine's budget (a 2-core CPU: tens of minutes); device.json records them. Each
experiment's records are written as it finishes, in the order of --experiments; --budget-s stops at a deadline
(an experiment predicted not to fit what is left is named in device.json's "skipped" with the prediction), and
--skip-scaling leaves the scaling benchmark to its own command (python -m sdgm.bench.scaling).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

MEMORY_MODES = ("train", "score")


def experiment_setup(config: dict, experiment: str, device: str | None) -> tuple[str, dict, dict]:
    """(model name, model options, TrainConfig fields) of an experiment as the trainer builds it."""
    from ..harness.config import experiment_spec
    from ..models.registry import model_options
    from ..harness.train import TrainConfig

    spec = experiment_spec(config, experiment)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    train = {k: v for k, v in spec["train"].items() if k in fields}
    if device:
        train["device"] = device
    options = model_options(spec["model"], spec["model_overrides"], train.get("seq_len", TrainConfig().seq_len))
    return spec["model"], options, train


def memory_probe(config: dict, experiment: str, vocab_size: int, mode: str, device: str | None,
                 score_batch_size: int) -> dict:
    """The allocator peak of one mode in this process, counted from before the model is built: "train" builds the
    model and its optimizer and takes two training steps (the first creates the optimizer's state), "score" builds
    the model and scores score_batch_size windows without gradients."""
    import torch
    import torch.nn.functional as F

    from ..models.registry import build_model
    from ..harness.train import TrainConfig, autocast_dtype, make_optimizer, resolve_device
    from ..common.timing import CPU_MEMORY_METHOD, CUDA_MEMORY_METHOD, peak_call_memory

    model_name, options, train = experiment_setup(config, experiment, device)
    tcfg = TrainConfig(**train)
    dev = resolve_device(tcfg.device)
    amp = autocast_dtype(tcfg, dev)
    g = torch.Generator().manual_seed(0)
    B = tcfg.batch_size if mode == "train" else score_batch_size
    x = torch.randint(0, vocab_size, (B, tcfg.seq_len), generator=g)
    y = torch.randint(0, vocab_size, (B, tcfg.seq_len), generator=g)

    def run():
        torch.manual_seed(0)
        net = build_model(model_name, vocab_size, **options).to(dev)
        xs, ys = x.to(dev), y.to(dev)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            if mode == "train":
                net.train()
                opt = make_optimizer(net, tcfg, dev)
                for _ in range(2):
                    loss, _ = net.training_loss(xs, ys)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if tcfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(net.parameters(), tcfg.grad_clip)
                    opt.step()
            else:
                net.eval()
                with torch.no_grad():
                    F.cross_entropy(net(xs).flatten(0, 1).float(), ys.flatten())

    peak, why = peak_call_memory(run, dev)  # from before the model is built: parameters count
    what = {"train": f"build the model and its optimizer, two training steps of ({B}, {tcfg.seq_len})",
            "score": f"build the model, score ({B}, {tcfg.seq_len}) without gradients"}[mode]
    return {"mode": mode, "peak_bytes": peak, "na": why, "what": what, "batch_size": B, "seq_len": tcfg.seq_len,
            # the protocol the verdicts compare (docs/claims.md); this probe never compiles
            "precision": "bf16" if amp == torch.bfloat16 else "fp32", "compile": False,
            "steps": 2 if mode == "train" else 1, "fresh_process": True,
            "method": (CUDA_MEMORY_METHOD if dev.type == "cuda" else CPU_MEMORY_METHOD)
            + "; a fresh process, counted from before the model is built"}


def fresh_process_probe(configfile: Path, experiment: str, vocab_size: int, mode: str, device: str | None,
                        score_batch_size: int) -> dict:
    """memory_probe in a new Python process, so that nothing else this process did counts."""
    cmd = [sys.executable, "-m", "sdgm.bench.device", "--configfile", str(Path(configfile).resolve()),
           "--probe", experiment, mode, "--vocab-size", str(vocab_size), "--score-batch-size", str(score_batch_size)]
    if device:
        cmd += ["--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    if out.returncode != 0:
        raise RuntimeError(f"the memory probe of {experiment} ({mode}) failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def default_experiments(config: dict) -> list[str]:
    """The first experiment of each model in the config's order, but a model that leaks (never compared)."""
    first: dict[str, str] = {}
    for name, exp in config["experiments"].items():
        first.setdefault(exp["model"], name)
    return [e for m, e in first.items() if m != "linformer_noncausal"]


def device_benchmark(config: dict, configfile: Path, out: Path, *, corpus: str, experiments: list[str],
                     device: str | None, repeats: int, warmup: int, new_tokens: int, batch_sizes: list[int],
                     context_multiple: int, score_batch_size: int, scaling_from: Path | None,
                     scaling_args: list[str], command: str, log=print, deadline: float | None = None,
                     skip_scaling: bool = False) -> dict:
    """Each experiment's records, written as it finishes, then the scaling benchmark. deadline (time.monotonic()):
    an experiment predicted not to finish before it is recorded as skipped in device.json with the prediction;
    device.json is rewritten after every experiment ("complete": false until the end)."""
    import torch

    from ..common.atomic import write_json_atomic
    from ..models.interface import declared
    from ..harness.provenance import config_hash, provenance
    from ..models.registry import build_model
    from ..harness.train import TrainConfig, resolve_device
    from .generation import measure_generation
    from .throughput import measure_throughput
    from ..common.timing import load_average

    vocab_size = int(config["corpora"][corpus]["expected"]["vocab_size"])
    settings = {"corpus": corpus, "vocab_size": vocab_size, "experiments": experiments, "repeats": repeats,
                "warmup": warmup, "generation": {"batch_sizes": batch_sizes, "new_tokens": new_tokens,
                                                 "context_multiple": context_multiple, "paths": "own path only"},
                "score_batch_size": score_batch_size, "weights": "freshly initialized, seed 0",
                "scaling": ("not run (--skip-scaling)" if skip_scaling else
                            f"not rerun: the record {scaling_from}, a run of the scaling benchmark on this device"
                            if scaling_from else f"run here: python -m sdgm.bench.scaling {' '.join(scaling_args)}")}
    steps, t_start, load_start = {}, time.perf_counter(), load_average()
    skipped, per_param = {}, []  # experiment -> why not run; seconds per parameter of each finished experiment

    def write_device(complete: bool) -> dict:
        rec = {"schema": 1, "kind": "device", "command": command, "settings": settings, "wall_s": steps,
               "complete": complete, "skipped": skipped, "load_average": {"start": load_start, "end": load_average()},
               "provenance": provenance(resolve_device(device or config["train"].get("device", "auto")))}
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
        tp = measure_throughput(net, tcfg, repeats=repeats, warmup=warmup, generate_batch_sizes=(),
                                score_batch_size=score_batch_size)
        t2 = time.perf_counter()
        torch.manual_seed(0)  # fresh weights again: the throughput's training steps changed them
        net = build_model(model_name, vocab_size, **options)
        gen = measure_generation(net, tcfg, batch_sizes=batch_sizes, new_tokens=new_tokens,
                                 context_multiple=context_multiple, repeats=repeats, warmup=warmup,
                                 only_own_path=True)
        t3 = time.perf_counter()
        fpt, fpt_na = declared(net, "flops_per_token")
        metrics = {"params": net.num_params(), "flops_per_token": fpt,
                   "train_tokens_per_s": tp["modes"]["train"].get("tokens_per_s"),
                   "score_tokens_per_s": tp["modes"]["score"].get("tokens_per_s"),
                   "train_peak_mem_bytes": mem["train"]["peak_bytes"],
                   "score_peak_mem_bytes": mem["score"]["peak_bytes"]}
        na = {k: v for k, v in (("flops_per_token", fpt_na),
                                ("train_tokens_per_s", tp["modes"]["train"].get("na", {}).get("tokens_per_s")),
                                ("score_tokens_per_s", tp["modes"]["score"].get("na", {}).get("tokens_per_s")),
                                ("train_peak_mem_bytes", mem["train"]["na"]),
                                ("score_peak_mem_bytes", mem["score"]["na"])) if v}
        common = {"experiment": exp, "model": model_name, "corpus": corpus, "seed": 0, "fresh_weights": True,
                  "model_options": options, "train_config": train, "provenance": provenance(dev)}
        throughput_rec = {"schema": 1, "kind": "throughput", **common,
                          "settings": {"repeats": repeats, "warmup": warmup, "score_batch_size": score_batch_size,
                                       "generate_batch_sizes": []},
                          "config_hash": config_hash({"settings": settings, "options": options, "train": train}),
                          "device": tp["device"], "precision": tp["precision"], "metrics": metrics, "na": na,
                          "memory": mem, "modes": tp["modes"]}
        gen_rec = {"schema": 1, "kind": "generation", **common, "settings": settings["generation"],
                   "config_hash": config_hash({"settings": settings, "options": options, "train": train}), **gen,
                   "params": net.num_params()}
        for kind, rec in (("throughput", throughput_rec), ("generation", gen_rec)):
            write_json_atomic(out / "bench" / kind / corpus / f"{exp}-s0.json", json.loads(json.dumps(rec)))
        steps[exp] = {"memory_s": t1 - t0, "throughput_s": t2 - t1, "generation_s": t3 - t2}
        per_param.append((t3 - t0) / max(1, net.num_params()))
        write_device(False)
        b1 = gen["paths"][gen["own_path"]]["generate"].get(f"b{batch_sizes[0]}", {}).get("tokens_per_s")
        mib = {m: (metrics[f"{m}_peak_mem_bytes"] or 0) / 2**20 for m in MEMORY_MODES}
        log(f"{exp}: {metrics['params'] / 1e6:.2f} M params, train {metrics['train_tokens_per_s'] or 0:,.0f} tok/s, "
            f"generate b{batch_sizes[0]} {b1 or 0:,.1f} tok/s, peaks train {mib['train']:,.0f} MiB, score "
            f"{mib['score']:,.0f} MiB ({t3 - t0:.0f} s)", flush=True)
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
        scaling_cli.main(["--configfile", str(configfile), "--out", str(out), *scaling_args]
                         + (["--device", device] if device else []))
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
        return f"not run: predicted {guess:.0f} s ({n / 1e6:.2f} M parameters at the slowest rate so far), " \
               f"{left:.0f} s left of the budget"
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdgm.bench.device", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--configfile", type=Path, required=True, help="workflow config (models, experiments, train)")
    ap.add_argument("--out", type=Path, help="the device's results folder (bench/, tables/)")
    ap.add_argument("--corpus", default="wikitext2", help="whose vocabulary size the models get (default wikitext2, "
                                                          "the corpus of the efficiency claims)")
    ap.add_argument("--experiments", type=lambda t: [x for x in t.split(",") if x],
                    help="comma-separated (default: the first experiment of each model, but a leaking one)")
    ap.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the config's train.device)")
    ap.add_argument("--repeats", type=int, help="timed calls per measurement (default: benchmark.repeats)")
    ap.add_argument("--warmup", type=int, help="untimed calls first (default: benchmark.warmup)")
    ap.add_argument("--new-tokens", type=int, help="generated tokens per sequence (default: the config's)")
    ap.add_argument("--context-multiple", type=int, help="latency positions = this x L (default: the config's)")
    ap.add_argument("--batch-sizes", type=lambda t: [int(x) for x in t.split(",") if x],
                    help="generation batch sizes (default: the config's)")
    ap.add_argument("--score-batch-size", type=int, default=None, help="windows scored (default: the config's)")
    ap.add_argument("--scaling-from", type=Path, help="copy this scaling record of this device instead of running "
                                                      "the scaling benchmark")
    ap.add_argument("--scaling-args", default="", help="flags for python -m sdgm.bench.scaling (lengths, repeats)")
    ap.add_argument("--skip-scaling", action="store_true", help="run no scaling benchmark (it is run on its own)")
    ap.add_argument("--budget-s", type=float, help="stop this many seconds from the start: an experiment predicted "
                                                   "not to finish in what is left is recorded as skipped")
    ap.add_argument("--vocab-size", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--probe", nargs=2, metavar=("EXPERIMENT", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    deadline = None if args.budget_s is None else time.monotonic() + args.budget_s
    from ..harness.config import load_config

    try:
        config = load_config(args.configfile)
    except ValueError as e:
        ap.error(str(e))
    bench = config["benchmark"]
    score_batch_size = args.score_batch_size or bench["throughput"]["score_batch_size"]
    if args.probe:  # one memory measurement in this (fresh) process; the JSON on the last line of stdout
        exp, mode = args.probe
        if mode not in MEMORY_MODES:
            ap.error(f"--probe MODE is one of {', '.join(MEMORY_MODES)}")
        print(json.dumps(memory_probe(config, exp, args.vocab_size, mode, args.device, score_batch_size)))
        return 0
    if args.out is None:
        ap.error("--out DIR is required")
    experiments = args.experiments or default_experiments(config)
    unknown = [e for e in experiments if e not in config["experiments"]]
    if unknown:
        ap.error(f"unknown experiment(s) {', '.join(unknown)}; the config has {', '.join(config['experiments'])}")
    if args.corpus not in config["corpora"]:
        ap.error(f"unknown corpus {args.corpus!r}")
    gen = bench["generation"]
    command = "python -m sdgm.bench.device " + " ".join(argv if argv is not None else sys.argv[1:])
    device_benchmark(config, args.configfile, args.out, corpus=args.corpus, experiments=experiments,
                     device=args.device, repeats=args.repeats or bench["repeats"],
                     warmup=bench["warmup"] if args.warmup is None else args.warmup,
                     new_tokens=args.new_tokens or gen["new_tokens"],
                     batch_sizes=args.batch_sizes or gen["batch_sizes"],
                     context_multiple=args.context_multiple or gen["context_multiple"],
                     score_batch_size=score_batch_size, scaling_from=args.scaling_from,
                     scaling_args=args.scaling_args.split(), command=command, deadline=deadline,
                     skip_scaling=args.skip_scaling)
    from ..reporting.claims import build_claims, find_records

    for name, p in build_claims(args.out / "tables", **find_records(args.out)).items():
        print(f"{name}: {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
