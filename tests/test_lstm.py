"""LSTM baseline: shapes, causality, carried state, and the parameter count of the PyTorch example's RNNModel."""

import pytest
import torch
from helpers import random_ids

from baselines.lstm import LSTMConfig
from sdgm.models.contract import causality_violation
from sdgm.models.registry import build_model

V, L = 50, 12


def small(**kw):
    torch.manual_seed(0)
    return build_model("lstm", V, **{"seq_len": L, "d_embed": 16, "d_hidden": 16, **kw})


def test_shapes_and_every_parameter_gets_a_gradient():
    m = small()
    assert m(random_ids(V, 3, L)).shape == (3, L, V)
    assert m(random_ids(V, 3, 40)).shape == (3, 40, V)  # a recurrent model takes any length
    logits, (h, c) = m.forward_with_state(random_ids(V, 3, L), None)
    assert logits.shape == (3, L, V) and h.shape == c.shape == (2, 3, 16)
    loss, stats = m.training_loss(random_ids(V, 3, L), random_ids(V, 3, L, seed=2))
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert m.stateful and set(stats) == {"nll"}


@pytest.mark.parametrize("t", [0, 5, L - 2])
def test_causal(t):
    assert causality_violation(small(), V, L, t=t) == 0.0


def test_carried_state_equals_one_long_pass():
    m = small().eval()
    idx = random_ids(V, 3, 3 * L)
    full = m(idx)
    state, parts = None, []
    for i in range(3):
        logits, state = m.forward_with_state(idx[:, i * L : (i + 1) * L], state)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-5, atol=1e-5)
    assert (m(idx[:, L : 2 * L]) - full[:, L : 2 * L]).abs().max() > 1e-4  # without the state it differs


def test_initialisation_follows_the_example():
    m = build_model("lstm", 1000)
    for w in (m.embed.weight, m.decoder.weight):
        assert w.abs().max() <= 0.1 and w.std() > 0.05  # U(-0.1, 0.1)
    assert torch.count_nonzero(m.decoder.bias) == 0


def test_parameter_count_equals_the_pytorch_example():
    # word_language_model RNNModel('LSTM', ntoken, 200, 200, 2, tie_weights=False): Embedding(V, 200);
    # nn.LSTM(200, 200, 2) = per layer 4H (in + H) weights + two 4H biases; Linear(200, V) with bias.
    assert build_model("lstm", 10000).num_params() == 4_653_200  # PTB
    assert build_model("lstm", 33278).num_params() == 13_987_678  # WikiText-2
    assert build_model("lstm", 10000, tie_weights=True).num_params() == 2_653_200  # --tied: decoder bias only
    assert (
        build_model("lstm", 10000, n_layers=1, d_hidden=100).num_params()
        == 10000 * 200 + 4 * 100 * (200 + 100) + 8 * 100 + 100 * 10000 + 10000
    )


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="tie_weights"):
        LSTMConfig(d_embed=200, d_hidden=100, tie_weights=True)
    with pytest.raises(ValueError, match="n_layers"):
        LSTMConfig(n_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        LSTMConfig(dropout=1.0)


def test_cost_accounting():
    m = small()
    assert m.state_bytes_per_sequence() == 2 * 2 * 16 * 4
    assert m.flops_per_token() > 2 * 16 * V
