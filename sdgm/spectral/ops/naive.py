"""The spectral decoder by its definition: the reference every other implementation is tested against.

    S[t, k, d]     = A[k, d] * sin(2 pi F[k, d] p_t / P + Phi[k, d])     atoms at positions p (L,), period P
    X_hat[b, t, d] = sum_k C[b, t, k] * S[t, k, d]                      C (B, L, K); A, F, Phi (K, D)

S is materialized for all L positions (L x K x D in the parameters' dtype), then mixed by one einsum: memory
O(L K D), gradients by autograd. In float64 it is the definition to float64 rounding (tests compare the other
implementations with it so); in fp32 its angles lose accuracy far past the period (base.warn_if_fp32_angles_...).
"""

from __future__ import annotations

import torch

from .base import angles_need_reduction, spectral_angles, warn_if_fp32_angles_lose_accuracy


def spectral_atoms(
    positions: torch.Tensor, amplitude: torch.Tensor, frequency: torch.Tensor, phase: torch.Tensor, period: float
) -> torch.Tensor:
    """positions (T,) -> S (T, K, D) in the parameters' dtype (fp32 in the model)."""
    warn_if_fp32_angles_lose_accuracy(positions, frequency, phase, period, "naive")
    reduce = angles_need_reduction(positions, frequency, phase, period)
    return amplitude[None] * torch.sin(spectral_angles(positions, frequency, phase, period, reduce)[0])


def naive_spectral_decode(
    c: torch.Tensor,
    amplitude: torch.Tensor,
    frequency: torch.Tensor,
    phase: torch.Tensor,
    positions: torch.Tensor,
    period: float,
) -> torch.Tensor:
    """C (B, L, K), parameters (K, D), positions (L,) -> X_hat (B, L, D) in C's dtype, differentiable in all four
    (inputs as spectral_decode takes them; it checks them)."""
    S = spectral_atoms(positions, amplitude, frequency, phase, period)  # (L, K, D)
    return torch.einsum("blk,lkd->bld", c, S.to(c.dtype))
