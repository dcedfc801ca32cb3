"""Transformer-XL: shapes, relative attention against a per-position reference, causality, and memory."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import random_ids

from baselines.transformer_xl import TransformerXL, TransformerXLConfig, rel_shift, sinusoid
from sdgm.models.contract import causality_violation
from sdgm.models.registry import build_model

V, S = 50, 8
SMALL = dict(seq_len=S, n_layer=2, n_head=2, d_model=16, d_head=8, d_inner=32)


def small(**kw) -> TransformerXL:
    torch.manual_seed(0)
    return build_model("transformer_xl", V, **{**SMALL, "mem_len": S, **kw})


def test_shapes_and_every_parameter_gets_a_gradient():
    m = small(dropout=0.1, dropatt=0.1)
    assert m(random_ids(V, 3, S)).shape == (3, S, V)
    assert m(random_ids(V, 3, 3)).shape == (3, 3, V)
    loss, stats = m.training_loss(random_ids(V, 3, S), random_ids(V, 3, S, seed=2))
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert set(stats) == {"nll"}
    logits, mems = m.forward_with_state(random_ids(V, 3, S), None)
    assert logits.shape == (3, S, V)
    assert len(mems) == 2 and all(x.shape == (3, S, 16) and not x.requires_grad for x in mems)  # stop-gradient


def test_memory_keeps_the_last_mem_len_states():
    m = small(mem_len=5).eval()
    _, mems = m.forward_with_state(random_ids(V, 3, 3), None)
    assert [x.shape[1] for x in mems] == [3, 3]  # fewer states than mem_len so far
    _, mems2 = m.forward_with_state(random_ids(V, 3, 4, seed=2), mems)
    assert [x.shape[1] for x in mems2] == [5, 5]
    torch.testing.assert_close(mems2[1][:, :1], mems[1][:, 2:])  # 3 + 4 states: the oldest 2 dropped
    assert m.forward_with_state(random_ids(V, 3, S), None)[1] is not None
    assert small(mem_len=0).forward_with_state(random_ids(V, 3, S), None)[1] is None


def test_too_long_segment_is_refused():
    with pytest.raises(ValueError, match="exceeds seq_len"):
        small(mem_len=2)(random_ids(V, 3, S + 3))


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="n_head"):
        TransformerXLConfig(n_head=0)
    with pytest.raises(ValueError, match="mem_len"):
        TransformerXLConfig(mem_len=-1)
    with pytest.raises(TypeError, match="no option"):
        build_model("transformer_xl", V, n_layers=3)


def test_rel_shift_aligns_distances():
    Q, K = 4, 7
    x = torch.randn(2, Q, K)
    out = rel_shift(x)
    for t in range(Q):
        for j in range(K - Q + t + 1):  # valid entries; the rest are masked by the model
            assert out[1, t, j] == x[1, t, j + Q - 1 - t]


def test_sinusoid_formula():
    d = torch.tensor([0.0, 3.0, 10.0])
    e = sinusoid(d, 6)
    for i in range(3):
        f = 10000 ** (-2 * i / 6)
        torch.testing.assert_close(e[:, i], torch.sin(d * f))
        torch.testing.assert_close(e[:, 3 + i], torch.cos(d * f))


def reference_layer_attention(attn, x, mem, u, v):
    """Dai et al. eq. (the relative score), one query and one key at a time, with explicit distances."""
    B, L, D = x.shape
    M = mem.shape[1]
    H, dh = attn.n_head, attn.d_head
    cat = torch.cat([mem, x], dim=1)
    q, k, val = attn.qkv(cat).chunk(3, dim=-1)
    q, k, val = q.view(B, M + L, H, dh)[:, M:], k.view(B, M + L, H, dh), val.view(B, M + L, H, dh)
    out = torch.zeros(B, L, H, dh, dtype=x.dtype)
    for t in range(L):
        scores = []
        for j in range(M + t + 1):  # keys up to and including the query's own position
            r = attn.r_net(sinusoid(torch.tensor([float(M + t - j)], dtype=x.dtype), D)).view(H, dh)
            scores.append(((q[:, t] + u) * k[:, j]).sum(-1) + ((q[:, t] + v) * r).sum(-1))  # (B, H)
        p = (torch.stack(scores, -1) / math.sqrt(dh)).softmax(-1)  # (B, H, M + t + 1)
        out[:, t] = torch.einsum("bhj,bjhd->bhd", p, val[:, : M + t + 1])
    return attn.norm(x + attn.out(out.reshape(B, L, H * dh)))


@pytest.mark.parametrize("M", [0, 5])
def test_relative_attention_matches_the_per_position_reference(M):
    m = small(init_std=0.3).double().eval()
    attn = m.layers[0].attn
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, S, 16, generator=g, dtype=torch.float64)
    mem = torch.randn(2, M, 16, generator=g, dtype=torch.float64)
    K = M + S
    pos = sinusoid(torch.arange(K - 1, -1, -1.0, dtype=torch.float64), 16)
    mask = torch.ones(S, K, dtype=torch.bool).triu(M + 1)
    fast = attn(x, mem, pos, m.r_w_bias, m.r_r_bias, mask)
    slow = reference_layer_attention(attn, x, mem, m.r_w_bias, m.r_r_bias)
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("t", [0, 3, S - 2])
def test_causal(t):
    m = small(init_std=0.3)
    assert causality_violation(m, V, S, t=t) == 0.0
    m2 = small(init_std=0.3, mem_len=S)
    assert causality_violation(m2, V, 2 * S, t=S + t) == 0.0  # a long pass over the memory span, too


def test_memory_equals_one_long_pass_within_the_attention_span():
    """Two segments of S with mem_len >= S give the logits of a single pass over the 2S tokens."""
    full_model = small(init_std=0.3, mem_len=S).eval()
    idx = random_ids(V, 3, 2 * S)
    full = full_model(idx)  # (B, 2S, V), no memory
    for mem_len in (S, S + 3):
        m = small(init_std=0.3, mem_len=mem_len).eval()
        m.load_state_dict(full_model.state_dict())
        first, mems = m.forward_with_state(idx[:, :S], None)
        second, _ = m.forward_with_state(idx[:, S:], mems)
        torch.testing.assert_close(first, full[:, :S], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(second, full[:, S:], rtol=1e-5, atol=1e-5)
    # a memory shorter than the segment loses context, and no memory loses all of it: both differ
    short = small(init_std=0.3, mem_len=S // 2).eval()
    short.load_state_dict(full_model.state_dict())
    _, mems = short.forward_with_state(idx[:, :S], None)
    assert (short.forward_with_state(idx[:, S:], mems)[0] - full[:, S:]).abs().max() > 1e-3
    assert (full_model(idx[:, S:]) - full[:, S:]).abs().max() > 1e-3


def test_loss_on_a_later_segment_sends_no_gradient_into_the_memory():
    m = small(dropout=0.0)
    idx = random_ids(V, 3, 2 * S)
    _, mems = m.forward_with_state(idx[:, :S], None)
    logits, _ = m.forward_with_state(idx[:, S:], mems)
    F.cross_entropy(logits.flatten(0, 1), random_ids(V, 3, S, seed=9).flatten()).backward()
    assert all(x.grad is None and not x.requires_grad for x in mems)


def test_parameter_count_at_paper_settings():
    # per layer: q, k, v, W_r, output projections (5 D H dh, no biases), feed-forward with biases, two LayerNorms;
    # u and v shared by all layers; tied embedding/softmax weight plus the softmax bias
    D, H, dh, Di, n = 410, 10, 41, 2100, 8
    per_layer = 5 * D * H * dh + 2 * D * Di + Di + D + 2 * 2 * D
    for vocab, expected in ((10000, 24_644_020), (33278, 34_211_278)):
        assert n * per_layer + 2 * H * dh + vocab * D + vocab == expected
        assert build_model("transformer_xl", vocab).num_params() == expected
    assert build_model("transformer_xl", 10000, tie_weights=False).num_params() == 24_644_020 + 10000 * D


def test_cost_accounting():
    m = small()
    assert m.flops_per_token() > 2 * 16 * V
    # keys and values (H * d_head = 2 * 8) of mem_len = S positions in each of 2 layers, fp32
    assert m.state_bytes_per_sequence() == 2 * S * 2 * (2 * 8) * 4
