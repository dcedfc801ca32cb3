"""SDGM's spectral decoder as one op with three implementations.

    S[t, k, d]     = A[k, d] * sin(2 pi F[k, d] p_t / P + Phi[k, d])     atoms at positions p (L,), period P
    X_hat[b, t, d] = sum_k C[b, t, k] * S[t, k, d]                      C (B, L, K); A, F, Phi (K, D)

    x_hat = spectral_decode(c, amplitude, frequency, phase, positions, period, impl="auto")

naive    S materialized for all L positions (L x K x D fp32), then one einsum: the reference. Memory O(L K D).
chunked  a torch.autograd.Function that saves only C and the parameters; forward and backward rebuild S for
         `block` positions at a time. Memory O(block K D); runs on any device.
rotation CPU kernels compiled with numba (sdgm/spectral/ops/spectral_cpu.py): S advanced from one position to the next
by
         a rotation (four multiply-adds instead of a sine), re-anchored every 32 positions. fp32 arithmetic; float64
         C, or positions that do not advance by a constant step, take the chunked path.
triton   fused kernels (sdgm/spectral/ops/spectral_triton.py): each S tile is generated in registers and fed to tl.dot;
         the parameter gradients are reduced per tile in registers. No L x K x D buffer exists anywhere.
auto     triton on CUDA where Triton imports and its kernels pass a check on the device (check_kernels: small
         problems against chunked, values and gradients, once per process and device; on a mismatch or any
         compile or launch error, chunked, said in one log line); rotation on a CPU where numba compiles it;
         chunked elsewhere. decoder_record() lists what each request resolved to and why (records' provenance).

Gradients (G = dL/dX_hat, theta = 2 pi F p_t / P + Phi):
    dC[b, t, k] = sum_d G[b, t, d] S[t, k, d]
    Q[t, k, d]  = sum_b C[b, t, k] G[b, t, d]
    dA = sum_t Q sin(theta);  dPhi = sum_t Q A cos(theta);  dF = sum_t Q A cos(theta) 2 pi p_t / P

Precision: the mixing runs in C's dtype (bf16 under autocast on a GPU, as the naive einsum does), the atoms and
all parameter gradients in fp32. The output has C's dtype.
"""
from __future__ import annotations

import functools
import logging
import math
import time

import torch

from .base import ROTATION_ANCHOR, SpectralOpError, rotation_step, triton_interpreting

IMPLEMENTATIONS = ("auto", "naive", "chunked", "rotation", "triton")
# chunked: positions per block = this // (K * D), at least 1. On a CPU a block's tensors should stay near the core's
# L2 cache (2**20 fp32 values = 4 MiB); on a GPU larger blocks keep the kernel launches few (16 MiB).
DEFAULT_BLOCK_ELEMENTS = {"cpu": 1 << 20, "other": 1 << 22}

log = logging.getLogger(__name__)


# A CPU's vectorized sine reduces its argument cheaply up to about 1e4 radians and falls back to a slower reduction
# past it (one core: 0.42 G sines/s at 1e4, 0.07 at 1e5). Our own reduction in turns costs about a quarter of a sine.
REDUCE_ABOVE_RADIANS = 1.0e4


def angles_need_reduction(positions: torch.Tensor, frequency: torch.Tensor, phase: torch.Tensor,
                          period: float) -> bool:
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


def warn_if_fp32_angles_lose_accuracy(positions: torch.Tensor, frequency: torch.Tensor, phase: torch.Tensor,
                                      period: float, impl: str) -> None:
    """One warning per process where the fp32 angles of `impl` (naive, chunked) can be rounded by
    ANGLE_ROUNDING_WARN_RADIANS or more. Reads max |p| (on a GPU: one synchronization per call, until it warns)."""
    global _angle_warning_given
    if (_angle_warning_given or frequency.dtype == torch.float64 or positions.numel() == 0
            or torch.compiler.is_compiling()):
        return
    turns = _max_abs(frequency) * positions.abs().amax().item() / period + _max_abs(phase) / (2 * math.pi)
    rounding = 2 * math.pi * turns * 2.0 ** -24
    if rounding >= ANGLE_ROUNDING_WARN_RADIANS:
        _angle_warning_given = True
        log.warning("spectral decoder %r: fp32 angles reach %.3g turns (max|F| max|p| / P), where their rounding is "
                    "up to %.2g rad: the atoms lose their accuracy (noise past about 3 rad). The rotation and Triton "
                    "decoders form their angles in float64; or decode in float64", impl, turns, rounding)


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


def spectral_angles(positions: torch.Tensor, frequency: torch.Tensor, phase: torch.Tensor, period: float,
                    reduce: bool = True):
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


def spectral_atoms(positions: torch.Tensor, amplitude: torch.Tensor, frequency: torch.Tensor, phase: torch.Tensor,
                   period: float) -> torch.Tensor:
    """positions (T,) -> S (T, K, D) in the parameters' dtype (fp32 in the model)."""
    warn_if_fp32_angles_lose_accuracy(positions, frequency, phase, period, "naive")
    reduce = angles_need_reduction(positions, frequency, phase, period)
    return amplitude[None] * torch.sin(spectral_angles(positions, frequency, phase, period, reduce)[0])


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
        return [t.detach().reshape(-1)[::max(1, t.numel() // self.FINGERPRINT_VALUES)] for t in self.params]

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
                u = torch.add(phase.detach().double() / (2 * math.pi), frequency.detach().double(),
                              alpha=p / self.period)  # (K, D) turns
                theta = u.frac_().mul_(2 * math.pi).to(dtype)
                self.sin, self.cos = torch.sin(theta), torch.cos(theta)
            a = amplitude.detach()
            S = torch.empty_like(self.cw)  # (K, D), new at every position: never overwritten once handed out
            if self.fused:  # S = A sin, then sin and cos rotated one step, in one pass
                _cpu_rotate_block()(self.sin.numpy(), self.cos.numpy(), a.contiguous().numpy(), self.cw.numpy(),
                                    self.sw.numpy(), 1, S.numpy()[None])
            else:
                torch.mul(a, self.sin, out=S)
                s, c = self.sin, self.cos
                self.sin = torch.addcmul(s * self.cw, c, self.sw)
                self.cos = torch.addcmul(c * self.cw, s, self.sw, value=-1.0)
            self.S, self.p = S, p
        return S


def _cpu_rotate_block():
    from .spectral_cpu import _kernels

    return _kernels()[4]


# ---- choosing an implementation ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _triton_import_error() -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError as e:
        return str(e)
    return None


def triton_status(device: torch.device) -> tuple[bool, str]:
    """(can the triton implementation run on `device`, why not)."""
    error = _triton_import_error()  # tried once per process: this runs on every decoder call
    if error is not None:
        return False, f"Triton is not installed ({error}); pip install triton"
    if device.type == "cuda":
        return True, "cuda"
    if device.type == "cpu" and triton_interpreting():
        return True, "cpu under TRITON_INTERPRET=1"
    return False, (f"Triton kernels need a CUDA device (or CPU tensors with TRITON_INTERPRET=1 set before Triton is "
                   f"imported); got {device.type} tensors")


@torch.compiler.disable  # its first call compiles the kernels: never traced, and the op is a graph break anyway
def rotation_status(device: torch.device) -> tuple[bool, str]:
    """(can the rotation implementation run on `device`, why not)."""
    if device.type != "cpu":
        return False, f"the rotation kernels run on CPU tensors; got {device.type} tensors"
    from .spectral_cpu import cpu_status

    ok, why = cpu_status()  # tried once per process
    return ok, ("" if ok else f"its numba kernels are not available ({why}); pip install numba")


# what 'auto' takes where its fast implementation can run; on CUDA the Triton kernels are checked first
AUTO = {"cuda": "triton", "cpu": "rotation"}
STATUS = {"triton": triton_status, "rotation": rotation_status}
# the on-device check (check_kernels): relative error allowed against float64, by the dtype of C. Correct kernels
# stay near 1e-3 (bf16 operands, TF32 or the hardware sine); a wrong index, mask or reduction gives O(1).
CHECK_TOLERANCE = {torch.float32: 2e-2, torch.bfloat16: 5e-2}
# (B, L, K, D, first position, dtype): the rotation kernels (B <= 16) and the direct ones, bf16 and fp32, with an
# offset and sizes that are not multiples of a tile
CHECK_CASES = ((3, 96, 16, 24, 7, torch.bfloat16), (20, 40, 16, 24, 0, torch.bfloat16), (2, 70, 16, 24, 3, torch.float32))

_announced: set[tuple[str, str]] = set()
_kernel_checks: dict[tuple[str, str], tuple[bool, str]] = {}  # (device, impl) -> (passed, what was found)
_resolutions: dict[tuple[str, str], dict] = {}  # (device, requested) -> what decoder_record() reports


def _device_key(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


@torch.compiler.disable  # runs kernels of its own: never traced
def check_kernels(device: torch.device | str, impl: str = "triton") -> tuple[bool, str]:
    """Run `impl` on `device` on small problems (CHECK_CASES) against the chunked op in float64: the output and the
    gradients of C, A, F and Phi. (True, what was found) where every relative error is within CHECK_TOLERANCE;
    (False, why) on a larger error, a non-finite value, or any error compiling or launching the kernels. Not
    cached: resolve_impl asks once per process and device."""
    device = torch.device(device)
    start = time.perf_counter()
    worst = 0.0
    try:
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
            for n, (B, L, K, D, first, dtype) in enumerate(CHECK_CASES):
                g = torch.Generator().manual_seed(n)
                c, G = torch.randn(B, L, K, generator=g), torch.randn(B, L, D, generator=g)
                params = (torch.randn(K, D, generator=g) / math.sqrt(K), torch.rand(K, D, generator=g) * 64,
                          torch.rand(K, D, generator=g) * 2 * math.pi)
                c = c.to(dtype).float()  # the values the low-precision run sees, exactly
                positions = torch.arange(first, first + L)
                results = []
                for run_impl, run_dtype, where in ((impl, dtype, device), ("chunked", torch.float64, torch.device("cpu"))):
                    param_dtype = torch.float64 if run_dtype == torch.float64 else torch.float32
                    leaves = [t.to(where, run_dtype if i == 0 else param_dtype, copy=True).requires_grad_()
                              for i, t in enumerate((c, *params))]
                    args = (*leaves, positions.to(where), 128.0)
                    _check(*args)
                    y = _decode(*args, run_impl, None)  # not resolve_impl: the check is not a use of the decoder
                    (y * G.to(where, y.dtype)).sum().backward()
                    results.append([t.detach().double().cpu() for t in (y, *(x.grad for x in leaves))])
                for name, got, want in zip(("output", "dC", "dA", "dF", "dPhi"), *results):
                    if not torch.isfinite(got).all():
                        return False, (f"{impl} gave non-finite values of {name} (B={B}, L={L}, K={K}, D={D}, "
                                       f"{str(dtype).removeprefix('torch.')})")
                    err = ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
                    worst = max(worst, err / CHECK_TOLERANCE[dtype])
                    if err > CHECK_TOLERANCE[dtype]:
                        return False, (f"{impl} differs from chunked in {name} by {err:.2g} (relative; tolerance "
                                       f"{CHECK_TOLERANCE[dtype]:g}) at B={B}, L={L}, K={K}, D={D}, "
                                       f"{str(dtype).removeprefix('torch.')}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as e:  # any compile or launch error: the kernels cannot be trusted here
        return False, f"{impl} failed to run: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:500]
    return True, (f"{impl} matched chunked on {len(CHECK_CASES)} problems (worst error {worst:.2g} of the "
                  f"tolerance) in {time.perf_counter() - start:.1f} s")


def kernel_check(device: torch.device, impl: str = "triton") -> tuple[bool, str]:
    """check_kernels once per process, device and implementation; the answer is kept."""
    key = (_device_key(device), impl)
    if key not in _kernel_checks:
        _kernel_checks[key] = check_kernels(device, impl)
    return _kernel_checks[key]


def decoder_record() -> list[dict]:
    """Every decoder this process resolved so far: [{device, requested, used, reason}], in the order first asked
    (the provenance of every record names the decoder a number came from)."""
    return [dict(r) for r in _resolutions.values()]


def resolve_impl(impl: str, device: torch.device) -> str:
    """The implementation `impl` means on `device` ('auto' resolved); a clear error for a name that does not exist
    or for 'triton' / 'rotation' where it cannot run. 'auto' takes Triton only once the kernels have passed their
    check on this device (kernel_check, once per process); otherwise chunked, said in one log line."""
    if impl not in IMPLEMENTATIONS:
        raise SpectralOpError(f"decoder must be one of {', '.join(IMPLEMENTATIONS)}; got {impl!r}")
    device = torch.device(device)
    if impl == "auto":
        fast = AUTO.get(device.type)
        ok, why = STATUS[fast](device) if fast else (False, "")
        if ok and fast == "triton":
            ok, found = kernel_check(device, fast)
            why = "" if ok else f"the Triton kernels failed their on-device check: {found}"
        chosen = fast if ok else "chunked"
        if (device.type, chosen) not in _announced:  # logged once per device: the choice is part of the method
            _announced.add((device.type, chosen))
            (log.warning if fast == "triton" and not ok else log.info)(
                "spectral decoder 'auto' on %s: %s%s", device.type, chosen,
                f" ({fast} unavailable: {why})" if fast and not ok else "")
        key = (_device_key(device), impl)
        if key not in _resolutions:
            reason = (f"{fast} unavailable: {why}" if fast and not ok else
                      f"auto on {device.type}" + (f"; {_kernel_checks[(key[0], fast)][1]}" if fast == "triton" else ""))
            _resolutions[key] = {"device": key[0], "requested": "auto", "used": chosen, "reason": reason}
        return chosen
    for name, status in STATUS.items():
        if impl == name:
            ok, why = status(device)
            if not ok:
                raise SpectralOpError(f"decoder {name!r} cannot run here: {why}")
    key = (_device_key(device), impl)
    if key not in _resolutions:
        _resolutions[key] = {"device": key[0], "requested": impl, "used": impl, "reason": "asked for by name"}
    return impl


def _check(c, amplitude, frequency, phase, positions, period) -> None:
    if not isinstance(c, torch.Tensor) or c.dim() != 3:
        raise SpectralOpError(f"C must be a (B, L, K) tensor; got {tuple(getattr(c, 'shape', ()))}")
    if not c.is_floating_point():
        raise SpectralOpError(f"C must be a floating-point tensor; got {c.dtype}")
    B, L, K = c.shape
    for name, p in (("amplitude", amplitude), ("frequency", frequency), ("phase", phase)):
        if p.dim() != 2 or p.shape[0] != K:
            raise SpectralOpError(f"{name} must be (K, D) with K = {K} (C's last dim); got {tuple(p.shape)}")
        if p.shape != amplitude.shape:
            raise SpectralOpError(f"amplitude, frequency and phase must have one shape; got {tuple(amplitude.shape)}, "
                                  f"{tuple(frequency.shape)}, {tuple(phase.shape)}")
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


def spectral_decode(c: torch.Tensor, amplitude: torch.Tensor, frequency: torch.Tensor, phase: torch.Tensor,
                    positions: torch.Tensor, period: float, impl: str = "auto", block: int | None = None) -> torch.Tensor:
    """C (B, L, K), parameters (K, D), positions (L,) -> X_hat (B, L, D) in C's dtype. See the module docstring.

    `block` (chunked only): positions per block; default DEFAULT_BLOCK_ELEMENTS // (K * D)."""
    _check(c, amplitude, frequency, phase, positions, period)
    return _decode(c, amplitude, frequency, phase, positions, period, resolve_impl(impl, c.device), block)


def _decode(c, amplitude, frequency, phase, positions, period, impl: str, block: int | None) -> torch.Tensor:
    """spectral_decode by the resolved implementation `impl`, inputs already checked."""
    if impl == "naive":
        S = spectral_atoms(positions, amplitude, frequency, phase, period)  # (L, K, D)
        return torch.einsum("blk,lkd->bld", c, S.to(c.dtype))
    if impl == "rotation":  # float64 C asks for float64 arithmetic, and other positions have no single rotation:
        from .spectral_cpu import rotation_spectral_decode  # both take the chunked path

        return rotation_spectral_decode(c, amplitude, frequency, phase, positions, float(period),
                                        lambda: _decode(c, amplitude, frequency, phase, positions, period,
                                                        "chunked", block))
    if impl == "chunked":
        K, D = amplitude.shape
        if block is None:
            elements = DEFAULT_BLOCK_ELEMENTS["cpu" if c.device.type == "cpu" else "other"]
            block = max(1, elements // (K * D))
        if block < 1:
            raise SpectralOpError(f"block must be at least 1; got {block}")
        return ChunkedSpectralDecode.apply(c, amplitude, frequency, phase, positions, float(period), int(block))
    from .spectral_triton import triton_spectral_decode

    return triton_spectral_decode(c, amplitude, frequency, phase, positions, float(period))


# ---- chunked: recompute the atoms block by block -------------------------------------------------------------------
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


# ---- the cost of the op: what the hardware must do at least --------------------------------------------------------
# The algorithm each implementation runs: one sine per (t, k, d) ("direct"), or atoms advanced by rotation from an
# anchor every ROTATION_ANCHOR positions ("rotation"; sdgm/spectral/ops/spectral_cpu.py, and the Triton kernels).
ALGORITHMS = {"naive": "direct", "chunked": "direct", "rotation": "rotation", "triton": "rotation"}


def spectral_cost(B: int, L: int, K: int, D: int, mode: str, bytes_per_value: int = 2,
                  algorithm: str = "direct") -> dict:
    """Work of the fused op, per call. mode "forward" or "forward_backward"; algorithm "direct" or "rotation".

    flops:         matrix multiply-adds of the mixing (2 B L K D forward; backward adds dC and the Q = C^T G
                   products), at the matmul rate
    vector_flops:  elementwise fp32 arithmetic shared by the batch, at the vector rate: the rotation (4 multiply-
                   adds = 6 FLOPs per (t, k, d)) each time the atoms are formed, and in backward the three sums
                   Q sin, Q cos, Q cos w (6 FLOPs per (t, k, d)); none for "direct", whose sines are counted below
    sines:         sine/cosine evaluations, shared by the batch. direct: forward 1 per (t, k, d); backward 2 (sin
                   for dC and dA, cos for dF and dPhi). rotation: a sine and a cosine per anchor (every
                   ROTATION_ANCHOR positions) each time the atoms are formed (the CPU kernels advance their anchors
                   in float64 instead, cheaper still). The triton kernels evaluate 3 in backward (dC has its own
                   kernel) and repeat the atoms once per batch tile; the floor counts the least the arithmetic needs.
    bytes:         C and X_hat once each forward; backward reads C, G, writes dC (parameters are negligible)
    """
    if mode not in ("forward", "forward_backward"):
        raise ValueError(f"mode must be 'forward' or 'forward_backward'; got {mode!r}")
    if algorithm not in ("direct", "rotation"):
        raise ValueError(f"algorithm must be 'direct' or 'rotation'; got {algorithm!r}")
    mix = 2 * B * L * K * D
    passes = 1 if mode == "forward" else 2  # times the atoms are formed: forward, and again in backward
    if algorithm == "direct":
        vector, sines = 0, L * K * D * (1 if mode == "forward" else 3)
    else:
        anchors = -(-L // ROTATION_ANCHOR) * K * D
        vector = 6 * L * K * D * passes + (6 * L * K * D if mode == "forward_backward" else 0)
        sines = 2 * anchors * passes
    io = (K + D) if mode == "forward" else (K + D) + (2 * K + D)
    return {"flops": mix * (1 if mode == "forward" else 3), "vector_flops": vector, "sines": sines,
            "bytes": bytes_per_value * B * L * io}
