"""SDGM: shapes, every loss term and the decoder against slow references (values and gradients), causality."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import random_ids

from sdgm.models.contract import causality_violation
from sdgm.models.registry import build_model
from sdgm.spectral.losses import (
    diag_gmm_nll,
    diag_gmm_nll_reference,
    stft_loss,
    stft_magnitude,
    stft_magnitude_reference,
)
from sdgm.spectral.model import SDGM, SDGMConfig
from sdgm.spectral.ops.naive import naive_spectral_decode

V, D, K, L = 50, 16, 8, 24


def small(**kw) -> SDGM:
    torch.manual_seed(0)
    return build_model("sdgm", V, d_model=D, n_atoms=K, seq_len=L, **kw)


@pytest.mark.parametrize("head", ["linear", "pointer"])
def test_shapes(head):
    m = small(head=head, delta=0.1)
    idx = random_ids(V, 3, L)
    x, c, x_hat = m.parts(idx)
    assert x.shape == (3, L, D) and c.shape == (3, L, K) and x_hat.shape == (3, L, D)
    assert m(idx).shape == (3, L, V)
    assert m(idx[:, :5]).shape == (3, 5, V)  # shorter windows work (last evaluation window)
    loss, stats = m.training_loss(idx, random_ids(V, 3, L, seed=2))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert set(stats) == {"nll", "mse", "stft", "prior"}
    loss.backward()
    grads = {n: p.grad for n, p in m.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [
        n for n, g in grads.items() if g is None
    ]


def test_too_long_sequence_is_refused():
    with pytest.raises(ValueError, match="exceeds seq_len"):
        small()(random_ids(V, 3, L + 1))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n_atoms"):
        SDGMConfig(n_atoms=0)
    with pytest.raises(ValueError, match="encoder_padding"):
        SDGMConfig(encoder_padding="future")
    with pytest.raises(TypeError, match="no option"):
        build_model("sdgm", V, n_atom=3)
    with pytest.raises(KeyError, match="unknown model"):
        build_model("gpt5", V)


def test_decoder_matches_reference_values_and_gradients():
    m = small()
    c = torch.randn(2, L, K, dtype=torch.float64, requires_grad=True)
    m.atoms.double()
    fast = m.decode(c)
    a = m.atoms
    slow = naive_spectral_decode(c, a.amplitude, a.frequency, a.phase, torch.arange(L), a.seq_len)  # the reference
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9)
    w = torch.randn_like(fast)
    g_fast = torch.autograd.grad((fast * w).sum(), [c, m.atoms.frequency, m.atoms.phase, m.atoms.amplitude])
    g_slow = torch.autograd.grad((slow * w).sum(), [c, m.atoms.frequency, m.atoms.phase, m.atoms.amplitude])
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8)


def test_atoms_follow_the_formula():
    m = small()
    S = m.atoms(torch.arange(L))  # (L, K, D)
    t, k, d = 7, 3, 5
    a, f, p = (m.atoms.amplitude[k, d].item(), m.atoms.frequency[k, d].item(), m.atoms.phase[k, d].item())
    assert S[t, k, d].item() == pytest.approx(a * math.sin(2 * math.pi * f * t / L + p), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("L_sig,n_fft,hop", [(24, 256, 64), (128, 256, 64), (40, 16, 4)])
def test_stft_magnitude_matches_reference(L_sig, n_fft, hop):
    x = torch.randn(2, L_sig, 3, dtype=torch.float64, requires_grad=True)
    fast = stft_magnitude(x, n_fft, hop)
    slow = stft_magnitude_reference(x, n_fft, hop)
    assert fast.shape == slow.shape == (2, 3, n_fft // 2 + 1, 1 + L_sig // hop)
    torch.testing.assert_close(fast.double(), slow, rtol=1e-4, atol=1e-4)
    w = torch.randn_like(slow)
    # gradient where magnitudes are not near 0 (|z| is not differentiable at 0)
    mask = (slow > 1e-3).double()
    (g_fast,) = torch.autograd.grad((fast.double() * w * mask).sum(), x)
    (g_slow,) = torch.autograd.grad((slow * w * mask).sum(), x)
    torch.testing.assert_close(g_fast, g_slow, rtol=1e-3, atol=1e-3)


def test_stft_loss_is_zero_for_identical_and_positive_otherwise():
    x = torch.randn(2, L, 4)
    assert stft_loss(x, x, 256, 64).item() == 0.0
    ref = F.mse_loss(stft_magnitude_reference(x * 2, 256, 64), stft_magnitude_reference(x, 256, 64))
    assert stft_loss(x * 2, x, 256, 64).item() == pytest.approx(ref.item(), rel=1e-4)


def test_gmm_prior_matches_reference_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    c = torch.randn(6, 4, generator=g, dtype=torch.float64)
    means = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    log_stds = (0.3 * torch.randn(3, 4, generator=g, dtype=torch.float64)).requires_grad_()
    logits = torch.randn(3, generator=g, dtype=torch.float64, requires_grad=True)
    fast = diag_gmm_nll(c.double(), means, log_stds, logits)
    slow = diag_gmm_nll_reference(c, means, log_stds, logits)
    assert fast.item() == pytest.approx(slow.item(), rel=1e-5)
    gf = torch.autograd.grad(fast, [means, log_stds, logits])
    gs = torch.autograd.grad(slow, [means, log_stds, logits])
    for a, b in zip(gf, gs):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-6)


def test_training_loss_is_the_weighted_sum_of_its_terms():
    m = small(alpha=0.5, beta=2.0, gamma=3.0, delta=0.25)
    idx, tgt = random_ids(V, 3, L), random_ids(V, 3, L, seed=5)
    loss, st = m.training_loss(idx, tgt)
    x, c, x_hat = m.parts(idx)
    nll = F.cross_entropy(m(idx).flatten(0, 1), tgt.flatten())
    mse = ((x_hat - x) ** 2).mean()
    spec = F.mse_loss(stft_magnitude_reference(x_hat.detach(), 256, 64), stft_magnitude_reference(x.detach(), 256, 64))
    prior = diag_gmm_nll_reference(c.detach().flatten(0, 1).double(), m.prior_means, m.prior_log_stds, m.prior_logits)
    expected = 3.0 * nll + 0.5 * mse + 2.0 * spec + 0.25 * prior
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    for name, ref in (("nll", nll), ("mse", mse), ("stft", spec), ("prior", prior)):
        assert st[name].item() == pytest.approx(ref.item(), rel=1e-4), name


def test_beta_zero_and_gamma_zero_drop_their_terms():
    idx, tgt = random_ids(V, 3, L), random_ids(V, 3, L, seed=5)
    _, st = small(beta=0.0).training_loss(idx, tgt)
    assert "stft" not in st
    m = small(gamma=0.0)
    loss, st = m.training_loss(idx, tgt)
    assert loss.item() == pytest.approx((st["mse"] + st["stft"]).item(), rel=1e-5)


def test_tied_head_shares_the_embedding():
    m = small(tie_weights=True)
    assert m.lm_head.weight is m.embed.weight
    assert m.num_params() < small(tie_weights=False).num_params()


def test_pointer_head_outputs_a_distribution():
    m = small(head="pointer")
    logp = m(random_ids(V, 3, L))
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(3, L), rtol=1e-4, atol=1e-4)


# ---- causality: changing tokens after t must leave logits at <= t unchanged -------------------------------------
@pytest.mark.parametrize("head", ["linear", "pointer"])
@pytest.mark.parametrize("kernel_size", [1, 3, 4, 7])
def test_causal_encoder_is_causal(head, kernel_size):
    m = small(head=head, kernel_size=kernel_size)
    for t in (0, 5, L - 2):
        assert causality_violation(m, V, L, t=t) == 0.0


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_centered_encoder_is_detected_as_leaking(kernel_size):
    m = small(encoder_padding="centered", kernel_size=kernel_size)
    assert causality_violation(m, V, L, t=10) > 1e-4


def test_diagnostics_cosine_is_a_mean_cosine():
    m = small()
    idx = random_ids(V, 3, L)
    x, _, x_hat = m.parts(idx)
    expected = F.cosine_similarity(x_hat, x, dim=-1).mean().item()
    assert m.diagnostics(idx)["cosine"].item() == pytest.approx(expected, rel=1e-5)


def test_flops_and_state_accounting():
    m = small()
    assert m.flops_per_token() >= 2 * D * V  # at least the head
    assert m.state_bytes_per_sequence() == (3 - 1) * D * 4


def test_compiled_loss_keeps_the_complex_stft_out_of_the_graph():
    """Inductor cannot lower complex tensors on CUDA; the STFT must reach no compiled graph, and the compiled
    loss must equal the eager one."""
    captured = []

    def backend(gm, example_inputs):
        captured.extend(str(n.target) for n in gm.graph.nodes)
        return gm.forward

    torch._dynamo.reset()
    model = build_model("sdgm", 50, d_model=16, n_atoms=8, seq_len=16, stft_n_fft=16, stft_hop=4)
    idx = torch.randint(0, 50, (2, 17))
    eager, _ = model.training_loss(idx[:, :-1], idx[:, 1:])
    compiled, _ = torch.compile(model.training_loss, backend=backend)(idx[:, :-1], idx[:, 1:])
    assert captured, "nothing was compiled"
    assert not [t for t in captured if "stft" in t or "complex" in t]
    assert compiled.item() == pytest.approx(eager.item(), rel=1e-6)


def test_catalog_declares_what_each_model_class_does():
    """sdgm.models.catalog answers capability questions without importing torch; here each answer is checked against the
    class itself, and the config dataclass holds the options the catalog names."""
    import dataclasses

    from sdgm.models.catalog import MODELS
    from sdgm.models.registry import model_classes

    for name, entry in MODELS.items():
        cfg_cls, cls = model_classes(name)
        assert callable(getattr(cls, "mixing_vectors", None)) == entry.mixing_vectors, name
        fields = {f.name for f in dataclasses.fields(cfg_cls)}
        named = {o for pair in entry.divisible for o in pair} | set(entry.tied_equal or ())
        assert named <= fields, (name, named - fields)
        if entry.tied_equal:
            assert "tie_weights" in fields, name
