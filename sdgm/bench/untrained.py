"""Training throughput of a freshly initialised model at a config's setup: per option variant, eager and compiled.

    python -m sdgm.bench.untrained --configfile config/config.yaml --model sdgm --vocab-size 10000 \
        --variant decoder=chunked --variant decoder=naive --out results/mymachine/bench/untrained_sdgm.json

The throughput rule measures trained runs; this measures the step alone, before anything is trained, so that
implementations of one model (SDGM's decoders, say) can be compared on a machine in minutes. The model gets the
config's options for it (models.<model>) and the shared context length, the step is the trainer's (optimizer,
clipping, precision from train:), and each variant is timed with train.compile false and true
(sdgm.bench.throughput.measure_throughput: warmup, synchronized repeats, median). Random token ids: the cost of
these models does not depend on them. The record carries provenance and a hash of its settings.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import yaml

from ..common.usage import command_parser

COMPILE_MODES = {"eager": (False,), "compiled": (True,), "both": (False, True)}


def parse_variant(text: str) -> dict:
    """'decoder=naive,n_atoms=128' -> {'decoder': 'naive', 'n_atoms': 128} (values read as YAML scalars)."""
    options = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"a variant is option=value[,option=value...]; got {text!r}")
        options[key.strip()] = yaml.safe_load(value)
    return options


def untrained_throughput(
    config: dict,
    model: str,
    vocab_size: int,
    variants: list[dict],
    compile_modes=(False, True),
    device: str | None = None,
    repeats: int | None = None,
    warmup: int | None = None,
    log=print,
) -> dict:
    """{settings, provenance, cases: [{options, compile, train_tokens_per_s, ...}]} for each variant x mode."""
    import torch

    from ..harness.provenance import config_hash, provenance
    from ..harness.recipe import TrainConfig, resolve_device
    from ..models.registry import build_model, model_config, model_options
    from .throughput import measure_throughput

    train = {k: v for k, v in config["train"].items() if k in {f.name for f in dataclasses.fields(TrainConfig)}}
    if device:
        train["device"] = device
    repeats = config["benchmark"]["repeats"] if repeats is None else repeats
    warmup = config["benchmark"]["warmup"] if warmup is None else warmup
    base = dict(config["models"].get(model) or {})
    base.update(model_options(model, base, train.get("seq_len", TrainConfig().seq_len)))  # the context length last
    for options in variants or [{}]:  # an unknown or ill-fitting option is refused before anything is timed
        model_config(model, vocab_size, **{**base, **options})
    cases = []
    for options in variants or [{}]:
        opts = {**base, **options}
        for compiled in compile_modes:
            torch.manual_seed(0)
            net = build_model(model, vocab_size, **opts)
            tcfg = TrainConfig(**{**train, "compile": compiled})
            res = measure_throughput(
                net,
                tcfg,
                repeats=repeats,
                warmup=warmup + (1 if compiled else 0),
                generate_batch_sizes=(),
                score_batch_size=tcfg.batch_size,
            )
            tr, sc = res["modes"]["train"], res["modes"]["score"]
            case = {
                "options": options,
                "compile": compiled,
                "status": tr["status"],
                "train_tokens_per_s": tr.get("tokens_per_s"),
                "train_step_median_s": (tr.get("timing") or {}).get("median_s"),
                "score_tokens_per_s": sc.get("tokens_per_s"),
                "params": net.num_params(),
                "device": res["device"],
                "precision": res["precision"],
                "modes": res["modes"],
            }
            cases.append(case)
            log(
                f"{model} {options or '(config options)'} {'compiled' if compiled else 'eager':8s} "
                + (
                    f"{case['train_tokens_per_s']:12,.0f} training tokens/s"
                    if case["train_tokens_per_s"]
                    else case["status"]
                )
            )
    settings = {
        "model": model,
        "vocab_size": vocab_size,
        "model_options": base,
        "variants": variants,
        "train": train,
        "repeats": repeats,
        "warmup": warmup,
        "compile_modes": list(compile_modes),
    }
    return {
        "kind": "fresh_throughput",
        "settings": settings,
        "config_hash": config_hash(settings),
        "provenance": provenance(resolve_device(train.get("device", "auto"))),
        "cases": cases,
    }


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("python -m sdgm.bench.untrained", __doc__)
    ap.add_argument("--configfile", type=Path, required=True, help="workflow config (models, train, benchmark)")
    ap.add_argument("--model", required=True, help="a model name of the catalog (sdgm, gpt2, ...)")
    ap.add_argument("--vocab-size", type=int, default=10000, help="10000: Penn Treebank; WikiText-2 has 33278")
    ap.add_argument(
        "--variant",
        type=parse_variant,
        action="append",
        default=[],
        help="model options over the config's, e.g. decoder=naive (repeatable; none: the config's)",
    )
    ap.add_argument("--compile", choices=sorted(COMPILE_MODES), default="both")
    ap.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the config's train.device)")
    ap.add_argument("--repeats", type=int, help="timed steps (default: benchmark.repeats)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default: benchmark.warmup; compiled: one more)")
    ap.add_argument("--out", type=Path, required=True, help="the JSON record to write")
    args = ap.parse_args(argv)
    from ..common.atomic import write_json_atomic
    from ..harness.config import load_config
    from ..models.registry import model_classes

    try:
        config = load_config(args.configfile)
    except ValueError as e:  # unreadable, or not a valid config: the message names the file and the field
        ap.error(str(e))
    try:
        model_classes(args.model)
        record = untrained_throughput(
            config,
            args.model,
            args.vocab_size,
            args.variant,
            COMPILE_MODES[args.compile],
            device=args.device,
            repeats=args.repeats,
            warmup=args.warmup,
        )
    except (KeyError, TypeError, ValueError) as e:  # unknown model or option, options that do not fit together
        ap.error(str(e.args[0]) if e.args else str(e))
    write_json_atomic(args.out, record)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
