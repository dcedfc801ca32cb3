"""What the device can do, measured once per benchmark (device_rates: matmul FLOP/s, sines/s, vector FLOP/s,
copy bytes/s), and the floor of a cost at those rates (floor_of)."""

from __future__ import annotations

import torch

from ...common.timing import time_calls
from ...spectral.ops.dispatch import triton_status


def _median_rate(fn, work: float, device, repeats: int = 5, warmup: int = 2) -> float:
    return work / time_calls(fn, repeats=repeats, warmup=warmup, device=device)["median_s"]


def device_rates(device: torch.device | str, dtype: torch.dtype = torch.float32) -> dict:
    """Measured peak-ish rates of `device`: matmul FLOP/s in `dtype`, sines/s, copy bytes/s, with the method.

    matmul: an n x n product (n = 8192 on CUDA, 1024 on CPU). sines: on CUDA a Triton kernel of independent chains
    of hardware sines in registers (the special-function unit's rate); elsewhere torch.sin over a cache-resident
    buffer (the library sine). bandwidth: a copy of a buffer far larger than the caches, read + write bytes.
    """
    device = torch.device(device)
    cuda = device.type == "cuda"
    n = 8192 if cuda else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    rates = {"matmul_flops_per_s": _median_rate(lambda: a @ a, 2 * n**3, device), "matmul_dtype": str(dtype)}
    if cuda and triton_status(device)[0]:
        from .sine_rate import hardware_sine_rate, vector_flops_rate

        rates["sines_per_s"], rates["sine_method"] = hardware_sine_rate(device), "Triton kernel, hardware sine"
        rates["vector_flops_per_s"] = vector_flops_rate(device)
        rates["vector_method"] = "Triton kernel, independent fp32 multiply-add chains in registers"
    else:
        # a CPU's matrix product runs on the same vector multiply-add units as elementwise arithmetic
        rates["vector_flops_per_s"] = rates["matmul_flops_per_s"]
        rates["vector_method"] = "the matmul's rate (a CPU multiplies matrices on its vector units)"
        x = torch.rand(1 << 20, device=device)
        y = torch.empty_like(x)
        rates["sines_per_s"] = _median_rate(lambda: torch.sin(x, out=y), x.numel(), device, repeats=21)
        rates["sine_method"] = "torch.sin over a 4 MiB buffer"
    m = (1 << 28 if cuda else 1 << 24) // 4  # fp32 values: 256 MiB on CUDA, 16 MiB on a CPU
    src = torch.empty(m, device=device)
    dst = torch.empty_like(src)
    rates["bytes_per_s"] = _median_rate(lambda: dst.copy_(src), 2 * 4 * m, device)
    rates["bandwidth_method"] = f"copy of {4 * m >> 20} MiB, read + write"
    return rates


def floor_of(cost: dict, rates: dict) -> dict:
    """{time_s, bound, parts}: the least time of `cost` at `rates`, and which part bounds it."""
    parts = {
        "flops": cost["flops"] / rates["matmul_flops_per_s"],
        "sines": cost["sines"] / rates["sines_per_s"],
        "bytes": cost["bytes"] / rates["bytes_per_s"],
    }
    if cost.get("vector_flops"):  # elementwise arithmetic (the rotation decoder's): the vector rate, else the matmul's
        parts["vector_flops"] = cost["vector_flops"] / rates.get("vector_flops_per_s", rates["matmul_flops_per_s"])
    bound = max(parts, key=parts.get)
    return {**cost, "time_s": parts[bound], "bound": bound, "parts_s": parts}
