"""SDGM's spectral decoder as one op, spectral_decode, and the choice among its implementations.

    S[t, k, d]     = A[k, d] * sin(2 pi F[k, d] p_t / P + Phi[k, d])     atoms at positions p (L,), period P
    X_hat[b, t, d] = sum_k C[b, t, k] * S[t, k, d]                      C (B, L, K); A, F, Phi (K, D)

    x_hat = spectral_decode(c, amplitude, frequency, phase, positions, period, impl="auto")

naive    (naive.py) S materialized for all L positions (L x K x D fp32), then one einsum: the reference. Memory
         O(L K D).
chunked  (chunked.py) a torch.autograd.Function that saves only C and the parameters; forward and backward rebuild
         S for `block` positions at a time. Memory O(block K D); runs on any device.
rotation (rotation_cpu.py, its kernels in rotation_cpu_kernels.py) CPU kernels compiled with numba: S advanced
         from one position to the next by a rotation (four multiply-adds instead of a sine), re-anchored every 32
         positions. fp32 arithmetic; float64 C, or positions that do not advance by a constant step, take the
         chunked path.
triton   (rotation_triton.py, its kernels in triton_mix.py and triton_params.py) fused kernels: each S tile is
         generated in registers and fed to tl.dot; the parameter gradients are reduced per tile in registers. No
         L x K x D buffer exists anywhere.
auto     triton on CUDA where Triton imports and its kernels pass a check on the device (check_kernels: small
         problems and the run's own sizes (check_kernels_for_run) against chunked, values and gradients, once per
         process and device, in a child process on CUDA (kernel_check.py); on a mismatch, any compile or launch
         error or the child's death, chunked, said in one log line); rotation on a CPU where numba compiles it;
         chunked elsewhere. decoder_record() lists what each request resolved to and why (records' provenance).

This module holds the probing of the backends (triton_status, rotation_status), the on-device check, the dispatch
(resolve_impl, spectral_decode) and the cost model of the op (spectral_cost).

Precision: the mixing runs in C's dtype (bf16 under autocast on a GPU, as the naive einsum does), the atoms and
all parameter gradients in fp32. The output has C's dtype.
"""

from __future__ import annotations

import functools
import logging
import math
import time

import torch

from .base import ROTATION_ANCHOR, SpectralOpError, check_inputs, triton_interpreting
from .chunked import chunked_spectral_decode
from .naive import naive_spectral_decode

IMPLEMENTATIONS = ("auto", "naive", "chunked", "rotation", "triton")

log = logging.getLogger(__name__)


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
    return False, (
        f"Triton kernels need a CUDA device (or CPU tensors with TRITON_INTERPRET=1 set before Triton is "
        f"imported); got {device.type} tensors"
    )


@functools.lru_cache(maxsize=1)
def cpu_status() -> tuple[bool, str]:
    """(can the rotation kernels (rotation_cpu.py) run here, why not): numba imports and the kernels compile and run
    on a tiny case."""
    from .rotation_cpu import FUSED_MAX_BATCH, RotationSpectralDecode
    from .rotation_cpu_kernels import _kernels

    try:
        _kernels()
        # gradients on, whatever the caller's mode: the first decoder call of a process may come under no_grad
        # (generation, scoring), and its answer is kept for the whole process
        with torch.inference_mode(False), torch.enable_grad():
            g = torch.Generator().manual_seed(0)  # its own: the training's random stream must not see this check
            for B in (1, FUSED_MAX_BATCH + 1):  # the fused and the blocked kernels
                c = torch.rand(B, 3, 2, generator=g).requires_grad_()
                p = torch.rand(2, 5, generator=g).requires_grad_()
                RotationSpectralDecode.apply(c, p, p, p, torch.arange(3), 3.0).sum().backward()
    except Exception as e:
        return False, f"{type(e).__name__}: {e}".splitlines()[0]
    return True, "numba"


@torch.compiler.disable  # its first call compiles the kernels: never traced, and the op is a graph break anyway
def rotation_status(device: torch.device) -> tuple[bool, str]:
    """(can the rotation implementation run on `device`, why not)."""
    if device.type != "cpu":
        return False, f"the rotation kernels run on CPU tensors; got {device.type} tensors"
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
CHECK_CASES = (
    (3, 96, 16, 24, 7, torch.bfloat16),
    (20, 40, 16, 24, 0, torch.bfloat16),
    (2, 70, 16, 24, 3, torch.float32),
)
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
    params = (
        torch.randn(K, D, generator=g, device=device) / math.sqrt(K),
        torch.rand(K, D, generator=g, device=device) * 64,
        torch.rand(K, D, generator=g, device=device) * 2 * math.pi,
    )
    positions = torch.arange(first, first + L, device=device)
    leaves = [t.to(dtype if i == 0 else torch.float32).clone().requires_grad_() for i, t in enumerate((c, *params))]
    args = (*leaves, positions, 128.0)
    check_inputs(*args)
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
            return worst, (
                f"{impl} differs from chunked in {name} by {err:.2g} (relative; tolerance "
                f"{CHECK_TOLERANCE[dtype]:g}) at {size}"
            )
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
                return False, (
                    f"{impl} failed to run at B={B}, L={L}, K={K}, D={D}, "
                    f"{str(dtype).removeprefix('torch.')}: {type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}"
                )[:500]
            worst = max(worst, w)
            if why is not None:
                return False, why
    return True, (
        f"{impl} matched chunked on {len(cases)} problems (worst error {worst:.2g} of the "
        f"tolerance) in {time.perf_counter() - start:.1f} s"
    )


def check_kernels_in_child(
    device: torch.device | str,
    impl: str = "triton",
    cases=CHECK_CASES,
    timeout_s: float = CHECK_CHILD_TIMEOUT_S,
    command: list[str] | None = None,
) -> tuple[bool, str]:
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
    cmd = (
        command
        or CHECK_CHILD_COMMAND
        or [sys.executable, "-m", "sdgm.spectral.ops.kernel_check", "--device", _device_key(device), "--impl", impl]
    )
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
        _kernel_checks[key] = (
            check_kernels_in_child(device, impl, cases)
            if torch.device(device).type in CHECK_IN_CHILD
            else check_kernels(device, impl, cases)
        )
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
                "spectral decoder 'auto' on %s: %s%s",
                device.type,
                chosen,
                f" ({fast} unavailable: {why})" if fast and not ok else "",
            )
        key = (_device_key(device), impl)
        if key not in _resolutions:
            reason = (
                f"{fast} unavailable: {why}"
                if fast and not ok
                else f"auto on {device.type}" + (f"; {_kernel_checks[(key[0], fast)][1]}" if fast == "triton" else "")
            )
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


def spectral_decode(
    c: torch.Tensor,
    amplitude: torch.Tensor,
    frequency: torch.Tensor,
    phase: torch.Tensor,
    positions: torch.Tensor,
    period: float,
    impl: str = "auto",
    block: int | None = None,
) -> torch.Tensor:
    """C (B, L, K), parameters (K, D), positions (L,) -> X_hat (B, L, D) in C's dtype. See the module docstring.

    `block` (chunked only): positions per block; default chunked.DEFAULT_BLOCK_ELEMENTS // (K * D)."""
    check_inputs(c, amplitude, frequency, phase, positions, period)
    return _decode(c, amplitude, frequency, phase, positions, period, resolve_impl(impl, c.device), block)


def _decode(c, amplitude, frequency, phase, positions, period, impl: str, block: int | None) -> torch.Tensor:
    """spectral_decode by the resolved implementation `impl`, inputs already checked."""
    if impl == "naive":
        return naive_spectral_decode(c, amplitude, frequency, phase, positions, period)
    if impl == "rotation":  # float64 C asks for float64 arithmetic, and other positions have no single rotation:
        from .rotation_cpu import rotation_spectral_decode  # both take the chunked path

        return rotation_spectral_decode(
            c,
            amplitude,
            frequency,
            phase,
            positions,
            float(period),
            lambda: chunked_spectral_decode(c, amplitude, frequency, phase, positions, period, block),
        )
    if impl == "chunked":
        return chunked_spectral_decode(c, amplitude, frequency, phase, positions, period, block)
    from .rotation_triton import triton_spectral_decode

    return triton_spectral_decode(c, amplitude, frequency, phase, positions, float(period))


# ---- the cost of the op: what the hardware must do at least --------------------------------------------------------
# The algorithm each implementation runs: one sine per (t, k, d) ("direct"), or atoms advanced by rotation from an
# anchor every ROTATION_ANCHOR positions ("rotation"; rotation_cpu.py, and rotation_triton.py).
ALGORITHMS = {"naive": "direct", "chunked": "direct", "rotation": "rotation", "triton": "rotation"}


def spectral_cost(
    B: int, L: int, K: int, D: int, mode: str, bytes_per_value: int = 2, algorithm: str = "direct"
) -> dict:
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
    return {
        "flops": mix * (1 if mode == "forward" else 3),
        "vector_flops": vector,
        "sines": sines,
        "bytes": bytes_per_value * B * L * io,
    }
