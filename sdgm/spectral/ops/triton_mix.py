"""Triton kernels of the spectral decoder's mixing, the forward pass and dC (triton_params.py has the parameter
gradients' kernel, rotation_triton.py launches both; naive.py has the math and the reference).

_mix_kernel     OUT[b, t, o] = sum_r IN[b, t, r] * A[r, o] * sin(2 pi (F[r, o] tp_t) + PH[r, o]),  tp_t = p_t / P
                forward: IN = C and (r, o) = (k, d); dC: IN = G with the parameters read transposed, (r, o) = (d, k).
                A program owns a (BLOCK_B rows, BLOCK_O columns) output tile and walks T_PER_PROG positions; at each
                position it generates the atom tile (BLOCK_R, BLOCK_O) in registers and feeds it to tl.dot (bf16
                operands, fp32 accumulation): a sine per atom element per position. Used for batches above 16,
                where the batch shares the sines, and for positions without a constant step.
_mix_rot_kernel the same product for batches up to 16 (where the sines bound the work) with the atoms advanced by
                rotation: a program holds A sin and A cos of all R rows of a 16-column tile in registers, evaluates
                them with the hardware sine at its first position (the anchor) and after each of its (at most
                ROTATION_ANCHOR) positions rotates them by one step: sin(x + w) = sin x cos w + cos x sin w, with
                cos w, sin w computed once per call in float64 (base.rotation_step). 4 FMAs instead of a sine.

The angle is taken in turns and reduced to [-1/2, 1/2] before the sine: u = F tp + PH / 2 pi, u -= floor(u + 1/2),
in float64 (tp, the positions in periods, is float64), then rounded to fp32: the anchors are exact to one fp32
rounding at any position, as the CPU rotation's are.
On a GPU the reduced angle goes to the hardware sine and cosine (libdevice fast_sinf / fast_cosf, MUFU.SIN and
MUFU.COS on NVIDIA), which are accurate to ~1e-6 absolute on [-pi, pi] and ~20x cheaper than the library sine.
Under TRITON_INTERPRET=1 (CPU, for tests) tl.sin / tl.cos run instead and the dots take fp32 operands (the
interpreter does not support bf16 dots).
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice


@triton.jit
def _angle(f, ph, tp):
    """2 pi (f tp + ph / 2 pi), reduced to [-pi, pi], in fp32; f, ph fp32, tp (positions in periods) float64. F tp is
    formed and reduced to its fraction in float64, the phase added in fp32: in fp32, F tp at a million periods
    (~6e7 turns) kept no fraction at all, and at L = 65,536 (F tp ~ 3e4 turns) only 1e-3 of a turn."""
    u = f.to(tl.float64) * tp  # exact: a 24-bit F times the positions' 53 bits, rounded once
    u = (u - tl.floor(u)).to(tl.float32) + ph * 0.15915494309189535  # fraction of F tp in [0, 1), plus the phase
    u = u - tl.floor(u + 0.5)
    return u * 6.283185307179586


@triton.jit
def _wave(x, FAST: tl.constexpr, COSINE: tl.constexpr):
    """sin(x) or cos(x) for x in [-pi, pi]: the hardware instruction where FAST, the library function otherwise."""
    if FAST:
        if COSINE:
            y = libdevice.fast_cosf(x)
        else:
            y = libdevice.fast_sinf(x)
    elif COSINE:
        y = tl.cos(x)
    else:
        y = tl.sin(x)
    return y


@triton.jit
def _mix_kernel(
    IN,
    A,
    F,
    PH,
    TP,
    OUT,
    B,
    L,
    R,
    O,
    s_ar,
    s_ao,
    T_PER_PROG,
    BLOCK_B: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_O: tl.constexpr,
    FAST: tl.constexpr,
    DOT_FP32: tl.constexpr,
    PRECISION: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_o = tl.program_id(1)
    pid_b = tl.program_id(2)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # (BLOCK_B,)
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)  # (BLOCK_O,)
    offs_r = tl.arange(0, BLOCK_R)  # (BLOCK_R,)
    mask_b = offs_b < B
    mask_o = offs_o < O
    row_in = offs_b.to(tl.int64) * L * R  # (BLOCK_B,) start of each sequence in IN
    row_out = offs_b.to(tl.int64) * L * O
    for i in range(T_PER_PROG):
        t = pid_t * T_PER_PROG + i
        if t < L:
            tp = tl.load(TP + t)
            t64 = t.to(tl.int64)
            acc = tl.zeros((BLOCK_B, BLOCK_O), dtype=tl.float32)
            for r0 in range(0, R, BLOCK_R):
                rr = r0 + offs_r
                mask_r = rr < R
                pmask = mask_r[:, None] & mask_o[None, :]
                poff = rr[:, None] * s_ar + offs_o[None, :] * s_ao  # (BLOCK_R, BLOCK_O)
                a = tl.load(A + poff, mask=pmask, other=0.0)
                f = tl.load(F + poff, mask=pmask, other=0.0)
                ph = tl.load(PH + poff, mask=pmask, other=0.0)
                s = a * _wave(_angle(f, ph, tp), FAST, False)  # (BLOCK_R, BLOCK_O) atoms, fp32
                x = tl.load(
                    IN + row_in[:, None] + t64 * R + rr[None, :], mask=mask_b[:, None] & mask_r[None, :], other=0.0
                )  # (BLOCK_B, BLOCK_R)
                if DOT_FP32:
                    acc += tl.dot(x.to(tl.float32), s, input_precision=PRECISION)
                else:
                    acc += tl.dot(x, s.to(x.dtype))
            tl.store(
                OUT + row_out[:, None] + t64 * O + offs_o[None, :],
                acc.to(OUT.dtype.element_ty),
                mask=mask_b[:, None] & mask_o[None, :],
            )


@triton.jit
def _mix_rot_kernel(
    IN,
    A,
    F,
    PH,
    CW,
    SW,
    TP,
    OUT,
    B,
    L,
    R,
    O,
    s_ar,
    s_ao,
    T_PER_PROG,
    BLOCK_B: tl.constexpr,
    R_PAD: tl.constexpr,
    BLOCK_O: tl.constexpr,
    FAST: tl.constexpr,
    DOT_FP32: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """_mix_kernel for small batches with the atoms advanced by rotation: a program holds A sin and A cos of all R
    rows of its BLOCK_O columns in registers, evaluates them with the hardware sine once (the anchor, at its first
    position) and walks T_PER_PROG <= ROTATION_ANCHOR positions, rotating them by (CW, SW) after each."""
    pid_t = tl.program_id(0)
    pid_o = tl.program_id(1)
    pid_b = tl.program_id(2)
    offs_b = pid_b * BLOCK_B + tl.arange(0, BLOCK_B)  # (BLOCK_B,)
    offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)  # (BLOCK_O,)
    offs_r = tl.arange(0, R_PAD)  # (R_PAD,): every row at once
    mask_b = offs_b < B
    mask_o = offs_o < O
    mask_r = offs_r < R
    pmask = mask_r[:, None] & mask_o[None, :]
    poff = offs_r[:, None] * s_ar + offs_o[None, :] * s_ao  # (R_PAD, BLOCK_O)
    a = tl.load(A + poff, mask=pmask, other=0.0)
    cw = tl.load(CW + poff, mask=pmask, other=1.0)
    sw = tl.load(SW + poff, mask=pmask, other=0.0)
    t0 = pid_t * T_PER_PROG
    x = _angle(tl.load(F + poff, mask=pmask, other=0.0), tl.load(PH + poff, mask=pmask, other=0.0), tl.load(TP + t0))
    s = a * _wave(x, FAST, False)  # (R_PAD, BLOCK_O): A sin, A cos at t0 (a rotation keeps the factor A)
    c = a * _wave(x, FAST, True)
    row_in = offs_b.to(tl.int64) * L * R  # (BLOCK_B,) start of each sequence in IN
    row_out = offs_b.to(tl.int64) * L * O
    for i in range(tl.minimum(T_PER_PROG, L - t0)):
        t64 = (t0 + i).to(tl.int64)
        xin = tl.load(
            IN + row_in[:, None] + t64 * R + offs_r[None, :], mask=mask_b[:, None] & mask_r[None, :], other=0.0
        )  # (BLOCK_B, R_PAD)
        if DOT_FP32:
            acc = tl.dot(xin.to(tl.float32), s, input_precision=PRECISION)
        else:
            acc = tl.dot(xin, s.to(xin.dtype))
        tl.store(
            OUT + row_out[:, None] + t64 * O + offs_o[None, :],
            acc.to(OUT.dtype.element_ty),
            mask=mask_b[:, None] & mask_o[None, :],
        )
        s_next = s * cw + c * sw
        c = c * cw - s * sw
        s = s_next
