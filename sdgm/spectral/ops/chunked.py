"""The spectral decoder with the atoms recomputed block by block: memory O(block K D) instead of the naive
reference's O(L K D), on any device.

A torch.autograd.Function saves only C and the parameters; forward and backward each rebuild S for `block`
positions at a time. Gradients (G = dL/dX_hat, theta = 2 pi F p_t / P + Phi):
    dC[b, t, k] = sum_d G[b, t, d] S[t, k, d]
    Q[t, k, d]  = sum_b C[b, t, k] G[b, t, d]
    dA = sum_t Q sin(theta);  dPhi = sum_t Q A cos(theta);  dF = sum_t Q A cos(theta) 2 pi p_t / P
The mixing runs in C's dtype, the atoms and the parameter gradients in the parameters' (fp32 in the model).
"""

from __future__ import annotations

import torch

from .base import SpectralOpError, angles_need_reduction, spectral_angles, warn_if_fp32_angles_lose_accuracy

# positions per block = this // (K * D), at least 1. On a CPU a block's tensors should stay near the core's
# L2 cache (2**20 fp32 values = 4 MiB); on a GPU larger blocks keep the kernel launches few (16 MiB).
DEFAULT_BLOCK_ELEMENTS = {"cpu": 1 << 20, "other": 1 << 22}


def chunked_spectral_decode(
    c: torch.Tensor,
    amplitude: torch.Tensor,
    frequency: torch.Tensor,
    phase: torch.Tensor,
    positions: torch.Tensor,
    period: float,
    block: int | None = None,
) -> torch.Tensor:
    """C (B, L, K), parameters (K, D), positions (L,) -> X_hat (B, L, D) in C's dtype, `block` positions at a time
    (default DEFAULT_BLOCK_ELEMENTS // (K * D))."""
    K, D = amplitude.shape
    if block is None:
        elements = DEFAULT_BLOCK_ELEMENTS["cpu" if c.device.type == "cpu" else "other"]
        block = max(1, elements // (K * D))
    if block < 1:
        raise SpectralOpError(f"block must be at least 1; got {block}")
    return ChunkedSpectralDecode.apply(c, amplitude, frequency, phase, positions, float(period), int(block))


def _no_autocast(device: torch.device):
    return torch.autocast(device.type, enabled=False)


class ChunkedSpectralDecode(torch.autograd.Function):
    """Memory O(block K D): S exists for `block` positions at a time, in forward and in backward."""

    @staticmethod
    def forward(ctx, c, amplitude, frequency, phase, positions, period: float, block: int):
        B, L, K = c.shape
        D = amplitude.shape[1]
        out = torch.empty(B, L, D, dtype=c.dtype, device=c.device)  # (B, L, D)
        warn_if_fp32_angles_lose_accuracy(positions, frequency, phase, period, "chunked")
        reduce = angles_need_reduction(positions, frequency, phase, period)
        with _no_autocast(c.device), torch.no_grad():
            for s in range(0, L, block):
                e = min(L, s + block)
                theta = spectral_angles(positions[s:e], frequency, phase, period, reduce)[0]  # (T, K, D)
                S = theta.sin_().mul_(amplitude)  # in place: one tensor per block
                out[:, s:e] = torch.einsum("btk,tkd->btd", c[:, s:e], S.to(c.dtype))
        ctx.save_for_backward(c, amplitude, frequency, phase, positions)
        ctx.period, ctx.block, ctx.reduce = period, block, reduce
        return out

    @staticmethod
    def backward(ctx, grad):
        c, amplitude, frequency, phase, positions = ctx.saved_tensors
        period, block = ctx.period, ctx.block
        B, L, K = c.shape
        need_c, need_a, need_f, need_p = ctx.needs_input_grad[:4]
        dc = torch.empty_like(c) if need_c else None
        da = torch.zeros_like(amplitude) if need_a else None
        df = torch.zeros_like(frequency, memory_format=torch.contiguous_format) if need_f else None  # flat views below
        dp = torch.zeros_like(phase, memory_format=torch.contiguous_format) if need_p else None
        grad = grad.to(c.dtype)
        # every (T, K, D) tensor below is made once and then updated in place: passes over memory, not the sines,
        # bound this loop on a CPU otherwise
        with _no_autocast(c.device), torch.no_grad():
            for s in range(0, L, block):
                e = min(L, s + block)
                theta, w = spectral_angles(positions[s:e], frequency, phase, period, ctx.reduce)  # (T, K, D), (T,)
                sin = torch.sin(theta)
                g = grad[:, s:e]  # (B, T, D)
                if need_c:
                    dc[:, s:e] = torch.einsum("btd,tkd->btk", g, (sin * amplitude).to(c.dtype))
                if need_a or need_f or need_p:
                    q = torch.einsum("btk,btd->tkd", c[:, s:e], g).to(amplitude.dtype)  # (T, K, D)
                    if need_a:
                        da += (q * sin).sum(0)
                    if need_f or need_p:
                        qcos = q.mul_(theta.cos_()).reshape(e - s, -1)  # (T, K * D)
                        if need_p:
                            dp.view(-1).add_(qcos.sum(0))
                        if need_f:
                            df.view(-1).addmv_(qcos.t(), w)
            if need_p:
                dp *= amplitude
            if need_f:
                df *= amplitude
        return dc, da, df, dp, None, None, None
