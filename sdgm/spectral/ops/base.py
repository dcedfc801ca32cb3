"""What the spectral decoder's implementations share: the error a bad input raises, the positions between exact
anchors of the rotation, the rotation's step, and whether Triton runs its kernels on the CPU. spectral.py (the op,
its reference implementations and the choice among them) and the kernels (spectral_cpu.py, spectral_triton.py)
import these from here, so that the kernels never import the module that chooses them.
"""
from __future__ import annotations

import math
import os

import torch

ROTATION_ANCHOR = 32  # positions between exact anchors where atoms are advanced by rotation (spectral_cpu.ANCHOR)


class SpectralOpError(ValueError):
    """Bad input to spectral_decode: the message names the argument and what was expected."""


def uniform_step(positions: torch.Tensor) -> float | None:
    """The constant step of positions (0.0 for a single one), or None if they do not advance by one step (then no
    single rotation carries the atoms from one position to the next)."""
    L = positions.shape[0]
    if L == 0:
        return None
    if L == 1:
        return 0.0
    p = positions.to(torch.float64)
    step = float(p[1] - p[0])
    expected = p[0] + step * torch.arange(L, dtype=torch.float64, device=p.device)
    return step if torch.equal(p, expected) else None


def rotation_step(frequency: torch.Tensor, turns: float,
                  dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos w, sin w), (K, D) in `dtype`, of the rotation by w = 2 pi F turns (one step of `turns` periods), computed
    in float64 with w reduced in turns: the rotation's own error is one rounding of `dtype`."""
    w = (frequency.detach().to(torch.float64) * turns).frac_().mul_(2 * math.pi)
    return torch.cos(w).to(dtype).contiguous(), torch.sin(w).to(dtype).contiguous()


def triton_interpreting() -> bool:
    """True when Triton runs kernels on the CPU (TRITON_INTERPRET=1, set before Triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
