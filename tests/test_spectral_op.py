"""The spectral decoder op: chunked, rotation and triton against the naive einsum and against float64, values and
all four gradients, over awkward sizes; memory; bad input (the sm_90 machine code: tests/test_sass.py).

The Triton kernels run under TRITON_INTERPRET=1 here (set in conftest.py): fp32 dots and the library sine, so
these tests check the kernels' indexing, masking, tiling and reductions, not the GPU's bf16 or hardware-sine error.
"""

import itertools
import math
import os
import subprocess
import sys

import pytest
import torch

from sdgm.spectral.model import SDGM, SDGMConfig
from sdgm.spectral.ops.dispatch import SpectralOpError, resolve_impl, spectral_cost, spectral_decode
from sdgm.spectral.ops.naive import naive_spectral_decode

PERIOD = 128.0
NEEDS_TRITON = pytest.mark.needs("triton")
TRITON = pytest.param("triton", marks=NEEDS_TRITON)  # a parameter that runs the Triton kernels


def make_case(B, L, K, D, offset, seed):
    """Fresh random inputs in float64: C (B, L, K), A, F, Phi (K, D), positions (L,), upstream gradient G."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(B, L, K, generator=g, dtype=torch.float64)
    A = torch.randn(K, D, generator=g, dtype=torch.float64) / math.sqrt(K)
    F = torch.rand(K, D, generator=g, dtype=torch.float64) * PERIOD / 2  # up to Nyquist, as the model initialises
    P = torch.rand(K, D, generator=g, dtype=torch.float64) * 2 * math.pi
    G = torch.randn(B, L, D, generator=g, dtype=torch.float64)
    return (c, A, F, P), torch.arange(offset, offset + L), G


def run(impl, inputs, positions, G, dtype, **kw):
    """Output and the gradients of C, A, F, Phi; the output buffer is poisoned first (NaN must not survive)."""
    leaves = [x.detach().clone().to(dtype).requires_grad_() for x in inputs]
    y = spectral_decode(*leaves, positions, PERIOD, impl=impl, **kw)
    assert y.dtype == dtype and y.shape == (*inputs[0].shape[:2], inputs[1].shape[1])
    (y * G.to(dtype)).sum().backward()
    out = [y.detach().double()] + [t.grad.double() for t in leaves]
    for t in leaves:
        t.grad = None
    return out


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


NAMES = ("X_hat", "dC", "dA", "dF", "dPhi")
GRID = [(B, L, K, D) for B in (1, 3, 17) for L in (1, 63, 300) for K in (1, 7, 64) for D in (5, 100)]


def check_against_float64(impl, B, L, K, D, offset, seed, **kw):
    inputs, positions, G = make_case(B, L, K, D, offset, seed)
    exact = run("naive", inputs, positions, G, torch.float64)
    naive32 = run("naive", inputs, positions, G, torch.float32)
    ours = run(impl, inputs, positions, G, torch.float32, **kw)
    for name, o, n, e in zip(NAMES, ours, naive32, exact):
        assert torch.isfinite(o).all(), name
        # no worse than the fp32 reference (whose error grows with F t / P: fp32 angles), and small in any case
        assert rel_err(o, e) <= max(4 * rel_err(n, e), 2e-5), (name, rel_err(o, e), rel_err(n, e))


@pytest.mark.parametrize("B,L,K,D", GRID)
def test_chunked_matches_float64(B, L, K, D):
    check_against_float64("chunked", B, L, K, D, offset=B + K, seed=B * 1000 + L * 10 + K + D, block=7)


@pytest.mark.parametrize("B,L,K,D", GRID)
def test_rotation_matches_float64(B, L, K, D):
    """B = 17 takes the blocked path (atoms by rotation, mixing by BLAS), B = 1 and 3 the fused kernels; L = 63 and
    300 cross anchors (every 32 positions) and segments (every 256)."""
    check_against_float64("rotation", B, L, K, D, offset=B + K, seed=B * 1000 + L * 10 + K + D)


@pytest.mark.parametrize(
    "impl,L,offset",
    [
        ("rotation", 65536, 0),
        ("chunked", 65536, 0),
        ("rotation", 300, 10**6),
        ("chunked", 300, 10**6),
        pytest.param("triton", 70, 10**6, marks=pytest.mark.needs("triton")),
    ],
)
def test_long_sequences_and_far_positions_at_b1(impl, L, offset):
    """B = 1 at L = 65,536 (2,048 anchors advanced in float64) and positions a million periods on (angles near
    5e7 rad, where the fp32 einsum's own angle is off by several hundredths of a turn)."""
    check_against_float64(impl, 1, L, 3, 8, offset=offset, seed=L + offset)


def test_rotation_is_far_more_accurate_than_the_fp32_einsum_at_long_l():
    """The rotation's error does not grow with the angle (float64 anchors, steps reduced in turns): at L = 4,096
    it stays at a few fp32 roundings while the fp32 einsum's grows with F t / P."""
    inputs, positions, G = make_case(1, 4096, 4, 16, 0, 5)
    inputs = [x.float().double() for x in inputs]  # fp32 values exactly: the errors below are the arithmetic's
    exact = run("naive", inputs, positions, G, torch.float64)
    naive32 = run("naive", inputs, positions, G, torch.float32)
    ours = run("rotation", inputs, positions, G, torch.float32)
    for name, o, n, e in zip(NAMES, ours, naive32, exact):
        assert rel_err(o, e) < 1e-5 and rel_err(o, e) < rel_err(n, e) / 4, (name, rel_err(o, e), rel_err(n, e))


@pytest.mark.parametrize(
    "impl,B",
    [
        ("rotation", 1),
        ("rotation", 20),
        pytest.param("triton", 1, marks=NEEDS_TRITON),
        pytest.param("triton", 20, marks=NEEDS_TRITON),
    ],
)
def test_a_million_periods_on_at_the_rotations_accuracy(impl, B):
    """Positions a million periods on (F p / P near 6e7 turns): the angles are formed in float64 (the CPU's anchors,
    the Triton kernels' anchors and direct sines), so the error stays at a few fp32 roundings, far below the fp32
    einsum's (which keeps no fraction of a turn there). B = 1: the rotation kernels; B = 20: the CPU's blocked path
    and Triton's direct mix kernel. (Triton's fp32 angles gave errors of order 1 here.)"""
    inputs, positions, G = make_case(B, 40, 3, 8, 10**6 * int(PERIOD), 1)
    inputs = [x.float().double() for x in inputs]  # fp32 values exactly: the errors below are the arithmetic's
    exact = run("naive", inputs, positions, G, torch.float64)
    for name, o, e in zip(NAMES, run(impl, inputs, positions, G, torch.float32), exact):
        assert rel_err(o, e) < 2e-6, (name, rel_err(o, e))


@pytest.mark.parametrize("B", [1, 17])
def test_rotation_parameter_gradients_at_l_32k_with_small_angles(B):
    """dA, dF, dPhi sum L terms: each anchor stretch is summed in fp32 and the stretches in float64, so their error
    does not grow with L (summed serially in fp32 it reached 4e-6 at L = 32,768, 30x the chunked decoder's). Small
    frequencies, where the fp32 angles are accurate too. B = 1: the fused kernel; B = 17: the blocked path."""
    inputs, positions, G = make_case(B, 32768, 4, 16, 0, 7)
    c, A, F, P = inputs
    inputs = [x.float().double() for x in (c, A, F / 640, P)]  # F below 0.1 cycles per period
    exact = run("naive", inputs, positions, G, torch.float64)
    for name, o, e in list(zip(NAMES, run("rotation", inputs, positions, G, torch.float32), exact))[2:]:
        assert rel_err(o, e) < 1.5e-6, (name, rel_err(o, e))


def test_rotation_takes_the_chunked_path_where_it_does_not_apply():
    """float64 C (a float64 answer is asked for) and positions without a constant step (no single rotation) are
    computed by the chunked implementation: exact in float64, correct for any positions."""
    inputs, positions, G = make_case(2, 40, 5, 7, 0, 2)
    ref = run("naive", inputs, positions, G, torch.float64)
    for name, o, r in zip(NAMES, run("rotation", inputs, positions, G, torch.float64), ref):
        torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("impl", ["rotation", TRITON])
def test_positions_without_a_constant_step(impl):
    """No single rotation carries such atoms from one position to the next: rotation takes the chunked path,
    triton its kernels with a sine per position."""
    inputs, _, G = make_case(2, 40, 5, 7, 0, 2)
    uneven = torch.cat([torch.arange(20), torch.arange(30, 50)])
    ref = run("naive", inputs, uneven, G, torch.float32)
    for name, o, r in zip(NAMES, run(impl, inputs, uneven, G, torch.float32), ref):
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4, msg=name)


def test_rotation_with_strided_positions_and_bf16_c():
    """Positions with a step other than one (every other position) and C in bf16: X_hat and dC keep bf16, the
    parameters' gradients fp32, all close to the fp32 definition."""
    inputs, _, G = make_case(2, 70, 6, 9, 0, 4)
    positions = torch.arange(5, 145, 2)
    check_against_float64("rotation", 2, 70, 6, 9, offset=0, seed=4)  # unit steps, for contrast
    ref = run("naive", inputs, positions, G, torch.float64)
    out32 = run("rotation", inputs, positions, G, torch.float32)
    for name, o, r in zip(NAMES, out32, ref):
        assert rel_err(o, r) < 2e-5, name
    c, A, F, P = [x.float().requires_grad_() for x in inputs]
    cb = c.detach().bfloat16().requires_grad_()
    y = spectral_decode(cb, A, F, P, positions, PERIOD, impl="rotation")
    (y.float() * G.float()).sum().backward()
    assert y.dtype == torch.bfloat16 and cb.grad.dtype == torch.bfloat16 and A.grad.dtype == torch.float32
    assert rel_err(y.double(), ref[0]) < 2e-2 and rel_err(A.grad.double(), ref[2]) < 2e-2


# The Triton kernels, interpreted on a CPU, take seconds per case: they are checked on a covering subset of GRID in
# which every pair of sizes of two dimensions (B and L, L and K, ...) occurs at least once. Each dimension's sizes
# sit on either side of the kernels' tile edges (batch tiles of 16 and 32, positions walked several per program,
# 32 atoms and 64 output columns a tile), so every tail of every tile is still exercised, beside every other one.
TRITON_GRID = [
    (1, 1, 1, 5),
    (1, 1, 7, 100),
    (1, 63, 64, 5),
    (1, 300, 1, 5),
    (3, 1, 7, 100),
    (3, 1, 64, 5),
    (3, 63, 1, 100),
    (3, 300, 7, 5),
    (17, 1, 1, 100),
    (17, 1, 7, 5),
    (17, 1, 64, 100),
    (17, 63, 7, 5),
    (17, 300, 64, 100),
]


def test_the_triton_grid_covers_every_pair_of_sizes():
    assert set(TRITON_GRID) <= set(GRID)
    for i, j in itertools.combinations(range(4), 2):
        assert {(c[i], c[j]) for c in TRITON_GRID} == {(c[i], c[j]) for c in GRID}, (i, j)


@pytest.mark.needs("triton")
@pytest.mark.parametrize(
    "B,L,K,D", [pytest.param(*c, marks=pytest.mark.e2e) if c == max(TRITON_GRID) else c for c in TRITON_GRID]
)  # the largest case is long in the interpreter
def test_triton_matches_float64(B, L, K, D):
    check_against_float64("triton", B, L, K, D, offset=B + K, seed=B * 1000 + L * 10 + K + D)


@pytest.mark.parametrize("impl", ["chunked", "naive"])
def test_float64_chunked_equals_naive_exactly(impl):
    """In float64 the chunked op is the naive op up to summation order."""
    inputs, positions, G = make_case(5, 50, 9, 11, 3, 0)
    ref = run("naive", inputs, positions, G, torch.float64)
    out = run(impl, inputs, positions, G, torch.float64, **({"block": 4} if impl == "chunked" else {}))
    for name, o, r in zip(NAMES, out, ref):
        torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-12, msg=name)


def test_angles_reduced_in_turns_equal_the_plain_angles_and_are_chosen_by_their_size():
    """spectral_angles with and without the reduction in turns give the same sines (float64, angles to 1e5 rad);
    on a CPU the reduction is taken only where the angles can pass REDUCE_ABOVE_RADIANS."""
    from sdgm.spectral.ops.base import REDUCE_ABOVE_RADIANS, angles_need_reduction, spectral_angles

    g = torch.Generator().manual_seed(3)
    F = torch.rand(4, 6, generator=g, dtype=torch.float64) * 16384  # up to Nyquist at L = 32,768
    P = torch.rand(4, 6, generator=g, dtype=torch.float64) * 2 * math.pi
    pos = torch.tensor([0, 1, 777, 32767])
    plain, w = spectral_angles(pos, F, P, 32768.0, reduce=False)
    reduced, w2 = spectral_angles(pos, F, P, 32768.0, reduce=True)
    assert plain.abs().max() > 5e4 and reduced.abs().max() < 2 * math.pi and torch.equal(w, w2)
    torch.testing.assert_close(torch.sin(reduced), torch.sin(plain), rtol=0, atol=1e-9)
    assert angles_need_reduction(pos, F, P, 32768.0)
    assert not angles_need_reduction(pos, F / 1000, P, 32768.0)  # at most about 100 rad
    assert not angles_need_reduction(pos[:0], F, P, 32768.0)
    small = 2 * math.pi * (F / 1000).abs().max() * 32767 / 32768 + P.abs().max()
    assert small < REDUCE_ABOVE_RADIANS
    assert angles_need_reduction(pos.to("meta"), F.to("meta"), P.to("meta"), 32768.0)  # off the CPU: always
    # the parameters' maxima are kept between calls, and an in-place update (an optimizer step) renews them
    small_F = (F / 1000).requires_grad_()
    assert not angles_need_reduction(pos, small_F, P, 32768.0)
    opt = torch.optim.SGD([small_F], lr=1.0)
    small_F.grad = -999 * small_F.detach()  # one step multiplies F by 1000
    opt.step()
    assert angles_need_reduction(pos, small_F, P, 32768.0)
    with torch.no_grad():
        small_F.div_(1000)
    assert not angles_need_reduction(pos, small_F, P, 32768.0)


@pytest.mark.parametrize("impl", ["chunked", "rotation", TRITON])
def test_large_angles_match_float64(impl):
    """Positions far past the period (angles near 1e5 rad): the reduced path of every implementation."""
    check_against_float64(impl, 3, 63, 7, 5, offset=30000, seed=11, **({"block": 7} if impl == "chunked" else {}))


def test_one_warning_where_fp32_angles_lose_their_accuracy(monkeypatch, caplog):
    """chunked and naive form fp32 angles: where their rounding can reach ANGLE_ROUNDING_WARN_RADIANS (F p / P near
    2.7e5 turns) one warning says so, once per process; not below it, not in float64, not for the rotation."""
    from sdgm.spectral.ops import base

    monkeypatch.setattr(base, "_angle_warning_given", False)
    inputs, _, _ = make_case(1, 4, 3, 5, 0, 1)
    c, A, F, P = (x.float() for x in inputs)  # F up to 64 cycles per period of 128
    far, near = torch.arange(10**6, 10**6 + 4), torch.arange(10**5, 10**5 + 4)  # 5e5 and 5e4 turns
    with caplog.at_level("WARNING", logger=base.__name__):
        for impl in ("chunked", "rotation"):
            spectral_decode(c, A, F, P, near, PERIOD, impl=impl)
        spectral_decode(c.double(), A.double(), F.double(), P.double(), far, PERIOD, impl="chunked")
        spectral_decode(c, A, F, P, far, PERIOD, impl="rotation")
        assert not caplog.records
        for impl in ("chunked", "naive", "chunked"):
            spectral_decode(c, A, F, P, far, PERIOD, impl=impl)
    assert len(caplog.records) == 1 and "fp32 angles reach" in caplog.text and "'chunked'" in caplog.text


def test_chunked_gradients_of_non_contiguous_parameters():
    """Parameters that are transposed views (strides (1, K)) get the same gradients as contiguous ones."""
    (c, A, F, P), positions, G = make_case(2, 20, 6, 9, 0, 1)
    views = [t.t().contiguous().t() for t in (A, F, P)]  # same values, column-major
    assert not views[0].is_contiguous()
    ref = run("naive", (c, A, F, P), positions, G, torch.float64)
    out = run("chunked", (c, *views), positions, G, torch.float64, block=3)
    for name, o, r in zip(NAMES, out, ref):
        torch.testing.assert_close(o, r, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("impl", ["chunked", "rotation", TRITON])
@pytest.mark.parametrize("pos", [0, 1, 127, 1000])
def test_decoding_offsets_one_position(impl, pos):
    """Decoding asks for one position at a time at any offset, as SDGM.decode_step does."""
    check_against_float64(impl, 2, 1, 7, 10, offset=pos, seed=pos)


@pytest.mark.needs("triton")
def test_triton_bf16_inputs_keep_their_dtype():
    """C in bf16 (autocast on a GPU) gives X_hat and dC in bf16 and fp32 parameter gradients."""
    inputs, positions, G = make_case(3, 20, 16, 32, 0, 1)
    c, A, F, P = [x.float().requires_grad_() for x in inputs]
    cb = c.detach().bfloat16().requires_grad_()
    y = spectral_decode(cb, A, F, P, positions, PERIOD, impl="triton")
    assert y.dtype == torch.bfloat16
    (y.float() * G.float()).sum().backward()
    assert cb.grad.dtype == torch.bfloat16 and A.grad.dtype == torch.float32
    ref = spectral_decode(c.detach(), A.detach(), F.detach(), P.detach(), positions, PERIOD, impl="naive")
    assert rel_err(y.double(), ref.double()) < 2e-2


@pytest.mark.needs("triton")
def test_model_decode_matches_definition_for_every_decoder():
    for decoder in ("naive", "chunked", "rotation", "triton"):
        torch.manual_seed(0)
        m = SDGM(SDGMConfig(vocab_size=20, d_model=12, n_atoms=5, seq_len=16, decoder=decoder))
        c = torch.randn(2, 16, 5)
        a = m.atoms  # the reference in float64
        ref = naive_spectral_decode(
            c.double(), a.amplitude.double(), a.frequency.double(), a.phase.double(), torch.arange(16), a.seq_len
        )
        torch.testing.assert_close(m.decode(c).double(), ref, rtol=1e-5, atol=1e-5)


def test_model_trains_the_same_with_every_cpu_decoder():
    """Two training steps: the chunked and rotation decoders' gradients move the model as the einsum's do."""
    idx = torch.randint(0, 30, (4, 16), generator=torch.Generator().manual_seed(0))
    losses = {}
    for decoder in ("naive", "chunked", "rotation"):
        torch.manual_seed(0)
        m = SDGM(
            SDGMConfig(vocab_size=30, d_model=16, n_atoms=8, seq_len=16, decoder=decoder, stft_n_fft=8, stft_hop=4)
        )
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        out = []
        for _ in range(2):
            loss, _ = m.training_loss(idx[:, :-1], idx[:, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append(loss.item())
        losses[decoder] = (out, [p.detach().clone() for p in m.parameters()])
    for decoder in ("chunked", "rotation"):
        assert losses["naive"][0] == pytest.approx(losses[decoder][0], rel=1e-6)
        for a, b in zip(losses["naive"][1], losses[decoder][1]):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def rss_growth_of_layer(decoder: str, L: int, D: int, K: int) -> int:
    """Bytes the peak resident memory of a fresh process grows by during forward + backward of SDGM's mixing layer
    (encoder + decoder) at B = 1."""
    code = f"""
import torch
torch.set_num_threads(1)
from sdgm.common.timing import peak_rss_bytes
from sdgm.spectral.model import SDGM, SDGMConfig
m = SDGM(SDGMConfig(vocab_size=1, d_model={D}, n_atoms={K}, seq_len={L}, decoder="{decoder}"))
x = torch.randn(1, {L}, {D}, requires_grad=True)
m.decode(m.encode(x[:, :8])).sum().backward()  # allocator and kernels warm, at a negligible size
before = peak_rss_bytes()
m.decode(m.encode(x)).sum().backward()
assert torch.isfinite(x.grad).all()
print(peak_rss_bytes() - before)
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.e2e  # five fresh processes, up to L = 16k (below that the process's own growth hides the difference)
def test_chunked_and_rotation_layer_memory_does_not_grow_with_l():
    """Forward + backward at B = 1, D = 128, K = 64: the naive decoder holds several L x K x D fp32 tensors; the
    chunked one a block of positions at a time, the rotation one (K, D) states and a segment of anchors, so their
    memory stays flat as L grows 4x. (At the paper's D = 512, K = 256 and L = 8,192: 0.4 GB against about 22 GB,
    docs/spectral-decoder.md.)"""
    D, K = 128, 64
    atoms = {L: L * K * D * 4 for L in (4096, 16384)}  # bytes of one L x K x D fp32 tensor
    for decoder in ("chunked", "rotation"):
        short, long = rss_growth_of_layer(decoder, 4096, D, K), rss_growth_of_layer(decoder, 16384, D, K)
        # the activations (B, L, D) and (B, L, K) grow with L, a few MB each; naive atoms add 403 MB per tensor
        assert long < atoms[16384] and long - short < atoms[16384] / 2, (
            f"{decoder} grew {short / 1e6:.0f} MB at 4k, {long / 1e6:.0f} MB at 16k"
        )
    naive = rss_growth_of_layer("naive", 4096, D, K)
    assert naive > 2 * atoms[4096], f"naive grew {naive / 1e6:.0f} MB"  # the measurement can tell the two apart


def test_cost_model():
    fwd = spectral_cost(2, 8, 4, 16, "forward")
    assert fwd == {"flops": 2 * 2 * 8 * 4 * 16, "vector_flops": 0, "sines": 8 * 4 * 16, "bytes": 2 * 2 * 8 * (4 + 16)}
    both = spectral_cost(2, 8, 4, 16, "forward_backward", bytes_per_value=4)
    assert both["flops"] == 3 * fwd["flops"] and both["sines"] == 3 * fwd["sines"]
    assert both["bytes"] == 4 * 2 * 8 * (4 + 16 + 2 * 4 + 16)
    with pytest.raises(ValueError, match="mode"):
        spectral_cost(1, 1, 1, 1, "backward")
    with pytest.raises(ValueError, match="algorithm"):
        spectral_cost(1, 1, 1, 1, "forward", algorithm="table")


def test_cost_model_of_the_rotation():
    """The rotation forms the atoms with 6 FLOPs per (t, k, d) (once forward, again backward) plus 6 for the three
    sums of backward, and evaluates a sine and a cosine per anchor each time: 33 positions need 2 anchors."""
    from sdgm.spectral.ops.base import ROTATION_ANCHOR

    L, K, D = ROTATION_ANCHOR + 1, 4, 16
    fwd = spectral_cost(2, L, K, D, "forward", algorithm="rotation")
    assert fwd["vector_flops"] == 6 * L * K * D and fwd["sines"] == 2 * 2 * K * D
    both = spectral_cost(2, L, K, D, "forward_backward", algorithm="rotation")
    assert both["vector_flops"] == 18 * L * K * D and both["sines"] == 2 * fwd["sines"]
    direct = spectral_cost(2, L, K, D, "forward_backward")
    assert both["flops"] == direct["flops"] and both["bytes"] == direct["bytes"]


def test_floor_table_moves_the_b1_crossover_with_attention():
    """At an H100's rates the rotation's floor meets attention's at B = 1 about three times sooner than the direct
    sines' (docs/spectral-decoder.md): one sine at 16 a clock per SM against 4 multiply-adds at 128."""
    from sdgm.bench.scaling.cli import crossover_length, floor_table

    direct, rotation = crossover_length(algorithm="direct"), crossover_length(algorithm="rotation")
    assert 20_000 < direct < 32_000 and 6_000 < rotation < 12_000
    table = floor_table(lengths=(8192,), batch_lengths=())
    assert "| tokens | 8,192 | 8 |" in table and "vector_flops" in table and "sines" in table


# ---- bad input: one clear error each -------------------------------------------------------------------------------
def params(K=4, D=6):
    return torch.randn(K, D), torch.rand(K, D), torch.rand(K, D)


@pytest.mark.parametrize("impl", ["naive", "chunked", "rotation", TRITON])
def test_shape_errors_name_the_argument(impl):
    A, F, P = params()
    with pytest.raises(SpectralOpError, match=r"C must be a \(B, L, K\)"):
        spectral_decode(torch.randn(3, 4), A, F, P, torch.arange(3), PERIOD, impl=impl)
    with pytest.raises(SpectralOpError, match="amplitude must be .K, D. with K = 5"):
        spectral_decode(torch.randn(2, 3, 5), A, F, P, torch.arange(3), PERIOD, impl=impl)
    with pytest.raises(SpectralOpError, match="one shape"):
        spectral_decode(torch.randn(2, 3, 4), A, F[:, :5], P, torch.arange(3), PERIOD, impl=impl)
    with pytest.raises(SpectralOpError, match="positions must be .L,. with L = 3"):
        spectral_decode(torch.randn(2, 3, 4), A, F, P, torch.arange(4), PERIOD, impl=impl)
    with pytest.raises(SpectralOpError, match="floating-point"):
        spectral_decode(torch.ones(2, 3, 4, dtype=torch.long), A, F, P, torch.arange(3), PERIOD, impl=impl)
    with pytest.raises(SpectralOpError, match="period"):
        spectral_decode(torch.randn(2, 3, 4), A, F, P, torch.arange(3), 0, impl=impl)


@pytest.mark.needs("triton")
def test_triton_refuses_non_contiguous_and_float64():
    A, F, P = params()
    c = torch.randn(2, 4, 3).transpose(1, 2)  # (2, 3, 4), not contiguous
    with pytest.raises(SpectralOpError, match="contiguous C"):
        spectral_decode(c, A, F, P, torch.arange(3), PERIOD, impl="triton")
    with pytest.raises(SpectralOpError, match="float32, bfloat16 or float16"):
        spectral_decode(c.contiguous().double(), A, F, P, torch.arange(3), PERIOD, impl="triton")
    # naive, chunked and rotation take any layout
    for impl in ("naive", "chunked", "rotation"):
        assert spectral_decode(c, A, F, P, torch.arange(3), PERIOD, impl=impl).shape == (2, 3, 6)


@pytest.mark.needs("triton")  # without it, 'triton' is refused for that reason instead
def test_unknown_decoder_and_triton_where_it_cannot_run(monkeypatch):
    with pytest.raises(
        SpectralOpError, match="decoder must be one of auto, naive, chunked, rotation, triton; got 'fast'"
    ):
        resolve_impl("fast", torch.device("cpu"))
    with pytest.raises(ValueError, match="decoder must be one of"):
        SDGMConfig(decoder="einsum")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(SpectralOpError, match="decoder 'triton' cannot run here: Triton kernels need a CUDA device"):
        resolve_impl("triton", torch.device("cpu"))
    assert resolve_impl("auto", torch.device("cpu")) == "rotation"  # auto never picks Triton on a CPU
    with pytest.raises(SpectralOpError, match="decoder 'rotation' cannot run here: the rotation kernels run on CPU"):
        resolve_impl("rotation", torch.device("meta"))


def test_without_numba_auto_takes_the_chunked_path_and_says_why():
    """A process where numba cannot be imported: 'auto' on a CPU resolves to chunked, logs one line naming the
    reason, and the decoder still gives the definition's values; 'rotation' asked for by name is refused."""
    code = """
import logging, sys, torch
sys.modules["numba"] = None  # import numba now raises ImportError, as where it is not installed
logging.basicConfig(level=logging.INFO, format="%(message)s")
from sdgm.spectral.ops.dispatch import SpectralOpError, resolve_impl, spectral_decode
assert resolve_impl("auto", torch.device("cpu")) == "chunked"
c, A = torch.randn(2, 5, 3), torch.randn(3, 4)
y = spectral_decode(c, A, A.abs(), A, torch.arange(5), 8.0)
assert torch.allclose(y, spectral_decode(c, A, A.abs(), A, torch.arange(5), 8.0, impl="naive"), atol=1e-5)
try:
    resolve_impl("rotation", torch.device("cpu"))
except SpectralOpError as e:
    print("refused:", e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stderr.splitlines() if "spectral decoder 'auto'" in line]
    assert len(lines) == 1 and "chunked (rotation unavailable:" in lines[0] and "numba" in lines[0], out.stderr
    assert "refused: decoder 'rotation' cannot run here" in out.stdout and "pip install numba" in out.stdout


def test_the_rotation_kernels_leave_torch_its_thread_count():
    """numba's OpenMP layer, when it starts, sets the process's OpenMP thread count, torch's too: a fresh process
    that asked torch for 1 thread keeps 1 (and 2 keeps 2) through the kernels' first load and use."""
    code = """
import sys, torch
n = int(sys.argv[1])
torch.set_num_threads(n)
from sdgm.spectral.ops.dispatch import spectral_decode
c, A = torch.randn(5, 40, 3, requires_grad=True), torch.randn(3, 4)
spectral_decode(c, A, A.abs(), A, torch.arange(40), 8.0, impl="rotation").sum().backward()
print(torch.get_num_threads())
"""
    for n in (1, 2):
        out = subprocess.run([sys.executable, "-c", code, str(n)], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.split()[-1] == str(n), (n, out.stdout)


def test_chunked_refuses_a_bad_block():
    A, F, P = params()
    with pytest.raises(SpectralOpError, match="block must be at least 1"):
        spectral_decode(torch.randn(1, 3, 4), A, F, P, torch.arange(3), PERIOD, impl="chunked", block=0)


@pytest.mark.parametrize("fused", [True, False])
def test_atom_stream_follows_the_definition_step_by_step(fused, monkeypatch):
    """Incremental decoding's atoms: 300 successive positions (rotations between anchors every 32), a repeated
    position, a jump back; each within fp32 rounding of the float64 definition. An in-place parameter update is
    noticed. fused: the CPU's one-pass kernel; else the torch operations a GPU runs."""
    from sdgm.spectral.ops import dispatch, stream
    from sdgm.spectral.ops.naive import spectral_atoms
    from sdgm.spectral.ops.stream import AtomStream

    dispatch.cpu_status.cache_clear()  # asked first under torch.no_grad, as inference asks it
    if not fused:
        monkeypatch.setattr(stream, "rotation_status", lambda device: (False, "torch path under test"))

    (_, A, F, P), _, _ = make_case(1, 1, 6, 10, 0, 8)
    A, F, P = A.float(), F.float(), P.float()
    stream = AtomStream(A, F, P, PERIOD)
    stream.at(0)
    assert stream.fused == fused
    exact = spectral_atoms(torch.arange(1000), A.double(), F.double(), P.double(), PERIOD)  # (1000, K, D)
    for p in [*range(300), 299, 299, 17, 18, 999]:
        err = (stream.at(p).double() - exact[p]).abs().max().item()
        assert err < 2e-5 * A.abs().max().item(), (p, err)
    with torch.no_grad():
        A.mul_(2)
    torch.testing.assert_close(stream.at(999).double(), 2 * exact[999], rtol=0, atol=4e-5 * A.abs().max().item())


def test_atom_stream_in_float64_never_overwrites_and_sees_changes_past_the_version_counter():
    """A float64 model's stream is float64 throughout (within 1e-12 of the definition; fp32 gave 1e-7). A tensor
    handed out is not overwritten by the next call. Changes that do not advance the version counter (through
    .data, a fused optimizer step) restart the stream."""
    from sdgm.spectral.ops.naive import spectral_atoms
    from sdgm.spectral.ops.stream import AtomStream

    (_, A, F, P), _, _ = make_case(1, 1, 6, 10, 0, 9)
    A, F, P = (torch.nn.Parameter(x) for x in (A, F, P))
    stream = AtomStream(A, F, P, PERIOD)

    def exact(p):
        return spectral_atoms(torch.tensor([p]), A.detach(), F.detach(), P.detach(), PERIOD)[0]

    for p in range(70):
        S = stream.at(p)
        assert S.dtype == torch.float64 and (S - exact(p)).abs().max() < 1e-12, (p, (S - exact(p)).abs().max())
    first = stream.at(70)
    kept = first.clone()
    assert stream.at(70) is first and not torch.equal(stream.at(71), kept)
    assert torch.equal(first, kept)  # the next position did not overwrite it
    A.data.mul_(2)  # bypasses the version counter
    torch.testing.assert_close(stream.at(72), exact(72), rtol=0, atol=1e-12)
    for t in (A, F, P):
        t.grad = torch.ones_like(t)
    torch.optim.Adam([A, F, P], lr=0.1, fused=True).step()  # does not advance the version counter either
    torch.testing.assert_close(stream.at(73), exact(73), rtol=0, atol=1e-12)


def test_a_float64_model_generates_in_float64():
    """decode_step of a float64 SDGM gives its float64 forward's logits to 1e-10 (the stream was fp32: 1e-7)."""
    torch.manual_seed(0)
    m = SDGM(SDGMConfig(vocab_size=30, d_model=16, n_atoms=8, seq_len=40)).double().eval()
    idx = torch.randint(0, 30, (2, 40))
    with torch.no_grad():
        state = m.init_decode_state(2)
        for t in range(40):
            logits, state = m.decode_step(idx[:, t], state)
            assert logits.dtype == torch.float64
            torch.testing.assert_close(logits, m(idx[:, : t + 1])[:, -1], rtol=1e-10, atol=1e-10)


def test_auto_takes_rotation_even_when_first_asked_under_no_grad():
    """The rotation kernels' self-test runs a backward; a process whose first decoder call comes under no_grad or
    inference_mode (generation, scoring) must still find them, not fall back to chunked for good."""
    code = """
import torch
from sdgm.spectral.ops.dispatch import decoder_record, resolve_impl
with torch.inference_mode():
    print(resolve_impl("auto", torch.device("cpu")), decoder_record()[0]["reason"])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "rotation auto on cpu", out.stdout


def test_the_rotation_check_leaves_the_global_random_stream_alone():
    """A process's first decoder call runs the kernels' self-check; a training run that resumes in another process
    (where the check already ran, or not) must draw the same random numbers, so the check uses its own generator."""
    from sdgm.spectral.ops import dispatch

    dispatch.cpu_status.cache_clear()
    torch.manual_seed(5)
    assert dispatch.cpu_status()[0]
    after_check = torch.rand(3)
    torch.manual_seed(5)
    torch.testing.assert_close(torch.rand(3), after_check, rtol=0, atol=0)
