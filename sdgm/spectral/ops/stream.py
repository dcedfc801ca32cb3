"""The atoms at the successive positions of incremental decoding (one token at a time), advanced by rotation: the
rotation decoder's algorithm for one position per call (AtomStream)."""

from __future__ import annotations

import math

import torch

from .base import ROTATION_ANCHOR, rotation_step
from .dispatch import rotation_status


class AtomStream:
    """The atoms S(p) = A sin(2 pi F p / P + Phi), (K, D) in the parameters' dtype, at the successive positions of
    incremental decoding.

    Each next position is a rotation of the last (four multiply-adds per element, as the rotation decoder does),
    restarted every ROTATION_ANCHOR positions and at any jump from an exact anchor: the angle reduced in turns in
    float64, then one sine and cosine in the parameters' dtype (a float64 model's atoms are float64 throughout).
    Asking again for the same position (decoding past the window, where the position stays at L - 1) costs nothing
    and returns the same tensor; a new position returns a new tensor, so a tensor handed out is never overwritten.
    A change of the parameters restarts the stream: an in-place update (as an optimizer step makes it) advances
    their version counters, a new tensor changes their address, and a change that bypasses the counter (through
    `.data`, or a fused optimizer step) changes a strided sample of their values (FINGERPRINT_VALUES per parameter;
    a change to values outside the sample alone goes unnoticed). Shared by every sequence of a batch: they decode
    at one position."""

    FINGERPRINT_VALUES = 1024

    def __init__(self, amplitude: torch.Tensor, frequency: torch.Tensor, phase: torch.Tensor, period: float):
        self.params, self.period = (amplitude, frequency, phase), float(period)
        self.key = None  # the parameters' versions and addresses the tables below belong to
        self.fingerprint = None  # and a strided sample of their values
        self.p = None  # the position of S; sin and cos are one position on
        self.fused = False  # on a CPU with the rotation kernels (fp32): S and the next step in one pass

    def _sample(self) -> list[torch.Tensor]:
        return [t.detach().reshape(-1)[:: max(1, t.numel() // self.FINGERPRINT_VALUES)] for t in self.params]

    def _changed(self) -> bool:
        key = tuple((t._version, t.data_ptr(), t.dtype) for t in self.params)
        if key != self.key:
            return True
        return not all(torch.equal(a, b) for a, b in zip(self._sample(), self.fingerprint))

    def at(self, p: int) -> torch.Tensor:
        amplitude, frequency, phase = self.params
        dtype = amplitude.dtype
        with torch.no_grad():
            if self._changed():
                self.cw, self.sw = rotation_step(frequency, 1.0 / self.period, dtype)  # (K, D): one position on
                self.key = tuple((t._version, t.data_ptr(), t.dtype) for t in self.params)
                self.fingerprint = [x.clone() for x in self._sample()]
                self.p = None
                cpu = amplitude.device.type == "cpu" and dtype == torch.float32
                self.fused = cpu and rotation_status(amplitude.device)[0]
            if p == self.p:
                return self.S
            if self.p is None or p != self.p + 1 or p % ROTATION_ANCHOR == 0:  # an exact anchor at p
                u = torch.add(
                    phase.detach().double() / (2 * math.pi), frequency.detach().double(), alpha=p / self.period
                )  # (K, D) turns
                theta = u.frac_().mul_(2 * math.pi).to(dtype)
                self.sin, self.cos = torch.sin(theta), torch.cos(theta)
            a = amplitude.detach()
            S = torch.empty_like(self.cw)  # (K, D), new at every position: never overwritten once handed out
            if self.fused:  # S = A sin, then sin and cos rotated one step, in one pass
                _cpu_rotate_block()(
                    self.sin.numpy(),
                    self.cos.numpy(),
                    a.contiguous().numpy(),
                    self.cw.numpy(),
                    self.sw.numpy(),
                    1,
                    S.numpy()[None],
                )
            else:
                torch.mul(a, self.sin, out=S)
                s, c = self.sin, self.cos
                self.sin = torch.addcmul(s * self.cw, c, self.sw)
                self.cos = torch.addcmul(c * self.cw, s, self.sw, value=-1.0)
            self.S, self.p = S, p
        return S


def _cpu_rotate_block():
    from .rotation_cpu_kernels import _kernels

    return _kernels()[4]
