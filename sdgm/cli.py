"""The `sdgm` command: one entry point whose subcommands run the package's commands.

    sdgm --help                                  # every command, one line each
    sdgm campaign run --minutes 25 ...           # = python -m sdgm.campaign run --minutes 25 ...
    sdgm bench device --help                     # the command's own options

Each subcommand hands the rest of the command line to the `main(argv)` of the module COMMANDS names, imported
only when that command runs, so `sdgm --help` imports no torch. The `python -m` forms stay: they run the same
`main`. A command's own --help may still name its `python -m` form.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command words -> (module whose main(argv) runs it, one line for `sdgm --help`); a group ("bench") is the first word.
# A module whose main() takes no argv (sass) gets its help here and no arguments.
COMMANDS: dict[tuple[str, ...], tuple[str, str]] = {
    ("campaign",): ("sdgm.campaign.cli", "GPU campaigns: run, plan, estimate, pack, import, render, verify"),
    ("window",): ("sdgm.campaign.window", "one short GPU window: the verdict first, then the campaign"),
    ("window-env",): ("sdgm.campaign.window_env", "the GPU window's wheels: fetch, unpack, install"),
    ("bench", "device"): ("sdgm.bench.device", "the costs on one device, fresh weights, and its claims"),
    ("bench", "untrained"): ("sdgm.bench.untrained", "training throughput of an untrained model per option variant"),
    ("bench", "scaling"): ("sdgm.bench.scaling.cli", "one mixing layer's time and memory against L; floors"),
    ("bench", "sass"): ("sdgm.bench.sass", "the Triton kernels' H100 (sm_90) machine code"),
    ("claims",): ("sdgm.reporting.claims", "judge the paper's claims from a results folder's records"),
    ("readings",): ("sdgm.reporting.readings", "the readings tables from a results folder's records"),
    ("quality",): ("sdgm.reporting.quality_report", "score a results folder's samples without model weights"),
}
GROUPS = {"bench": "the benchmarks that need no workflow: device, untrained, scaling, sass"}
NO_ARGV = {"sdgm.bench.sass"}  # main() takes no arguments
# modules that run under `python -m` but are not commands: child processes the package starts itself
NOT_COMMANDS = {
    "sdgm.harness.distributed": "a training process torchrun starts (sdgm.harness.distributed.launch)",
    "sdgm.spectral.ops.kernel_check": "the kernel check's child process (sdgm.spectral.ops.dispatch)",
}


def parser() -> argparse.ArgumentParser:
    """`sdgm` and its subcommands; each command's own arguments are left to its module (prefix_chars that match
    nothing, so that --help and every option reach the module's main)."""
    width = max(len(" ".join(words)) for words in COMMANDS)
    listing = "\n".join(f"  sdgm {' '.join(words):{width}}  {line}" for words, (_, line) in COMMANDS.items())
    ap = argparse.ArgumentParser(
        prog="sdgm",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"commands (each takes --help):\n{listing}",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True, help="one of the commands below")
    groups = {}
    for words, (module, help_line) in COMMANDS.items():
        if len(words) == 2 and words[0] not in groups:
            group = sub.add_parser(words[0], description=GROUPS[words[0]])
            groups[words[0]] = group.add_subparsers(dest="subcommand", metavar="COMMAND", required=True)
        into, listed = (groups[words[0]], {"help": help_line}) if len(words) == 2 else (sub, {})  # sdgm: the epilog
        if module in NO_ARGV:
            cmd = into.add_parser(words[-1], description=help_line, **listed)
        else:
            cmd = into.add_parser(words[-1], add_help=False, prefix_chars="\0", **listed)
            cmd.add_argument("args", nargs=argparse.REMAINDER)
        cmd.set_defaults(module=module)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    run = importlib.import_module(args.module).main
    rc = run() if args.module in NO_ARGV else run(args.args)
    return rc or 0


if __name__ == "__main__":
    raise SystemExit(main())
