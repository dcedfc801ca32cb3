"""The spectral decoder on a CPU with few sines: atoms advanced by rotation, compiled with numba.

For each atom element the angle advances by the same step w = 2 pi F dp / P from one position to the next, so

    sin(theta + w) = sin(theta) cos(w) + cos(theta) sin(w),    cos(theta + w) = cos(theta) cos(w) - sin(theta) sin(w)

and the atoms at t + 1 are a rotation of those at t: four multiply-adds per (t, k, d) instead of a sine. The fp32
rotation drifts by about one rounding per step, so it restarts every ANCHOR positions from an anchor that is
itself advanced in float64 by the rotation of ANCHOR steps (drift ~1e-16 per anchor). The only transcendental
functions are float64 sin/cos over (K, D) per call: of the first angle (reduced in turns), of one step and of
ANCHOR steps. Accuracy: about ANCHOR roundings of fp32, i.e. the level of a direct fp32 sine (tests compare with
float64); the plain fp32 angle of the einsum reference loses more at large F p / P.

The kernels, parallel over threads with numba's prange: rotation_cpu_kernels.py.

Positions must advance by a constant step (every caller's positions are p0, p0 + 1, ...); other positions go to
the chunked torch implementation. If numba is missing or a kernel fails to compile, `dispatch.cpu_status` says
why, the caller logs it once and uses the chunked implementation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .base import ROTATION_ANCHOR as ANCHOR  # positions between float64 anchors: the fp32 rotation's drift

# stays at a direct fp32 sine's level
from .base import rotation_step, uniform_step
from .rotation_cpu_kernels import _kernels

SEGMENT_ANCHORS = 2  # anchors computed per segment: (2, K, D) fp32 sin and cos, 2 MiB at K = 256, D = 512


class Rotation:
    """One pass over the positions: the float64 anchor state at the first position, the fp32 rotation by one step
    and the float64 rotation by ANCHOR steps, all (K, D). Angles are taken in turns and reduced before any sine."""

    def __init__(self, frequency: torch.Tensor, phase: torch.Tensor, p0: float, step: float, period: float):
        f = frequency.detach().to(torch.float64)
        u0 = torch.addcmul(
            phase.detach().to(torch.float64) / (2 * math.pi), f, torch.tensor(p0 / period, dtype=torch.float64)
        )
        theta0 = u0.frac_().mul_(2 * math.pi)
        # (K, D) float64, advanced in place by segments(): a Rotation serves one pass over the positions (forward and
        # backward build their own, from the same inputs, so they walk the same anchors)
        self.sd, self.cd = torch.sin(theta0).numpy(), torch.cos(theta0).numpy()
        del u0, theta0
        self.cw, self.sw = rotation_step(frequency, step / period)  # (K, D) fp32: one step
        wj = (f * (step * ANCHOR / period)).frac_().mul_(2 * math.pi)
        self.cj, self.sj = torch.cos(wj).numpy(), torch.sin(wj).numpy()  # (K, D) float64: ANCHOR steps

    def segments(self, L: int):
        """Yields (t0, n, anc_s, anc_c) over [0, L): anchors (nb, K, D) fp32 at t0, t0 + ANCHOR, ..."""
        anchors = _kernels()[1]
        sd, cd = self.sd, self.cd  # advanced in place, segment by segment
        K, D = sd.shape
        seg = ANCHOR * SEGMENT_ANCHORS
        buf_s = np.empty((SEGMENT_ANCHORS, K, D), np.float32)
        buf_c = np.empty((SEGMENT_ANCHORS, K, D), np.float32)
        for t0 in range(0, L, seg):
            n = min(seg, L - t0)
            nb = (n + ANCHOR - 1) // ANCHOR
            anchors(sd, cd, self.cj, self.sj, nb, buf_s, buf_c)
            yield t0, n, buf_s, buf_c


def _threads(numba) -> None:
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _sub_blocks(rot: Rotation, L: int, block: int):
    """Yields (u, m, s, co) over [0, L) in blocks of at most `block` positions that never cross an anchor; (s, co)
    (K, D) fp32 is the unscaled sin / cos state at u, reset from the anchor at each anchor, which the kernels that
    consume a block advance by m steps in place."""
    for t0, n, anc_s, anc_c in rot.segments(L):
        for j in range((n + ANCHOR - 1) // ANCHOR):
            ta, tb = t0 + j * ANCHOR, min(t0 + n, t0 + (j + 1) * ANCHOR)
            s, co = anc_s[j].copy(), anc_c[j].copy()
            for u in range(ta, tb, block):
                yield u, min(block, tb - u), s, co


def _forward_fused(cf, amp, rot, out):
    forward = _kernels()[2]
    cw, sw = rot.cw.numpy(), rot.sw.numpy()
    for t0, n, anc_s, anc_c in rot.segments(cf.shape[1]):
        forward(cf.numpy(), amp.numpy(), cw, sw, anc_s, anc_c, t0, n, out.numpy())


def _forward_blocked(cf, amp, rot, out, block):
    rotate_block = _kernels()[4]
    K, D = amp.shape
    S = torch.empty(block, K, D)  # (T, K, D) atoms of one block
    for u, m, s, co in _sub_blocks(rot, cf.shape[1], block):
        rotate_block(s, co, amp.numpy(), rot.cw.numpy(), rot.sw.numpy(), m, S.numpy())
        out[:, u : u + m] = torch.einsum("btk,tkd->btd", cf[:, u : u + m], S[:m])


def _backward_fused(cf, g, amp, rot, wpos, grads, need_c, need_params):
    backward = _kernels()[3]
    dc, da, dpc, dfc = (x.numpy() for x in grads)
    cw, sw = rot.cw.numpy(), rot.sw.numpy()
    for t0, n, anc_s, anc_c in rot.segments(cf.shape[1]):
        backward(
            cf.numpy(),
            g.numpy(),
            amp.numpy(),
            cw,
            sw,
            anc_s,
            anc_c,
            wpos.numpy(),
            t0,
            n,
            dc,
            da,
            dpc,
            dfc,
            need_c,
            need_params,
        )


def _backward_blocked(cf, g, amp, rot, wpos, grads, need_c, need_params, block):
    _, _, _, _, rotate_block, param_sums = _kernels()
    dc, da, dpc, dfc = grads
    K, D = amp.shape
    cw, sw = rot.cw.numpy(), rot.sw.numpy()
    S = torch.empty(block, K, D)
    for u, m, s, co in _sub_blocks(rot, cf.shape[1], block):
        s2, co2 = (s.copy(), co.copy()) if need_c and need_params else (s, co)  # each consumer advances its own
        if need_c:
            rotate_block(s2, co2, amp.numpy(), cw, sw, m, S.numpy())
            dc[:, u : u + m] = torch.einsum("btd,tkd->btk", g[:, u : u + m], S[:m])
        if need_params:
            q = torch.einsum("btk,btd->tkd", cf[:, u : u + m], g[:, u : u + m]).contiguous()  # (m, K, D)
            param_sums(q.numpy(), s, co, cw, sw, wpos.numpy(), u, da.numpy(), dpc.numpy(), dfc.numpy())


# Batches up to this size run the fused kernels (the sines' replacement bounds them); larger ones form each block's
# atoms by rotation and leave the mixing to BLAS, which reuses each atom B times from registers.
FUSED_MAX_BATCH = 4


def _block(K: int, D: int) -> int:
    return max(1, (1 << 20) // (K * D))  # as the chunked implementation: a block's (T, K, D) tensor near L2


class RotationSpectralDecode(torch.autograd.Function):
    """X_hat = C S with S advanced by rotation. Saves C and the parameters; forward and backward each build the
    (K, D) rotation tables (a few K D float64 sines, next to the B L K D of the pass); the arithmetic in fp32 (the
    output has C's dtype), except the sums of dA, dF, dPhi over anchor stretches, which add up in float64."""

    @staticmethod
    def forward(ctx, c, amplitude, frequency, phase, positions, period: float):
        _threads(_kernels()[0])
        B, L, K = c.shape
        D = amplitude.shape[1]
        step = uniform_step(positions)
        if step is None:
            raise ValueError("the rotation decoder needs positions that advance by a constant step")
        p0 = float(positions[0]) if L else 0.0
        cf = c.detach().to(torch.float32).contiguous()  # (B, L, K)
        amp = amplitude.detach().to(torch.float32).contiguous()  # (K, D)
        rot = Rotation(frequency, phase, p0, step, period)
        out = torch.empty(B, L, D, dtype=torch.float32)  # (B, L, D)
        if B <= FUSED_MAX_BATCH:
            _forward_fused(cf, amp, rot, out)
        else:
            _forward_blocked(cf, amp, rot, out, _block(K, D))
        ctx.save_for_backward(c, amplitude, frequency, phase, positions)
        ctx.p0, ctx.step, ctx.period = p0, step, period
        return out.to(c.dtype)

    @staticmethod
    def backward(ctx, grad):
        _threads(_kernels()[0])
        c, amplitude, frequency, phase, positions = ctx.saved_tensors
        B, L, K = c.shape
        D = amplitude.shape[1]
        need_c, need_a, need_f, need_p = ctx.needs_input_grad[:4]
        need_params = need_a or need_f or need_p
        cf = c.detach().to(torch.float32).contiguous()
        g = grad.detach().to(torch.float32).contiguous()  # (B, L, D)
        amp = amplitude.detach().to(torch.float32).contiguous()
        # dC (B, L, K) fp32; dA, dPc, dFc (K, D) float64: fp32 sums of each anchor stretch, added in float64 (summed
        # serially in fp32, their error grew with L: 1.5e-6 at L = 4,096, 1e-5 at 131,072)
        grads = (torch.zeros(B, L, K), *(torch.zeros(K, D, dtype=torch.float64) for _ in range(3)))
        wpos = (positions.to(torch.float64) * (2 * math.pi / ctx.period)).to(torch.float32).contiguous()  # (L,)
        rot = Rotation(frequency, phase, ctx.p0, ctx.step, ctx.period)
        if B <= FUSED_MAX_BATCH:
            _backward_fused(cf, g, amp, rot, wpos, grads, need_c, need_params)
        else:
            _backward_blocked(cf, g, amp, rot, wpos, grads, need_c, need_params, _block(K, D))
        dc, da, dpc, dfc = grads
        amp64 = amp.double()
        return (
            dc.to(c.dtype) if need_c else None,
            da.to(amplitude.dtype) if need_a else None,
            dfc.mul_(amp64).to(amplitude.dtype) if need_f else None,
            dpc.mul_(amp64).to(amplitude.dtype) if need_p else None,
            None,
            None,
        )


@torch.compiler.disable  # a graph break around the kernels: they are already fused; nothing for Inductor to add
def rotation_spectral_decode(c, amplitude, frequency, phase, positions, period: float, otherwise) -> torch.Tensor:
    """C (B, L, K), parameters (K, D), positions (L,) -> X_hat (B, L, D) in C's dtype; `otherwise()` where the
    rotation does not apply (float64 C, positions without a constant step)."""
    if c.dtype == torch.float64 or uniform_step(positions) is None:
        return otherwise()
    if c.shape[0] == 0 or c.shape[1] == 0:
        return torch.zeros(*c.shape[:2], amplitude.shape[1], dtype=c.dtype)
    with torch.autocast("cpu", enabled=False):
        return RotationSpectralDecode.apply(c, amplitude, frequency, phase, positions, period)
