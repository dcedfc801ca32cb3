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
import json
import sys
import time
from pathlib import Path

from ..common.usage import command_parser
from .device_probe import MEMORY_MODES, memory_probe
from .device_run import default_experiments, device_benchmark


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("python -m sdgm.bench.device", __doc__)
    ap.add_argument("--configfile", type=Path, required=True, help="workflow config (models, experiments, train)")
    ap.add_argument("--out", type=Path, help="the device's results folder (bench/, tables/)")
    ap.add_argument(
        "--corpus",
        default="wikitext2",
        help="whose vocabulary size the models get (default wikitext2, the corpus of the efficiency claims)",
    )
    ap.add_argument(
        "--experiments",
        type=lambda t: [x for x in t.split(",") if x],
        help="comma-separated (default: the first experiment of each model, but a leaking one)",
    )
    ap.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the config's train.device)")
    ap.add_argument("--repeats", type=int, help="timed calls per measurement (default: benchmark.repeats)")
    ap.add_argument("--warmup", type=int, help="untimed calls first (default: benchmark.warmup)")
    ap.add_argument("--new-tokens", type=int, help="generated tokens per sequence (default: the config's)")
    ap.add_argument("--context-multiple", type=int, help="latency positions = this x L (default: the config's)")
    ap.add_argument(
        "--batch-sizes",
        type=lambda t: [int(x) for x in t.split(",") if x],
        help="generation batch sizes (default: the config's)",
    )
    ap.add_argument("--score-batch-size", type=int, default=None, help="windows scored (default: the config's)")
    ap.add_argument(
        "--scaling-from",
        type=Path,
        help="copy this scaling record of this device instead of running the scaling benchmark",
    )
    ap.add_argument("--scaling-args", default="", help="flags for python -m sdgm.bench.scaling (lengths, repeats)")
    ap.add_argument("--skip-scaling", action="store_true", help="run no scaling benchmark (it is run on its own)")
    ap.add_argument(
        "--budget-s",
        type=float,
        help="stop this many seconds from the start: an experiment predicted "
        "not to finish in what is left is recorded as skipped",
    )
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
    device_benchmark(
        config,
        args.configfile,
        args.out,
        corpus=args.corpus,
        experiments=experiments,
        device=args.device,
        repeats=args.repeats or bench["repeats"],
        warmup=bench["warmup"] if args.warmup is None else args.warmup,
        new_tokens=args.new_tokens or gen["new_tokens"],
        batch_sizes=args.batch_sizes or gen["batch_sizes"],
        context_multiple=args.context_multiple or gen["context_multiple"],
        score_batch_size=score_batch_size,
        scaling_from=args.scaling_from,
        scaling_args=args.scaling_args.split(),
        command=command,
        deadline=deadline,
        skip_scaling=args.skip_scaling,
    )
    from ..reporting.claims import build_claims, find_records

    for name, p in build_claims(args.out / "tables", **find_records(args.out)).items():
        print(f"{name}: {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
