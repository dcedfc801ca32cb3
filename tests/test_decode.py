"""Incremental decoding: SDGM's constant-cost step equals the full forward; the sampler's output is unchanged."""
import pytest
import torch

from sdgm.generate import _draw, sample_autoregressive
from sdgm.interface import LanguageModel
from sdgm.registry import build_model

V, D, K, L = 50, 16, 8, 12


def small(**kw):
    torch.manual_seed(0)
    m = build_model("sdgm", V, d_model=D, n_atoms=K, seq_len=L, **kw)
    return m.eval()


def stepwise_logits(model, idx):
    """Logits after each token of idx (B, T), fed one at a time: (B, T, V)."""
    state = model.init_decode_state(idx.shape[0])
    out = []
    for t in range(idx.shape[1]):
        logits, state = model.decode_step(idx[:, t], state)
        out.append(logits)
    return torch.stack(out, dim=1)


def full_forward_logits(model, idx):
    """What the sampler reads at each t: model(last L tokens up to t)[:, -1]; (B, T, V)."""
    T = idx.shape[1]
    return torch.stack([model(idx[:, max(0, t - L + 1):t + 1])[:, -1] for t in range(T)], dim=1)


@pytest.mark.parametrize("kernel_size", [1, 3, 5, L + 3])
@pytest.mark.parametrize("activation", ["gelu", "identity"])
@pytest.mark.parametrize("tie", [True, False])
@torch.no_grad()
def test_incremental_sdgm_equals_full_forward(kernel_size, activation, tie):
    m = small(kernel_size=kernel_size, activation=activation, tie_weights=tie)
    assert m.incremental_decoding
    idx = torch.randint(0, V, (3, 3 * L + 2), generator=torch.Generator().manual_seed(1))
    step = stepwise_logits(m, idx)
    # t < L: the step equals the full forward over the whole prefix at position t
    torch.testing.assert_close(step[:, :L], m(idx[:, :L]), rtol=1e-5, atol=1e-5)
    # t >= L: it equals the last position of the forward over the window idx[t-L+1 .. t]
    for t in range(L, idx.shape[1]):
        torch.testing.assert_close(step[:, t], m(idx[:, t - L + 1:t + 1])[:, -1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(step, full_forward_logits(m, idx), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_sdgm_decoding_state_does_not_grow():
    m = small()
    state = m.init_decode_state(2)
    sizes = set()
    for t in range(3 * L):
        _, state = m.decode_step(torch.full((2,), t % V), state)
        sizes.add(tuple(state["emb"].shape))
    assert sizes == {(2, m.cfg.kernel_size - 1, D)}
    assert state["emb"].numel() * 4 // 2 == m.state_bytes_per_sequence()


@pytest.mark.parametrize("kw", [{"head": "pointer"}, {"encoder_padding": "centered"}])
@torch.no_grad()
def test_models_without_a_recurrence_use_the_exact_default(kw):
    m = small(**kw)
    assert not m.incremental_decoding
    idx = torch.randint(0, V, (2, 2 * L + 1), generator=torch.Generator().manual_seed(2))
    assert torch.equal(stepwise_logits(m, idx), full_forward_logits(m, idx))


def old_sampler(model, prompt, n_new, temperature=1.0, top_k=None, seed=0):
    """sample_autoregressive as it was before decode_step: a full forward over the cropped context per token."""
    gen = torch.Generator(device=prompt.device).manual_seed(seed)
    idx = prompt
    for _ in range(n_new):
        logits = model(idx[:, -model.max_context:])[:, -1]
        idx = torch.cat([idx, _draw(logits, temperature, top_k, gen)], dim=1)
    return idx


@pytest.mark.parametrize("kw", [{}, {"head": "pointer"}])
@pytest.mark.parametrize("prompt_len", [1, 5, L + 4])
@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.8, 10), (0.0, None)])
@torch.no_grad()
def test_sampler_output_is_unchanged(kw, prompt_len, temperature, top_k):
    m = small(**kw)
    prompt = torch.randint(0, V, (4, prompt_len), generator=torch.Generator().manual_seed(3))
    n_new = 2 * L + 3  # well past the window: the cropping regime
    new = sample_autoregressive(m, prompt, n_new, temperature=temperature, top_k=top_k, seed=7)
    old = old_sampler(m, prompt, n_new, temperature=temperature, top_k=top_k, seed=7)
    assert torch.equal(new, old)


class Unigram(LanguageModel):
    """Minimal model with no decode override: the generic default serves it."""

    max_context = 4

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(V, V)

    def forward(self, idx):
        return self.table(idx).cumsum(1)  # position t depends on tokens <= t


@torch.no_grad()
def test_default_decode_step_crops_to_max_context():
    m = Unigram()
    idx = torch.randint(0, V, (2, 11), generator=torch.Generator().manual_seed(4))
    state = m.init_decode_state(2)
    for t in range(idx.shape[1]):
        logits, state = m.decode_step(idx[:, t], state)
        assert state["context"].shape[1] == min(t + 1, 4)
        assert torch.equal(logits, m(idx[:, max(0, t - 3):t + 1])[:, -1])
    assert torch.equal(sample_autoregressive(m, idx[:, :2], 9, seed=1), old_sampler(m, idx[:, :2], 9, seed=1))


def test_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="at least one token"):
        sample_autoregressive(small(), torch.zeros(1, 0, dtype=torch.long), 3)
