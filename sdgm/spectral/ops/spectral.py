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
         problems and the run's own sizes (check_kernels_for_run) against chunked, values and gradients, once per
         process and device, in a child process on CUDA; on a mismatch, any compile or launch error or the child's
         death, chunked, said in one log line); rotation on a CPU where numba compiles it; chunked elsewhere.
         decoder_record() lists what each request resolved to and why (records' provenance).

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
CHECK_TOLERANCE = {torch.float32: 2e-2, torch.bfloat16: 5e-2, torch.float16: 5e-2}
# (B, L, K, D, first position, dtype): the rotation kernels (B <= 16) and the direct ones, bf16 and fp32, with an
# offset and sizes that are not multiples of a tile
CHECK_CASES = ((3, 96, 16, 24, 7, torch.bfloat16), (20, 40, 16, 24, 0, torch.bfloat16), (2, 70, 16, 24, 3, torch.float32))
# a problem larger than this (B L K D) is checked at a sample of positions: the output and dC at CHECK_SAMPLE
# positions (first, last, and spread between) against float64, the parameter gradients for finite values only
CHECK_FULL_ELEMENTS = 1 << 24
CHECK_SAMPLE = 64
CHECK_CHILD_TIMEOUT_S = 900
CHECK_IN_CHILD = {"cuda"}  # device types whose check runs in a child process (a fault there can kill a process)

_announced: set[tuple[str, str]] = set()
_kernel_checks: dict[tuple[str, str], tuple[bool, str]] = {}  # (device, impl) -> (passed, what was found)
_resolutions: dict[tuple[str, str], dict] = {}  # (device, requested) -> what decoder_record() reports
CHECK_CHILD_COMMAND: list[str] | None = None  # the child's command line; None: python -m sdgm.spectral.ops.kernel_check
_run_sizes: list[tuple] = []  # (B, L, K, D, dtype) of the run, registered by check_kernels_for_run


def _device_key(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)


def run_check_cases(sizes) -> tuple:
    """The check's problems for a run's sizes [(B, L, K, D, dtype)]: CHECK_CASES, then each size as the run uses it
    (positions from 0), so that every kernel configuration and shape the run launches is compiled and run."""
    return (*CHECK_CASES, *((int(B), int(L), int(K), int(D), 0, dtype) for B, L, K, D, dtype in sizes))


def _check_case(impl: str, device: torch.device, n: int, case) -> tuple[float, str | None]:
    """(worst error / tolerance, why it failed or None) of one problem of check_kernels."""
    B, L, K, D, first, dtype = case
    full = B * L * K * D <= CHECK_FULL_ELEMENTS
    g = torch.Generator(device=device).manual_seed(n)
    c = torch.randn(B, L, K, generator=g, device=device).to(dtype).float()  # the values a low-precision run sees
    G = torch.randn(B, L, D, generator=g, device=device)
    params = (torch.randn(K, D, generator=g, device=device) / math.sqrt(K),
              torch.rand(K, D, generator=g, device=device) * 64,
              torch.rand(K, D, generator=g, device=device) * 2 * math.pi)
    positions = torch.arange(first, first + L, device=device)
    leaves = [t.to(dtype if i == 0 else torch.float32).clone().requires_grad_() for i, t in enumerate((c, *params))]
    args = (*leaves, positions, 128.0)
    _check(*args)
    y = _decode(*args, impl, None)  # not resolve_impl: the check is not a use of the decoder
    (y * G.to(y.dtype)).sum().backward()
    got = [t.detach() for t in (y, *(x.grad for x in leaves))]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    # the reference: chunked in float64 on the CPU, at every position or at a sample (then the output and dC only)
    idx = torch.arange(L) if full else torch.unique(torch.linspace(0, L - 1, CHECK_SAMPLE).round().long())
    ref = [t.detach().double().cpu().requires_grad_() for t in (c[:, idx.to(device)], *params)]
    want = _decode(*ref, positions.cpu()[idx], 128.0, "chunked", None)
    (want * G[:, idx.to(device)].double().cpu()).sum().backward()
    want = [want.detach(), *(t.grad for t in ref)]
    got[:2] = [t[:, idx.to(device)] for t in got[:2]]
    worst = 0.0
    size = f"B={B}, L={L}, K={K}, D={D}, {str(dtype).removeprefix('torch.')}"
    for name, a, w in zip(("output", "dC", "dA", "dF", "dPhi"), got, want):
        a = a.double().cpu()
        if not torch.isfinite(a).all():
            return worst, f"{impl} gave non-finite values of {name} ({size})"
        if not full and name not in ("output", "dC"):
            continue
        err = ((a - w).abs().max() / w.abs().max().clamp_min(1e-30)).item()
        worst = max(worst, err / CHECK_TOLERANCE[dtype])
        if err > CHECK_TOLERANCE[dtype]:
            return worst, (f"{impl} differs from chunked in {name} by {err:.2g} (relative; tolerance "
                           f"{CHECK_TOLERANCE[dtype]:g}) at {size}")
    return worst, None


@torch.compiler.disable  # runs kernels of its own: never traced
def check_kernels(device: torch.device | str, impl: str = "triton", cases=CHECK_CASES) -> tuple[bool, str]:
    """Run `impl` on `device` on `cases` ((B, L, K, D, first position, dtype): CHECK_CASES, or with a run's sizes,
    run_check_cases) against the chunked op in float64: the output and the gradients of C, A, F and Phi (a problem
    above CHECK_FULL_ELEMENTS: the output and dC at CHECK_SAMPLE positions, the rest for finite values). (True,
    what was found) where every relative error is within CHECK_TOLERANCE; (False, why) on a larger error, a
    non-finite value, or any error compiling or launching the kernels. In this process: a fault that kills it (an
    illegal memory access on CUDA) kills the caller; check_kernels_in_child runs it in a child process."""
    device = torch.device(device)
    start = time.perf_counter()
    worst = 0.0
    with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device.type, enabled=False):
        for n, case in enumerate(cases):
            try:
                w, why = _check_case(impl, device, n, case)
            except Exception as e:  # any compile or launch error: the kernels cannot be trusted here
                B, L, K, D, _, dtype = case
                return False, (f"{impl} failed to run at B={B}, L={L}, K={K}, D={D}, "
                               f"{str(dtype).removeprefix('torch.')}: {type(e).__name__}: "
                               f"{str(e).splitlines()[0] if str(e) else ''}")[:500]
            worst = max(worst, w)
            if why is not None:
                return False, why
    return True, (f"{impl} matched chunked on {len(cases)} problems (worst error {worst:.2g} of the "
                  f"tolerance) in {time.perf_counter() - start:.1f} s")


def check_kernels_in_child(device: torch.device | str, impl: str = "triton", cases=CHECK_CASES,
                           timeout_s: float = CHECK_CHILD_TIMEOUT_S,
                           command: list[str] | None = None) -> tuple[bool, str]:
    """check_kernels in a child process (python -m sdgm.spectral.ops.kernel_check), so that a fault that kills a
    process (an illegal memory access on CUDA, an abort in a compiler) kills the child, not the run: (False, why)
    where the child dies, runs past `timeout_s` or answers nothing. The child reads the cases as JSON on stdin and
    answers one JSON line {"ok", "why"} on stdout; `command` replaces its command line (tests)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    device = torch.device(device)
    spec = json.dumps([[B, L, K, D, first, str(dtype).removeprefix("torch.")] for B, L, K, D, first, dtype in cases])
    repo = str(Path(__file__).resolve().parents[3])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)}
    cmd = command or CHECK_CHILD_COMMAND or [sys.executable, "-m", "sdgm.spectral.ops.kernel_check",
                                             "--device", _device_key(device), "--impl", impl]
    start = time.perf_counter()
    try:
        out = subprocess.run(cmd, input=spec, capture_output=True, text=True, env=env, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False, f"the kernel check's child process ran past {timeout_s:g} s and was stopped"
    tail = (out.stderr.strip().splitlines() or [""])[-1][:300]
    if out.returncode != 0:
        how = f"was killed by signal {-out.returncode}" if out.returncode < 0 else f"exited with code {out.returncode}"
        return False, f"the kernel check's child process {how} after {time.perf_counter() - start:.1f} s: {tail}"
    try:
        answer = json.loads(out.stdout.strip().splitlines()[-1])
        return bool(answer["ok"]), str(answer["why"])
    except (IndexError, ValueError, KeyError, TypeError):
        return False, f"the kernel check's child process gave no answer: {tail}"


def kernel_check(device: torch.device, impl: str = "triton") -> tuple[bool, str]:
    """The check once per process, device and implementation; the answer is kept. On CUDA in a child process, with
    the run's sizes where check_kernels_for_run registered them; elsewhere (the interpreter, tests) here."""
    key = (_device_key(device), impl)
    if key not in _kernel_checks:
        cases = run_check_cases(_run_sizes)
        _kernel_checks[key] = (check_kernels_in_child(device, impl, cases) if torch.device(device).type in
                               CHECK_IN_CHILD else check_kernels(device, impl, cases))
    return _kernel_checks[key]


def check_kernels_for_run(device: torch.device | str, sizes, impl: str = "triton") -> tuple[bool, str]:
    """Before a run: register its sizes [(B, L, K, D, dtype)] (every batch shape it will decode: training, the last
    short batch, evaluation) and check the kernels on them (kernel_check, again if it ran before; 'auto' on this
    device then decides again), so that a configuration that fails to compile or faults at those sizes sends 'auto'
    to chunked, with the reason, before the run starts instead of failing in it."""
    device = torch.device(device)
    _run_sizes.extend(s for s in sizes if s not in _run_sizes)
    _kernel_checks.pop((_device_key(device), impl), None)
    _resolutions.pop((_device_key(device), "auto"), None)  # 'auto' decides again, on this check
    return kernel_check(device, impl)


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
