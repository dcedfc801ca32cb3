"""The hardware sine's rate and the cores' fp32 multiply-add rate on a CUDA device, for the benchmarks' floors
(rates.device_rates): a Triton kernel of independent chains in registers."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice


@triton.jit
def _chain(x, SINE: tl.constexpr):
    if SINE:
        y = libdevice.fast_sinf(x) * 1.5
    else:
        y = x * 0.999 + 0.001
    return y


@triton.jit
def _rate_kernel(X, OUT, N_ITER, BLOCK: tl.constexpr, SINE: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    a = tl.load(X + offs)
    b = a + 0.25
    c = a + 0.5
    d = a + 0.75
    for _ in range(N_ITER):  # four independent chains (hardware sines, or fp32 multiply-adds) in registers
        a = _chain(a, SINE)
        b = _chain(b, SINE)
        c = _chain(c, SINE)
        d = _chain(d, SINE)
    tl.store(OUT + offs, a + b + c + d)


def _chain_rate(device: torch.device, sine: bool, n_iter: int, repeats: int) -> float:
    """Chain steps per second of _rate_kernel on a CUDA device, every SM busy (median of `repeats` launches)."""
    from ...common.timing import time_calls

    block = 1024
    programs = 8 * torch.cuda.get_device_properties(device).multi_processor_count
    x = torch.rand(programs * block, device=device)
    out = torch.empty_like(x)
    timing = time_calls(
        lambda: _rate_kernel[(programs,)](x, out, n_iter, BLOCK=block, SINE=sine),
        repeats=repeats,
        warmup=1,
        device=device,
    )
    return 4 * n_iter * programs * block / timing["median_s"]


def hardware_sine_rate(device: torch.device, n_iter: int = 4096, repeats: int = 5) -> float:
    """Sines per second of the hardware sine on a CUDA device."""
    return _chain_rate(device, True, n_iter, repeats)


def vector_flops_rate(device: torch.device, n_iter: int = 4096, repeats: int = 5) -> float:
    """fp32 FLOP/s of elementwise multiply-adds on a CUDA device's cores (not its tensor cores)."""
    return 2 * _chain_rate(device, False, n_iter, repeats)
