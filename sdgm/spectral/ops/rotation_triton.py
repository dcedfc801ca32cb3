"""Fused Triton kernels of the spectral decoder; naive.py has the math and the reference, dispatch.py the choice.

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
_param_kernel   for a (BLOCK_K, BLOCK_D) tile and a range of positions: Q_t = C_t^T G_t (tl.dot over the batch),
                then sum_t Q_t sin, sum_t Q_t cos, sum_t Q_t cos tp_t in registers; with ROTATE, sin and cos are
                advanced by the same rotation and re-anchored with the hardware sine every ANCHOR positions. Each
                range writes its partial sums to its own slot; the slots are added in a fixed order afterwards, so
                the result is deterministic (no atomics).

The angle is taken in turns and reduced to [-1/2, 1/2] before the sine: u = F tp + PH / 2 pi, u -= floor(u + 1/2),
in float64 (tp, the positions in periods, is float64), then rounded to fp32: the anchors are exact to one fp32
rounding at any position, as the CPU rotation's are.
On a GPU the reduced angle goes to the hardware sine and cosine (libdevice fast_sinf / fast_cosf, MUFU.SIN and
MUFU.COS on NVIDIA), which are accurate to ~1e-6 absolute on [-pi, pi] and ~20x cheaper than the library sine.
Under TRITON_INTERPRET=1 (CPU, for tests) tl.sin / tl.cos run instead and the dots take fp32 operands (the
interpreter does not support bf16 dots).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from .base import ROTATION_ANCHOR, SpectralOpError, rotation_step, triton_interpreting, uniform_step

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


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
def _mix_kernel(IN, A, F, PH, TP, OUT, B, L, R, O, s_ar, s_ao, T_PER_PROG,
                BLOCK_B: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr,
                FAST: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr):
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
                x = tl.load(IN + row_in[:, None] + t64 * R + rr[None, :],
                            mask=mask_b[:, None] & mask_r[None, :], other=0.0)  # (BLOCK_B, BLOCK_R)
                if DOT_FP32:
                    acc += tl.dot(x.to(tl.float32), s, input_precision=PRECISION)
                else:
                    acc += tl.dot(x, s.to(x.dtype))
            tl.store(OUT + row_out[:, None] + t64 * O + offs_o[None, :], acc.to(OUT.dtype.element_ty),
                     mask=mask_b[:, None] & mask_o[None, :])


@triton.jit
def _mix_rot_kernel(IN, A, F, PH, CW, SW, TP, OUT, B, L, R, O, s_ar, s_ao, T_PER_PROG,
                    BLOCK_B: tl.constexpr, R_PAD: tl.constexpr, BLOCK_O: tl.constexpr,
                    FAST: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr):
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
        xin = tl.load(IN + row_in[:, None] + t64 * R + offs_r[None, :],
                      mask=mask_b[:, None] & mask_r[None, :], other=0.0)  # (BLOCK_B, R_PAD)
        if DOT_FP32:
            acc = tl.dot(xin.to(tl.float32), s, input_precision=PRECISION)
        else:
            acc = tl.dot(xin, s.to(xin.dtype))
        tl.store(OUT + row_out[:, None] + t64 * O + offs_o[None, :], acc.to(OUT.dtype.element_ty),
                 mask=mask_b[:, None] & mask_o[None, :])
        s_next = s * cw + c * sw
        c = c * cw - s * sw
        s = s_next


@triton.jit
def _param_kernel(C, G, F, PH, CW, SW, TP, PART, B, L, K, D, T_PER_PROG,
                  BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_D: tl.constexpr,
                  FAST: tl.constexpr, DOT_FP32: tl.constexpr, PRECISION: tl.constexpr,
                  ROTATE: tl.constexpr, ANCHOR: tl.constexpr):
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
            ct = tl.load(C + bb[None, :].to(tl.int64) * L * K + t64 * K + offs_k[:, None],
                         mask=mask_k[:, None] & mask_b[None, :], other=0.0)  # (BLOCK_K, BLOCK_B) = C_t^T
            g = tl.load(G + bb[:, None].to(tl.int64) * L * D + t64 * D + offs_d[None, :],
                        mask=mask_b[:, None] & mask_d[None, :], other=0.0)  # (BLOCK_B, BLOCK_D)
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


# ---- launching ---------------------------------------------------------------------------------------------------
# Tile sizes and warps by batch size. Each was compiled for sm_90 (tests/test_spectral_op.py compiles them again):
# no spills to local memory, at most 255 registers; one pipeline stage, since two or three stages spilled.
MIX_CONFIGS = [  # (largest B, BLOCK_B, BLOCK_R, BLOCK_O, num_warps)
    (16, 16, 32, 64, 4),
    (32, 32, 32, 64, 8),
    (None, 64, 32, 64, 8),
]
# Batches up to 16 with positions a constant step apart: _mix_rot_kernel, a program per (16 sequences, 16 columns,
# up to ROTATION_ANCHOR positions) holding all R rows of atoms (R <= MIX_ROT_MAX_R); warps by R.
MIX_ROT_CONFIGS = [  # (largest R, BLOCK_B, BLOCK_O, num_warps)
    (256, 16, 16, 4),
    (512, 16, 16, 8),
]
MIX_ROT_MAX_B = 16
MIX_ROT_MAX_R = MIX_ROT_CONFIGS[-1][0]
PARAM_CONFIGS = [  # (largest B, BLOCK_B, BLOCK_K, BLOCK_D, num_warps)
    (16, 16, 32, 64, 8),  # 8 warps: with 4, the rotation's state (sin, cos and the step) spilled
    (None, 64, 32, 64, 8),
]
# positions without a constant step (a float64 angle at every position): a batch tile of 32 above 16, since 64 spilled
# 8 bytes on sm_90
PARAM_DIRECT_CONFIGS = [
    (16, 16, 32, 64, 8),
    (None, 32, 32, 64, 8),
]
NUM_STAGES = 1


def pick_config(configs, B: int) -> tuple[int, int, int, int]:
    for largest, *rest in configs:
        if largest is None or B <= largest:
            return tuple(rest)
    raise AssertionError("the last config takes every batch size")


def _settings(dtype: torch.dtype, interp: bool) -> dict:
    fp32 = interp or dtype == torch.float32
    # fp32 operands on a GPU follow torch's own matmul setting (TF32 only where torch would use it)
    precision = "tf32" if torch.backends.cuda.matmul.allow_tf32 and not interp else "ieee"
    return {"FAST": not interp, "DOT_FP32": fp32, "PRECISION": precision, "num_stages": NUM_STAGES}


def _target_programs(device: torch.device) -> int:
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def _next_power_of_2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


def _uses_mix_rot(B: int, R: int, dtype: torch.dtype, uniform: bool, interpreting: bool) -> bool:
    # the rotation kernel's register tile needs tensor-core dots: fp32 operands on a GPU spill it (python -m
    # sdgm.bench.sass), so they keep the direct kernel; the interpreter runs it in any dtype
    return uniform and B <= MIX_ROT_MAX_B and R <= MIX_ROT_MAX_R and (dtype != torch.float32 or interpreting)


def _mix_launch(B: int, L: int, R: int, O: int, dtype: torch.dtype, uniform: bool, programs: int,
                interpreting: bool) -> dict:
    """The launch of _mix for IN (B, L, R) -> OUT (B, L, O): kernel, grid, positions per program and compile-time
    settings (launch_configs lists them for a run's sizes)."""
    s = _settings(dtype, interpreting)
    if _uses_mix_rot(B, R, dtype, uniform, interpreting):
        r_pad = max(16, _next_power_of_2(R))
        block_b, block_o, warps = pick_config(MIX_ROT_CONFIGS, r_pad)
        n_o, n_b = -(-O // block_o), -(-B // block_b)
        # up to an anchor's worth of positions per program, fewer while that leaves the device short of programs
        t_per = max(1, min(ROTATION_ANCHOR, (L * n_o * n_b) // max(1, 4 * programs)))
        return {"kernel": "mix_rot", "grid": (-(-L // t_per), n_o, n_b), "t_per": t_per,
                "meta": dict(BLOCK_B=block_b, R_PAD=r_pad, BLOCK_O=block_o, num_warps=warps, **s)}
    block_b, block_r, block_o, warps = pick_config(MIX_CONFIGS, B)
    n_o, n_b = -(-O // block_o), -(-B // block_b)
    # a few positions per program once there are plenty of programs (fewer launches of tiny work)
    t_per = max(1, min(16, (L * n_o * n_b) // max(1, 64 * programs)))
    return {"kernel": "mix", "grid": (-(-L // t_per), n_o, n_b), "t_per": t_per,
            "meta": dict(BLOCK_B=block_b, BLOCK_R=block_r, BLOCK_O=block_o, num_warps=warps, **s)}


def _param_launch(B: int, L: int, K: int, D: int, dtype: torch.dtype, uniform: bool, programs: int,
                  interpreting: bool) -> dict:
    block_b, block_k, block_d, warps = pick_config(PARAM_CONFIGS if uniform else PARAM_DIRECT_CONFIGS, B)
    n_k, n_d = -(-K // block_k), -(-D // block_d)
    splits = max(1, min(L, programs // (n_k * n_d)))
    t_per = -(-L // splits)
    return {"kernel": "param", "grid": (n_k, n_d, -(-L // t_per)), "t_per": t_per,
            "meta": dict(BLOCK_B=block_b, BLOCK_K=block_k, BLOCK_D=block_d, num_warps=warps, ROTATE=uniform,
                         ANCHOR=ROTATION_ANCHOR, **_settings(dtype, interpreting))}


def launch_configs(B: int, L: int, K: int, D: int, dtype: torch.dtype, uniform: bool = True, programs: int = 528,
                   interpreting: bool | None = None) -> list[dict]:
    """Every kernel launch a forward + backward of C (B, L, K) in `dtype` makes on a device with `programs` target
    programs (4 per SM: 528 on an H100), in order: the forward mix (r = k, o = d), dC (r = d, o = k) and the
    parameter sums, each {"pass", "kernel", "grid", "t_per", "meta"} (meta: the compile-time settings). uniform:
    positions advance by a constant step (every caller's), which the rotation kernels need."""
    interpreting = triton_interpreting() if interpreting is None else interpreting
    out = []
    for name, launch in (("forward", _mix_launch(B, L, K, D, dtype, uniform, programs, interpreting)),
                         ("dC", _mix_launch(B, L, D, K, dtype, uniform, programs, interpreting)),
                         ("params", _param_launch(B, L, K, D, dtype, uniform, programs, interpreting))):
        out.append({"pass": name, **launch})
    return out


def _mix(inp: torch.Tensor, A, F, PH, tp, strides, out_cols: int, rot=None) -> torch.Tensor:
    """OUT (B, L, out_cols) = sum_r IN[b, t, r] atoms[t, r, o]; strides: the parameters' (r, o) strides; rot: the
    one-step rotation (CW, SW) (K, D) where positions advance by a constant step, else None."""
    B, L, R = inp.shape
    out = torch.empty(B, L, out_cols, dtype=inp.dtype, device=inp.device)
    launch = _mix_launch(B, L, R, out_cols, inp.dtype, rot is not None, _target_programs(inp.device),
                         triton_interpreting())
    if launch["kernel"] == "mix_rot":
        _mix_rot_kernel[launch["grid"]](inp, A, F, PH, rot[0], rot[1], tp, out, B, L, R, out_cols, strides[0],
                                        strides[1], launch["t_per"], **launch["meta"])
    else:
        _mix_kernel[launch["grid"]](inp, A, F, PH, tp, out, B, L, R, out_cols, strides[0], strides[1],
                                    launch["t_per"], **launch["meta"])
    return out


def _param_partials(c: torch.Tensor, g: torch.Tensor, F, PH, tp, rot=None) -> torch.Tensor:
    """(3, K, D): sum_t Q sin, sum_t Q cos, sum_t Q cos tp, reduced over position ranges in a fixed order; rot as
    in _mix (None: a sine and a cosine at every position)."""
    B, L, K = c.shape
    D = F.shape[1]
    launch = _param_launch(B, L, K, D, c.dtype, rot is not None, _target_programs(c.device), triton_interpreting())
    part = torch.empty(launch["grid"][2], 3, K, D, dtype=torch.float32, device=c.device)
    cw, sw = rot if rot is not None else (F, F)  # not read without ROTATE
    _param_kernel[launch["grid"]](c, g, F, PH, cw, sw, tp, part, B, L, K, D, launch["t_per"], **launch["meta"])
    return part.sum(0)


def _check_triton_inputs(c: torch.Tensor, params) -> None:
    if c.dtype not in SUPPORTED_DTYPES:
        raise SpectralOpError(f"decoder 'triton' takes C in float32, bfloat16 or float16; got {c.dtype}")
    if not c.is_contiguous():
        raise SpectralOpError("decoder 'triton' needs a contiguous C (B, L, K); call .contiguous() first")
    for name, p in zip(("amplitude", "frequency", "phase"), params):
        if p.dtype != torch.float32 or not p.is_contiguous():
            raise SpectralOpError(f"decoder 'triton' needs {name} as a contiguous float32 (K, D) tensor; "
                                  f"got {p.dtype}, contiguous={p.is_contiguous()}")


class TritonSpectralDecode(torch.autograd.Function):
    @staticmethod
    def forward(ctx, c, amplitude, frequency, phase, positions, period: float):
        K, D = amplitude.shape
        tp = (positions.to(torch.float64) / period).contiguous()  # (L,) positions in periods, float64: exact angles
        step = uniform_step(positions)
        rot = None if step is None else rotation_step(frequency, step / period)  # (K, D) cos, sin of one step
        out = _mix(c, amplitude, frequency, phase, tp, (D, 1), D, rot)  # (B, L, D)
        ctx.save_for_backward(c, amplitude, frequency, phase, tp)
        ctx.rot = rot
        return out

    @staticmethod
    def backward(ctx, grad):
        c, amplitude, frequency, phase, tp = ctx.saved_tensors
        K, D = amplitude.shape
        g = grad.to(c.dtype).contiguous()  # (B, L, D)
        dc = da = df = dp = None
        if ctx.needs_input_grad[0]:
            dc = _mix(g, amplitude, frequency, phase, tp, (1, D), K, ctx.rot)  # (B, L, K): atoms read as (d, k)
        if any(ctx.needs_input_grad[1:4]):
            q_sin, q_cos, q_cos_tp = _param_partials(c, g, frequency, phase, tp, ctx.rot)  # each (K, D)
            da = q_sin
            dp = amplitude * q_cos
            df = amplitude * q_cos_tp * (2 * math.pi)
        return dc, da, df, dp, None, None


@torch.compiler.disable  # a graph break around the launch: the kernels are already fused; nothing for Inductor to add
def triton_spectral_decode(c, amplitude, frequency, phase, positions, period: float) -> torch.Tensor:
    _check_triton_inputs(c, (amplitude, frequency, phase))
    if c.shape[0] == 0 or c.shape[1] == 0:
        return torch.zeros(*c.shape[:2], amplitude.shape[1], dtype=c.dtype, device=c.device)
    with torch.autocast(c.device.type, enabled=False):
        return TritonSpectralDecode.apply(c, amplitude, frequency, phase, positions, period)


# ---- the hardware sine's rate, for the benchmarks' floors -------------------------------------------------------------
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
    timing = time_calls(lambda: _rate_kernel[(programs,)](x, out, n_iter, BLOCK=block, SINE=sine), repeats=repeats,
                        warmup=1, device=device)
    return 4 * n_iter * programs * block / timing["median_s"]


def hardware_sine_rate(device: torch.device, n_iter: int = 4096, repeats: int = 5) -> float:
    """Sines per second of the hardware sine on a CUDA device."""
    return _chain_rate(device, True, n_iter, repeats)


def vector_flops_rate(device: torch.device, n_iter: int = 4096, repeats: int = 5) -> float:
    """fp32 FLOP/s of elementwise multiply-adds on a CUDA device's cores (not its tensor cores)."""
    return 2 * _chain_rate(device, False, n_iter, repeats)
