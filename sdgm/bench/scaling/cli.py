r"""The scaling benchmark on its own, and its floors on paper.

    python -m sdgm.bench.scaling                          # the floor table at an H100's rates (docs/spectral-decoder.md)
    python -m sdgm.bench.scaling --rates-from results/cpu/bench/scaling.json   # ... at the rates a record measured
    python -m sdgm.bench.scaling --configfile config/config.yaml --out results/mymachine \
        --lengths 128,512,2048,8192 --tokens-per-batch 8192 --batch-lengths 1024,4096,16384

With --out it runs the benchmark of rule `scaling` on this machine, with the config's benchmark.scaling section (the
flags override its lengths, batch, decoders and repeats) and its train device and precision, and writes
OUT/bench/scaling.json (after every case, so a run stopped midway leaves the cases it finished), then
OUT/tables/scaling{,_slopes}.{csv,md,tex} and OUT/figures/scaling.{png,pdf}: the layer comparison without training
anything. --budget-s stops it at a deadline: the lengths of both views run shortest first, and a case predicted
(from the layer's shorter cases) not to finish in what is left is recorded as skipped with the prediction. The
paper config's lengths (to 65,536 tokens per batch and L = 1,048,576 at B = 1) take hours on a CPU; the flags pick
a range the machine can do.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

from ...common.usage import command_parser
from .layers import CausalAttentionLayer, SDGMMixingLayer
from .measure import scaling_from_config
from .rates import floor_of

# bf16 dense matmul, hardware sine (MUFU), fp32 multiply-adds on the CUDA cores (132 SMs x 128 a clock x 1.7 GHz x 2),
# device-to-device copy
H100_RATES = {"matmul_flops_per_s": 8.0e14, "sines_per_s": 3.6e12, "vector_flops_per_s": 5.7e13, "bytes_per_s": 3.0e12}


def floor_table(
    rates: dict = H100_RATES,
    d_model: int = 512,
    n_atoms: int = 256,
    kernel_size: int = 3,
    n_heads: int = 8,
    tokens_per_batch: int = 65536,
    lengths=(128, 512, 2048, 8192, 32768, 65536),
    batch_lengths=(1024, 16384, 262144, 1048576),
    mode: str = "forward_backward",
    bytes_per_value: int = 2,
) -> str:
    """A Markdown table of the floors of the SDGM layer with a sine per atom element ("direct": naive, chunked) and
    with atoms advanced by rotation ("rotation": the rotation and triton decoders), and of causal attention."""
    sdgm = {
        alg: SDGMMixingLayer(d_model, n_atoms, 2, kernel_size, dec)
        for alg, dec in (("direct", "chunked"), ("rotation", "rotation"))
    }
    attn = CausalAttentionLayer(d_model, n_heads, 2)
    lines = [
        "| view | L | B | SDGM direct (ms) | bound | SDGM rotation (ms) | bound | attention (ms) | bound "
        "| attention / SDGM direct | attention / SDGM rotation |",
        "|" + "---|" * 11,
    ]
    cases = [("tokens", L, tokens_per_batch // L) for L in lengths] + [("batch", L, 1) for L in batch_lengths]
    for view, L, B in cases:
        lay = {alg: floor_of(layer.cost(B, L, mode, bytes_per_value), rates) for alg, layer in sdgm.items()}
        att = floor_of(attn.cost(B, L, mode, bytes_per_value), rates)
        lines.append(
            f"| {view} | {L:,} | {B} | {lay['direct']['time_s'] * 1e3:.3f} | {lay['direct']['bound']} "
            f"| {lay['rotation']['time_s'] * 1e3:.3f} | {lay['rotation']['bound']} "
            f"| {att['time_s'] * 1e3:.3f} | {att['bound']} | {att['time_s'] / lay['direct']['time_s']:.2f} "
            f"| {att['time_s'] / lay['rotation']['time_s']:.2f} |"
        )
    return "\n".join(lines)


def crossover_length(
    rates: dict = H100_RATES,
    algorithm: str = "rotation",
    d_model: int = 512,
    n_atoms: int = 256,
    kernel_size: int = 3,
    n_heads: int = 8,
    mode: str = "forward_backward",
    bytes_per_value: int = 2,
) -> int | None:
    """The least L (a power of two's multiple of 256, up to 2^24) from which the SDGM layer's floor at B = 1 is
    below attention's, or None."""
    layer = SDGMMixingLayer(d_model, n_atoms, 2, kernel_size, "chunked" if algorithm == "direct" else "rotation")
    attn = CausalAttentionLayer(d_model, n_heads, 2)
    for L in range(256, (1 << 24) + 1, 256):
        if (
            floor_of(layer.cost(1, L, mode, bytes_per_value), rates)["time_s"]
            < floor_of(attn.cost(1, L, mode, bytes_per_value), rates)["time_s"]
        ):
            return L
    return None


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    ap = command_parser("python -m sdgm.bench.scaling", __doc__)
    ap.add_argument("--configfile", type=Path, help="workflow config (benchmark.scaling, train.device/precision)")
    ap.add_argument("--out", type=Path, help="run the benchmark and write bench/, tables/ and figures/ here")
    ap.add_argument("--lengths", type=_ints, help="view 'tokens': the lengths L (comma-separated)")
    ap.add_argument("--tokens-per-batch", type=int, help="view 'tokens': B = this // L")
    ap.add_argument("--batch-lengths", type=_ints, help="view 'batch': the lengths L at B = batch_view.batch_size")
    ap.add_argument("--decoders", type=lambda t: t.split(","), help="SDGM decoders: naive,chunked,rotation,triton")
    ap.add_argument(
        "--rates-from",
        type=Path,
        help="without --out: the floor table at the rates of this scaling "
        "record (bench/scaling.json) instead of an H100's",
    )
    ap.add_argument("--repeats", type=int, help="timed calls per case (median)")
    ap.add_argument("--warmup", type=int, help="untimed calls first")
    ap.add_argument("--device", help="auto, cpu, cuda, cuda:N (default: the config's train.device)")
    ap.add_argument(
        "--budget-s",
        type=float,
        help="stop this many seconds from the start, keeping what finished: "
        "shortest lengths first, a case predicted not to fit is skipped "
        "with the prediction",
    )
    args = ap.parse_args(argv)
    start = time.monotonic()
    if args.out is None:
        if args.configfile is not None:
            ap.error("--configfile runs the benchmark: give --out DIR for its record, tables and figure")
        rates, bytes_per_value = H100_RATES, 2
        if args.rates_from is not None:
            try:
                record = json.loads(args.rates_from.read_text())
                rates, bytes_per_value = record["rates"], 2 if record["settings"]["precision"] == "bf16" else 4
            except (OSError, ValueError, KeyError) as e:
                ap.error(f"--rates-from {args.rates_from}: not a readable scaling record ({e})")
        print(floor_table(rates, bytes_per_value=bytes_per_value))
        for alg in ("direct", "rotation"):
            L = crossover_length(rates, alg, bytes_per_value=bytes_per_value)
            print(
                f"SDGM ({alg}) below attention at B = 1 from L = {L:,}"
                if L
                else f"SDGM ({alg}) not below attention at B = 1 up to L = 2^24"
            )
        return 0
    if args.configfile is None:
        ap.error("--out needs --configfile (config/config.yaml has the paper's layer sizes)")
    from ...harness.config import load_config
    from ...reporting.bench_report import build_scaling_report

    try:
        config = load_config(args.configfile)
    except ValueError as e:  # unreadable, or not a valid config: the message names the file and the field
        ap.error(str(e))
    bench, train = copy.deepcopy(config["benchmark"]), dict(config["train"])
    sc = bench["scaling"]
    for key, value in (
        ("lengths", args.lengths),
        ("tokens_per_batch", args.tokens_per_batch),
        ("sdgm_decoders", args.decoders),
    ):
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
    if args.budget_s is not None and args.budget_s <= 0:
        ap.error("--budget-s must be positive")
    budget = None if args.budget_s is None else args.budget_s - (time.monotonic() - start)
    scaling_from_config(bench, train, record_path, budget_s=budget)
    written = build_scaling_report(record_path, args.out / "tables", args.out / "figures")
    print(f"wrote {record_path}")
    for paths in written.values():
        for p in paths:
            print(f"wrote {p}")
    return 0
