"""The spectral decoder's fused Triton kernels launched: the tile configurations, the autograd Function and
triton_spectral_decode. The kernels: triton_mix.py (the forward pass and dC; the angle, the hardware sine and the
interpreter's fp32 dots) and triton_params.py (the parameter gradients); naive.py has the math and the reference,
dispatch.py the choice."""

from __future__ import annotations

import math

import torch

from .base import ROTATION_ANCHOR, SpectralOpError, rotation_step, triton_interpreting, uniform_step
from .triton_mix import _mix_kernel, _mix_rot_kernel
from .triton_params import _param_kernel

SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


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


def _mix_launch(
    B: int, L: int, R: int, O: int, dtype: torch.dtype, uniform: bool, programs: int, interpreting: bool
) -> dict:
    """The launch of _mix for IN (B, L, R) -> OUT (B, L, O): kernel, grid, positions per program and compile-time
    settings (launch_configs lists them for a run's sizes)."""
    s = _settings(dtype, interpreting)
    if _uses_mix_rot(B, R, dtype, uniform, interpreting):
        r_pad = max(16, _next_power_of_2(R))
        block_b, block_o, warps = pick_config(MIX_ROT_CONFIGS, r_pad)
        n_o, n_b = -(-O // block_o), -(-B // block_b)
        # up to an anchor's worth of positions per program, fewer while that leaves the device short of programs
        t_per = max(1, min(ROTATION_ANCHOR, (L * n_o * n_b) // max(1, 4 * programs)))
        return {
            "kernel": "mix_rot",
            "grid": (-(-L // t_per), n_o, n_b),
            "t_per": t_per,
            "meta": dict(BLOCK_B=block_b, R_PAD=r_pad, BLOCK_O=block_o, num_warps=warps, **s),
        }
    block_b, block_r, block_o, warps = pick_config(MIX_CONFIGS, B)
    n_o, n_b = -(-O // block_o), -(-B // block_b)
    # a few positions per program once there are plenty of programs (fewer launches of tiny work)
    t_per = max(1, min(16, (L * n_o * n_b) // max(1, 64 * programs)))
    return {
        "kernel": "mix",
        "grid": (-(-L // t_per), n_o, n_b),
        "t_per": t_per,
        "meta": dict(BLOCK_B=block_b, BLOCK_R=block_r, BLOCK_O=block_o, num_warps=warps, **s),
    }


def _param_launch(
    B: int, L: int, K: int, D: int, dtype: torch.dtype, uniform: bool, programs: int, interpreting: bool
) -> dict:
    block_b, block_k, block_d, warps = pick_config(PARAM_CONFIGS if uniform else PARAM_DIRECT_CONFIGS, B)
    n_k, n_d = -(-K // block_k), -(-D // block_d)
    splits = max(1, min(L, programs // (n_k * n_d)))
    t_per = -(-L // splits)
    return {
        "kernel": "param",
        "grid": (n_k, n_d, -(-L // t_per)),
        "t_per": t_per,
        "meta": dict(
            BLOCK_B=block_b,
            BLOCK_K=block_k,
            BLOCK_D=block_d,
            num_warps=warps,
            ROTATE=uniform,
            ANCHOR=ROTATION_ANCHOR,
            **_settings(dtype, interpreting),
        ),
    }


def launch_configs(
    B: int,
    L: int,
    K: int,
    D: int,
    dtype: torch.dtype,
    uniform: bool = True,
    programs: int = 528,
    interpreting: bool | None = None,
) -> list[dict]:
    """Every kernel launch a forward + backward of C (B, L, K) in `dtype` makes on a device with `programs` target
    programs (4 per SM: 528 on an H100), in order: the forward mix (r = k, o = d), dC (r = d, o = k) and the
    parameter sums, each {"pass", "kernel", "grid", "t_per", "meta"} (meta: the compile-time settings). uniform:
    positions advance by a constant step (every caller's), which the rotation kernels need."""
    interpreting = triton_interpreting() if interpreting is None else interpreting
    out = []
    for name, launch in (
        ("forward", _mix_launch(B, L, K, D, dtype, uniform, programs, interpreting)),
        ("dC", _mix_launch(B, L, D, K, dtype, uniform, programs, interpreting)),
        ("params", _param_launch(B, L, K, D, dtype, uniform, programs, interpreting)),
    ):
        out.append({"pass": name, **launch})
    return out


def _mix(inp: torch.Tensor, A, F, PH, tp, strides, out_cols: int, rot=None) -> torch.Tensor:
    """OUT (B, L, out_cols) = sum_r IN[b, t, r] atoms[t, r, o]; strides: the parameters' (r, o) strides; rot: the
    one-step rotation (CW, SW) (K, D) where positions advance by a constant step, else None."""
    B, L, R = inp.shape
    out = torch.empty(B, L, out_cols, dtype=inp.dtype, device=inp.device)
    launch = _mix_launch(
        B, L, R, out_cols, inp.dtype, rot is not None, _target_programs(inp.device), triton_interpreting()
    )
    if launch["kernel"] == "mix_rot":
        _mix_rot_kernel[launch["grid"]](
            inp,
            A,
            F,
            PH,
            rot[0],
            rot[1],
            tp,
            out,
            B,
            L,
            R,
            out_cols,
            strides[0],
            strides[1],
            launch["t_per"],
            **launch["meta"],
        )
    else:
        _mix_kernel[launch["grid"]](
            inp, A, F, PH, tp, out, B, L, R, out_cols, strides[0], strides[1], launch["t_per"], **launch["meta"]
        )
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
            raise SpectralOpError(
                f"decoder 'triton' needs {name} as a contiguous float32 (K, D) tensor; "
                f"got {p.dtype}, contiguous={p.is_contiguous()}"
            )


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
