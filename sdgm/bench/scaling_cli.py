r"""The scaling benchmark on its own, and its floors on paper.

    python -m sdgm.bench.scaling                          # the floor table at an H100's rates (docs/spectral-decoder.md)
    python -m sdgm.bench.scaling --configfile config/config.yaml --out results/mymachine \
        --lengths 128,512,2048,8192 --tokens-per-batch 8192 --batch-lengths 1024,4096,16384

With --out it runs the benchmark of rule `scaling` on this machine, with the config's benchmark.scaling section (the
flags override its lengths, batch, decoders and repeats) and its train device and precision, and writes
OUT/bench/scaling.json, OUT/tables/scaling{,_slopes}.{csv,md,tex} and OUT/figures/scaling.{png,pdf}: the layer
comparison without training anything. The paper config's lengths (to 65,536 tokens per batch and L = 1,048,576
at B = 1) take hours on a CPU; the flags pick a range the machine can do.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

from ..ops.spectral import spectral_cost
from .scaling import CausalAttentionLayer, SDGMMixingLayer, floor_of, scaling_from_config

H100_RATES = {"matmul_flops_per_s": 8.0e14, "sines_per_s": 3.6e12, "bytes_per_s": 3.0e12}  # bf16 dense, MUFU, copy


def floor_table(rates: dict = H100_RATES, d_model: int = 512, n_atoms: int = 256, kernel_size: int = 3,
                n_heads: int = 8, tokens_per_batch: int = 65536, lengths=(128, 512, 2048, 8192, 32768, 65536),
                batch_lengths=(1024, 16384, 262144, 1048576), mode: str = "forward_backward") -> str:
    """A Markdown table of the floors of the SDGM layer (and its decoder alone) and of causal attention, bf16."""
    sdgm = SDGMMixingLayer(d_model, n_atoms, 2, kernel_size)
    attn = CausalAttentionLayer(d_model, n_heads, 2)
    lines = ["| view | L | B | decoder floor (ms) | bound | SDGM layer floor (ms) | bound | attention floor (ms) "
             "| bound | attention / SDGM |", "|" + "---|" * 10]
    cases = [("tokens", L, tokens_per_batch // L) for L in lengths] + [("batch", L, 1) for L in batch_lengths]
    for view, L, B in cases:
        dec = floor_of(spectral_cost(B, L, n_atoms, d_model, mode, 2), rates)
        lay = floor_of(sdgm.cost(B, L, mode, 2), rates)
        att = floor_of(attn.cost(B, L, mode, 2), rates)
        lines.append(f"| {view} | {L:,} | {B} | {dec['time_s'] * 1e3:.3f} | {dec['bound']} | {lay['time_s'] * 1e3:.3f} "
                     f"| {lay['bound']} | {att['time_s'] * 1e3:.3f} | {att['bound']} | "
                     f"{att['time_s'] / lay['time_s']:.2f} |")
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sdgm.bench.scaling", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--configfile", type=Path, help="workflow config (benchmark.scaling, train.device/precision)")
    ap.add_argument("--out", type=Path, help="run the benchmark and write bench/, tables/ and figures/ here")
    ap.add_argument("--lengths", type=_ints, help="view 'tokens': the lengths L (comma-separated)")
    ap.add_argument("--tokens-per-batch", type=int, help="view 'tokens': B = this // L")
    ap.add_argument("--batch-lengths", type=_ints, help="view 'batch': the lengths L at B = batch_view.batch_size")
    ap.add_argument("--decoders", type=lambda t: t.split(","), help="SDGM decoders: naive,chunked,triton")
    ap.add_argument("--repeats", type=int, help="timed calls per case (median)")
    ap.add_argument("--warmup", type=int, help="untimed calls first")
    ap.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the config's train.device)")
    args = ap.parse_args(argv)
    if args.out is None:
        if args.configfile is not None:
            ap.error("--configfile runs the benchmark: give --out DIR for its record, tables and figure")
        print(floor_table())
        return 0
    if args.configfile is None:
        ap.error("--out needs --configfile (config/config.yaml has the paper's layer sizes)")
    from ..bench_report import build_scaling_report
    from ..config import load_config

    try:
        config = load_config(args.configfile)
    except ValueError as e:  # unreadable, or not a valid config: the message names the file and the field
        ap.error(str(e))
    bench, train = copy.deepcopy(config["benchmark"]), dict(config["train"])
    sc = bench["scaling"]
    for key, value in (("lengths", args.lengths), ("tokens_per_batch", args.tokens_per_batch),
                       ("sdgm_decoders", args.decoders)):
        if value is not None:
            sc[key] = value
    if args.batch_lengths is not None:
        sc["batch_view"] = {**(sc.get("batch_view") or {"batch_size": 1}), "lengths": args.batch_lengths}
    for key in ("repeats", "warmup"):
        if getattr(args, key) is not None:
            bench[key] = getattr(args, key)
    if args.device:
        train["device"] = args.device
    record_path = args.out / "bench" / "scaling.json"
    scaling_from_config(bench, train, record_path)
    written = build_scaling_report(record_path, args.out / "tables", args.out / "figures")
    print(f"wrote {record_path}")
    for paths in written.values():
        for p in paths:
            print(f"wrote {p}")
    return 0
