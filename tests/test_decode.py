"""Incremental decoding of every model against the contract of sdgm.models.interface (window and beyond it), prefill,
the decoding state, and the sampler's output under a fixed seed."""

import pytest
import torch
from helpers import SMALL as SMALL_MODELS
from helpers import random_ids, take_optimizer_steps

from sdgm.harness.generate import _draw, sample_autoregressive
from sdgm.models.interface import LanguageModel
from sdgm.models.registry import MODELS, build_model

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
    return torch.stack([model(idx[:, max(0, t - L + 1) : t + 1])[:, -1] for t in range(T)], dim=1)


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
        torch.testing.assert_close(step[:, t], m(idx[:, t - L + 1 : t + 1])[:, -1], rtol=1e-5, atol=1e-5)
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


def old_sampler(model, prompt, n_new, temperature=1.0, top_k=None, seed=0, next_logits=None):
    """sample_autoregressive as it was before decode_step: a full forward over the cropped context per token
    (or `next_logits(idx)` (B, V), the logits the contract asks for after idx)."""
    gen = torch.Generator(device=prompt.device).manual_seed(seed)
    idx = prompt
    for _ in range(n_new):
        logits = model(idx[:, -model.max_context :])[:, -1] if next_logits is None else next_logits(idx)
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
        assert torch.equal(logits, m(idx[:, max(0, t - 3) : t + 1])[:, -1])
    assert torch.equal(sample_autoregressive(m, idx[:, :2], 9, seed=1), old_sampler(m, idx[:, :2], 9, seed=1))


def test_empty_prompt_is_refused():
    with pytest.raises(ValueError, match="at least one token"):
        sample_autoregressive(small(), torch.zeros(1, 0, dtype=torch.long), 3)


# ---- every registered model -------------------------------------------------------------------------------------
# Small options per model at L = 12; Transformer-XL's memory covers the window (mem_len >= L - 1).
SMALL = {**SMALL_MODELS, "transformer_xl": {**SMALL_MODELS["transformer_xl"], "mem_len": L}}
CACHED = ["gpt2", "linformer", "lstm", "sdgm", "transformer_xl"]  # every causal model decodes incrementally
WINDOW = ["gpt2", "linformer", "sdgm"]  # beyond L: the forward over the last L tokens, exactly


def model(name, trained=False, seed=0, **kw):
    """A small model in eval mode (dropout off): fresh, or after a few optimizer steps with dropout on."""
    torch.manual_seed(seed)
    m = build_model(name, V, seq_len=L, **{**SMALL[name], **kw})
    if trained:
        take_optimizer_steps(m, V, L, steps=3, seed=seed + 1)  # the tests run under no_grad: it enables grad
    return m.eval()


def close(a, b):
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


CASES = [(name, B, trained) for name in CACHED for B in (1, 3) for trained in (False, True)]
IDS_ = [f"{n}-B{B}-{'trained' if tr else 'fresh'}" for n, B, tr in CASES]


def test_every_model_states_how_it_decodes():
    assert sorted(SMALL) == sorted(MODELS)
    for name in MODELS:
        m = model(name)
        assert m.incremental_decoding is (name in CACHED), name
        assert m.decode_beyond_context == ("window" if name in WINDOW + ["linformer_noncausal"] else "state"), name
        assert m.stateful or m.decode_beyond_context == "window"  # only a stateful model may continue its state


@pytest.mark.parametrize("name,B,trained", CASES, ids=IDS_)
@torch.no_grad()
def test_step_equals_the_full_forward_within_the_window(name, B, trained):
    m = model(name, trained)
    idx = random_ids(V, B, L)
    step = stepwise_logits(m, idx)
    for t in range(L):
        close(step[:, t], m(idx[:, : t + 1])[:, -1])
    close(m.decode_reference(idx), step)


@pytest.mark.parametrize(
    "name,B,trained", [c for c in CASES if c[0] in WINDOW], ids=[i for c, i in zip(CASES, IDS_) if c[0] in WINDOW]
)
@torch.no_grad()
def test_window_models_slide_exactly(name, B, trained):
    """Beyond L the step equals the forward over the last L tokens (GPT-2 and Linformer recompute that window)."""
    m = model(name, trained)
    idx = random_ids(V, B, 4 * L + 3)
    step = stepwise_logits(m, idx)
    for t in range(L, idx.shape[1]):
        close(step[:, t], m(idx[:, t - L + 1 : t + 1])[:, -1])
    close(m.decode_reference(idx), step)


@pytest.mark.parametrize("B,trained", [(1, False), (3, True)])
@torch.no_grad()
def test_lstm_keeps_its_whole_history_beyond_the_window(B, trained):
    m = model("lstm", trained)
    idx = random_ids(V, B, 4 * L + 3)
    step = stepwise_logits(m, idx)
    close(step, m(idx))  # the forward over the whole sequence from a zero state: O(1) per token, never forgets
    close(m.decode_reference(idx), step)
    assert (step[:, -1] - m(idx[:, -L:])[:, -1]).abs().max() > 1e-4  # not the window forward (a change on purpose)


def chain_of_one_token_segments(m, idx):
    """Transformer-XL's own recurrence, one token per segment, the memory carried: (B, T, V)."""
    mems, out = None, []
    for t in range(idx.shape[1]):
        logits, mems = m.forward_with_state(idx[:, t : t + 1], mems)
        out.append(logits[:, 0])
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("mem_len", [L, L - 1, L + 5])
@pytest.mark.parametrize("B,trained", [(1, False), (3, True)])
@torch.no_grad()
def test_transformer_xl_memory_slides_beyond_the_window(mem_len, B, trained):
    m = model("transformer_xl", trained, mem_len=mem_len, init_std=0.3)  # at 0.02 distant tokens barely count
    idx = random_ids(V, B, 4 * L + 3)
    step = stepwise_logits(m, idx)
    close(step, chain_of_one_token_segments(m, idx))
    close(m.decode_reference(idx), step)
    for t in range(mem_len + 1):  # while everything fits in the memory: the forward over every token so far
        close(step[:, t], m(idx[:, : t + 1])[:, -1])
    t = 3 * L
    assert (step[:, t] - m(idx[:, t - L + 1 : t + 1])[:, -1]).abs().max() > 1e-4  # not the window forward
    assert (step[:, t] - m(idx[:, t - (L + mem_len) + 1 : t + 1])[:, -1]).abs().max() > 1e-4  # nor a longer one


@torch.no_grad()
def test_transformer_xl_with_a_short_memory_recomputes_the_window():
    m = model("transformer_xl", mem_len=L - 2)
    assert not m.incremental_decoding and m.decode_beyond_context == "window"
    idx = random_ids(V, 2, 2 * L + 1)
    assert torch.equal(stepwise_logits(m, idx), full_forward_logits(m, idx))


PREFILL_CASES = [(name, kw) for name in sorted(MODELS) for kw in [{}]] + [
    ("sdgm", {"head": "pointer"}),
    ("sdgm", {"kernel_size": 1}),
    ("sdgm", {"kernel_size": L + 3}),
    ("transformer_xl", {"mem_len": L + 5}),
    ("transformer_xl", {"mem_len": 3}),
]


@pytest.mark.parametrize("name,kw", PREFILL_CASES, ids=[f"{n}{'-' + str(kw) if kw else ''}" for n, kw in PREFILL_CASES])
@pytest.mark.parametrize("P", [1, 5, L, L + 3, 3 * L])
@torch.no_grad()
def test_prefill_then_steps_follow_the_contract(name, kw, P):
    m = model(name, trained=True, **kw)
    idx = random_ids(V, 2, 3 * L + 4)
    ref = m.decode_reference(idx)  # (B, T, V)
    logits, state = m.prefill(idx[:, :P])
    out = [logits]
    for t in range(P, idx.shape[1]):
        logits, state = m.decode_step(idx[:, t], state)
        out.append(logits)
    close(torch.stack(out, dim=1), ref[:, P - 1 :])


@torch.no_grad()
def test_decoding_state_stops_growing():
    """What each model keeps per sequence: a window of keys and values (GPT-2, Linformer's summaries and block),
    a sliding memory (Transformer-XL), a fixed recurrent state (LSTM); beyond L, GPT-2 and Linformer keep tokens."""
    idx = random_ids(V, 2, 3 * L)
    sizes = {}
    for name in ("gpt2", "linformer", "transformer_xl", "lstm"):
        m = model(name)
        state = m.init_decode_state(2)
        sizes[name] = []
        for t in range(idx.shape[1]):
            _, state = m.decode_step(idx[:, t], state)
            sizes[name].append(state)
        declared = m.state_bytes_per_sequence()
        if name == "gpt2":
            cache = sizes[name][L - 1]["cache"]
            assert cache.get_seq_length() == L  # positions 0 .. L-1 cached
            assert sum(x.numel() for lay in cache.layers for x in (lay.keys, lay.values)) * 4 // 2 == declared
            assert all(s["cache"] is None and s["context"].shape == (2, L) for s in sizes[name][L:])
        if name == "linformer":
            rows = [
                sum(x.shape[2] for c in s["layers"] for x in (c["s_key"], c["key"]) if x is not None)
                for s in sizes[name][:L]
            ]  # key rows over both layers
            assert max(rows) <= 2 * (6 + 5) and rows[4] == 2 * 6 and rows[5] == 2 * (6 + 1)  # block 0 folded at t = 4
            assert all(s["layers"] is None and s["context"].shape == (2, L) for s in sizes[name][L:])
        if name == "transformer_xl":
            lengths = [s["kv"][0][0].shape[2] for s in sizes[name]]
            assert lengths == [min(t + 1, L) for t in range(idx.shape[1])]  # the memory slides at mem_len = L
            kv = sizes[name][-1]["kv"]
            assert sum(x.numel() for pair in kv for x in pair) * 4 // 2 == declared
        if name == "lstm":
            h, c = sizes[name][-1]["hc"]
            assert (h.numel() + c.numel()) * 4 // 2 == declared


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("prompt_len,n_new", [(1, L - 1), (3, 3 * L)])
@torch.no_grad()
def test_samples_for_a_fixed_seed_follow_the_contract(name, prompt_len, n_new):
    """Cached decoding changes no sample: within the window every model draws what the old window sampler drew;
    beyond it, what the model's contract gives (the window itself, except for the LSTM and Transformer-XL)."""
    m = model(name, trained=True)
    prompt = random_ids(V, 4, prompt_len, seed=3)
    new = sample_autoregressive(m, prompt, n_new, temperature=0.9, top_k=20, seed=7)
    expected = old_sampler(
        m, prompt, n_new, temperature=0.9, top_k=20, seed=7, next_logits=lambda idx: m.decode_reference(idx)[:, -1]
    )
    assert torch.equal(new, expected)
    if prompt_len + n_new <= L or m.decode_beyond_context == "window":
        assert torch.equal(new, old_sampler(m, prompt, n_new, temperature=0.9, top_k=20, seed=7))
