"""What the spectral decoder's implementations share: the error a bad input raises and the check of the inputs, the
angles of the atoms (reduced in turns where they grow large, and the warning where fp32 angles lose accuracy), the
positions between exact anchors of the rotation, the rotation's step, and whether Triton runs its kernels on the
CPU. The implementations (naive.py, chunked.py, rotation_cpu.py, rotation_triton.py) and the choice among them
(dispatch.py) import these from here, so that no implementation imports the module that chooses it.
"""

from __future__ import annotations

import logging
import math
import os

import torch

log = logging.getLogger(__name__)

ROTATION_ANCHOR = 32  # positions between exact anchors where atoms are advanced by rotation (rotation_cpu.ANCHOR)


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


def rotation_step(
    frequency: torch.Tensor, turns: float, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos w, sin w), (K, D) in `dtype`, of the rotation by w = 2 pi F turns (one step of `turns` periods), computed
    in float64 with w reduced in turns: the rotation's own error is one rounding of `dtype`."""
    w = (frequency.detach().to(torch.float64) * turns).frac_().mul_(2 * math.pi)
    return torch.cos(w).to(dtype).contiguous(), torch.sin(w).to(dtype).contiguous()


def triton_interpreting() -> bool:
    """True when Triton runs kernels on the CPU (TRITON_INTERPRET=1, set before Triton is imported)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def check_inputs(c, amplitude, frequency, phase, positions, period) -> None:
    """One clear SpectralOpError for inputs spectral_decode cannot take: shapes, dtypes, devices, the period."""
    if not isinstance(c, torch.Tensor) or c.dim() != 3:
        raise SpectralOpError(f"C must be a (B, L, K) tensor; got {tuple(getattr(c, 'shape', ()))}")
    if not c.is_floating_point():
        raise SpectralOpError(f"C must be a floating-point tensor; got {c.dtype}")
    B, L, K = c.shape
    for name, p in (("amplitude", amplitude), ("frequency", frequency), ("phase", phase)):
        if p.dim() != 2 or p.shape[0] != K:
            raise SpectralOpError(f"{name} must be (K, D) with K = {K} (C's last dim); got {tuple(p.shape)}")
        if p.shape != amplitude.shape:
            raise SpectralOpError(
                f"amplitude, frequency and phase must have one shape; got {tuple(amplitude.shape)}, "
                f"{tuple(frequency.shape)}, {tuple(phase.shape)}"
            )
        if not p.is_floating_point():
            raise SpectralOpError(f"{name} must be floating point; got {p.dtype}")
        if p.device != c.device:
            raise SpectralOpError(f"{name} is on {p.device}, C on {c.device}")
    if positions.dim() != 1 or positions.shape[0] != L:
        raise SpectralOpError(f"positions must be (L,) with L = {L} (C's second dim); got {tuple(positions.shape)}")
    if positions.device != c.device:
        raise SpectralOpError(f"positions are on {positions.device}, C on {c.device}")
    if not (isinstance(period, (int, float)) and period > 0):
        raise SpectralOpError(f"period must be a positive number; got {period!r}")


# A CPU's vectorized sine reduces its argument cheaply up to about 1e4 radians and falls back to a slower reduction
# past it (one core: 0.42 G sines/s at 1e4, 0.07 at 1e5). Our own reduction in turns costs about a quarter of a sine.
REDUCE_ABOVE_RADIANS = 1.0e4


def angles_need_reduction(positions: torch.Tensor, frequency: torch.Tensor, phase: torch.Tensor, period: float) -> bool:
    """Whether spectral_angles should reduce the angles in turns: on a CPU only when they can pass
    REDUCE_ABOVE_RADIANS (bound: 2 pi max|F| max|p| / P + max|Phi|); elsewhere, and under torch.compile (no
    data-dependent branch there), always."""
    if positions.device.type != "cpu" or torch.compiler.is_compiling():
        return True
    if positions.numel() == 0:
        return False
    bound = 2 * math.pi * _max_abs(frequency) * positions.abs().amax().item() / period + _max_abs(phase)
    return bound > REDUCE_ABOVE_RADIANS


# The torch implementations (naive, chunked) form the angle in the parameters' dtype: in fp32 it is rounded by up to
# 2 pi |F p / P + Phi / 2 pi| 2**-24 radians. Past ANGLE_ROUNDING_WARN_RADIANS (|F p / P| near 2.7e5 turns: F = 64
# cycles per period of 128 past position 530,000) the atoms are off by that fraction of their amplitude, and past
# about 3 radians they are noise. The rotation and Triton decoders form their angles in float64 and are not affected.
ANGLE_ROUNDING_WARN_RADIANS = 0.1
_angle_warning_given = False


def warn_if_fp32_angles_lose_accuracy(
    positions: torch.Tensor, frequency: torch.Tensor, phase: torch.Tensor, period: float, impl: str
) -> None:
    """One warning per process where the fp32 angles of `impl` (naive, chunked) can be rounded by
    ANGLE_ROUNDING_WARN_RADIANS or more. Reads max |p| (on a GPU: one synchronization per call, until it warns)."""
    global _angle_warning_given
    if (
        _angle_warning_given
        or frequency.dtype == torch.float64
        or positions.numel() == 0
        or torch.compiler.is_compiling()
    ):
        return
    turns = _max_abs(frequency) * positions.abs().amax().item() / period + _max_abs(phase) / (2 * math.pi)
    rounding = 2 * math.pi * turns * 2.0**-24
    if rounding >= ANGLE_ROUNDING_WARN_RADIANS:
        _angle_warning_given = True
        log.warning(
            "spectral decoder %r: fp32 angles reach %.3g turns (max|F| max|p| / P), where their rounding is "
            "up to %.2g rad: the atoms lose their accuracy (noise past about 3 rad). The rotation and Triton "
            "decoders form their angles in float64; or decode in float64",
            impl,
            turns,
            rounding,
        )


def _max_abs(t: torch.Tensor) -> float:
    """max |t|, kept on the tensor until it changes: the decoder asks on every call (each generated token too), and
    between optimizer steps the parameters do not change. Keyed on the version counter, which in-place updates
    advance, and the storage address. (A fused optimizer step does not advance it; the trainer fuses on CUDA only,
    where this is not asked. A stale value could only pick the slower of two forms that agree to rounding.)"""
    key = (t._version, t.data_ptr())
    cached = getattr(t, "_spectral_max_abs", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    value = float(t.detach().abs().amax())
    t._spectral_max_abs = (key, value)
    return value


def spectral_angles(
    positions: torch.Tensor, frequency: torch.Tensor, phase: torch.Tensor, period: float, reduce: bool = True
):
    """positions (T,) -> (theta (T, K, D), w (T,) = 2 pi p / P) in the parameters' dtype.

    theta = 2 pi F p / P + Phi in one fused pass; with `reduce`, as 2 pi frac(F p / P + Phi / 2 pi), in (-2 pi, 2 pi),
    as the Triton kernels do. F runs to L / 2 cycles per window, so unreduced angles reach pi L. Both forms round
    the angle alike (one ulp of F p / P)."""
    turns = positions.to(frequency.dtype) / period  # (T,)
    w = turns * (2 * math.pi)
    if not reduce:
        return torch.addcmul(phase, frequency, w[:, None, None]), w  # (T, K, D)
    u = torch.addcmul(phase / (2 * math.pi), frequency, turns[:, None, None])  # (T, K, D), in turns
    return u.frac_().mul_(2 * math.pi), w
