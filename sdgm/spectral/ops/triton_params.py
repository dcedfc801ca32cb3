"""The Triton kernel of the spectral decoder's parameter gradients (triton_mix.py has the angle, the sine and the
mixing kernels, rotation_triton.py launches them).

_param_kernel   for a (BLOCK_K, BLOCK_D) tile and a range of positions: Q_t = C_t^T G_t (tl.dot over the batch),
                then sum_t Q_t sin, sum_t Q_t cos, sum_t Q_t cos tp_t in registers; with ROTATE, sin and cos are
                advanced by the same rotation and re-anchored with the hardware sine every ANCHOR positions. Each
                range writes its partial sums to its own slot; the slots are added in a fixed order afterwards, so
                the result is deterministic (no atomics).
"""

from __future__ import annotations

import triton
import triton.language as tl

from .triton_mix import _angle, _wave


@triton.jit
def _param_kernel(
    C,
    G,
    F,
    PH,
    CW,
    SW,
    TP,
    PART,
    B,
    L,
    K,
    D,
    T_PER_PROG,
    BLOCK_B: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    FAST: tl.constexpr,
    DOT_FP32: tl.constexpr,
    PRECISION: tl.constexpr,
    ROTATE: tl.constexpr,
    ANCHOR: tl.constexpr,
):
    pid_k = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_s = tl.program_id(2)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)  # (BLOCK_K,)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)  # (BLOCK_D,)
    offs_b = tl.arange(0, BLOCK_B)
    mask_k = offs_k < K
    mask_d = offs_d < D
    pmask = mask_k[:, None] & mask_d[None, :]
    poff = offs_k[:, None] * D + offs_d[None, :]  # (BLOCK_K, BLOCK_D)
    f = tl.load(F + poff, mask=pmask, other=0.0)  # held in registers for the whole range of positions
    ph = tl.load(PH + poff, mask=pmask, other=0.0)
    acc_sin = tl.zeros((BLOCK_K, BLOCK_D), dtype=tl.float32)
    acc_cos = tl.zeros((BLOCK_K, BLOCK_D), dtype=tl.float32)
    acc_cos_tp = tl.zeros((BLOCK_K, BLOCK_D), dtype=tl.float32)
    sn = tl.zeros((BLOCK_K, BLOCK_D), dtype=tl.float32)  # sin and cos at position t
    cs = tl.zeros((BLOCK_K, BLOCK_D), dtype=tl.float32)
    if ROTATE:  # the rotation by one step; the hardware sine only at anchors, every ANCHOR positions
        cw = tl.load(CW + poff, mask=pmask, other=1.0)
        sw = tl.load(SW + poff, mask=pmask, other=0.0)
    t_begin = pid_s * T_PER_PROG
    for i in range(tl.minimum(T_PER_PROG, L - t_begin)):
        t = t_begin + i
        tp = tl.load(TP + t)
        t64 = t.to(tl.int64)
        q = tl.zeros((BLOCK_K, BLOCK_D), dtype=tl.float32)
        for b0 in range(0, B, BLOCK_B):
            bb = b0 + offs_b
            mask_b = bb < B
            ct = tl.load(
                C + bb[None, :].to(tl.int64) * L * K + t64 * K + offs_k[:, None],
                mask=mask_k[:, None] & mask_b[None, :],
                other=0.0,
            )  # (BLOCK_K, BLOCK_B) = C_t^T
            g = tl.load(
                G + bb[:, None].to(tl.int64) * L * D + t64 * D + offs_d[None, :],
                mask=mask_b[:, None] & mask_d[None, :],
                other=0.0,
            )  # (BLOCK_B, BLOCK_D)
            if DOT_FP32:
                q += tl.dot(ct.to(tl.float32), g.to(tl.float32), input_precision=PRECISION)
            else:
                q += tl.dot(ct, g)
        if ROTATE:
            if i % ANCHOR == 0:
                x = _angle(f, ph, tp)
                sn = _wave(x, FAST, False)
                cs = _wave(x, FAST, True)
        else:
            x = _angle(f, ph, tp)
            sn = _wave(x, FAST, False)
            cs = _wave(x, FAST, True)
        acc_sin += q * sn
        q_cos = q * cs
        acc_cos += q_cos
        acc_cos_tp += q_cos * tp.to(tl.float32)
        if ROTATE:
            sn_next = sn * cw + cs * sw
            cs = cs * cw - sn * sw
            sn = sn_next
    out = PART + pid_s.to(tl.int64) * 3 * K * D + poff
    tl.store(out, acc_sin, mask=pmask)
    tl.store(out + K * D, acc_cos, mask=pmask)
    tl.store(out + 2 * K * D, acc_cos_tp, mask=pmask)
