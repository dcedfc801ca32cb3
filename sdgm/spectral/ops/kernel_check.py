"""The kernel check's child process: `python -m sdgm.spectral.ops.kernel_check --device cuda:0 --impl triton` reads
the problems as JSON on stdin ([[B, L, K, D, first position, dtype name], ...]), runs
sdgm.spectral.ops.dispatch.check_kernels on them and prints one JSON line {"ok": bool, "why": str}. A fault that
kills this process (an illegal memory access) is seen by the parent, check_kernels_in_child, as the child's death.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from .dispatch import check_kernels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", required=True)
    parser.add_argument("--impl", default="triton")
    args = parser.parse_args(argv)
    cases = []
    for B, L, K, D, first, dtype in json.loads(sys.stdin.read()):
        if not isinstance(getattr(torch, str(dtype), None), torch.dtype):
            raise SystemExit(f"kernel_check: not a torch dtype: {dtype!r}")
        cases.append((int(B), int(L), int(K), int(D), int(first), getattr(torch, dtype)))
    ok, why = check_kernels(args.device, args.impl, tuple(cases))
    print(json.dumps({"ok": ok, "why": why}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
