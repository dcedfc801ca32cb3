"""Baselines: shapes, gradients, parameter and cost accounting, the causal Linformer against a per-query reference,
and saving/loading through the registry."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import random_ids

from baselines.linformer import attention_reference
from sdgm.models.registry import build_model, load_run, save_run

REPO = Path(__file__).resolve().parents[1]
V, L = 50, 24
SMALL = {
    "gpt2": {"n_layer": 2, "n_embd": 32, "n_head": 4},
    "linformer": {"d_model": 32, "n_layer": 2, "n_head": 4, "k": 6, "block_size": 5},
    "linformer_noncausal": {"d_model": 32, "n_layer": 2, "n_head": 4, "k": 6},
}


def small(name, seed=0, **kw):
    torch.manual_seed(seed)
    return build_model(name, V, seq_len=L, **{**SMALL[name], **kw})


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_backward_shapes(name):
    m = small(name)
    assert m(random_ids(V, 3, L)).shape == (3, L, V)
    assert m(random_ids(V, 3, 7)).shape == (3, 7, V)  # shorter windows work (last evaluation window)
    assert m.max_context == L
    loss, stats = m.training_loss(random_ids(V, 3, L), random_ids(V, 3, L, seed=2))
    assert loss.ndim == 0 and torch.isfinite(loss) and set(stats) == {"nll"}
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing


@pytest.mark.parametrize("name", sorted(SMALL))
def test_too_long_sequence_is_refused(name):
    with pytest.raises(ValueError, match="exceeds seq_len"):
        small(name)(random_ids(V, 3, L + 1))


@pytest.mark.parametrize(
    "name,bad,match",
    [
        ("gpt2", {"n_head": 5}, "divisible"),
        ("gpt2", {"dropout": 1.0}, "dropout"),
        ("gpt2", {"n_layer": 0}, "n_layer"),
        ("linformer", {"k": 0}, "k must be positive"),
        ("linformer", {"block_size": 0}, "block_size"),
        ("linformer", {"n_head": 3}, "divisible"),
        ("linformer_noncausal", {"k": -1}, "k must be positive"),
    ],
)
def test_config_rejects_bad_values(name, bad, match):
    with pytest.raises(ValueError, match=match):
        small(name, **bad)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_unknown_option_is_refused(name):
    with pytest.raises(TypeError, match="no option"):
        small(name, n_atoms=8)


def test_importing_the_registry_loads_no_baseline_library():
    code = "import sys, sdgm.models.registry; print(sorted({'transformers', 'linformer'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def layer_params(D):
    # two LayerNorms, q/k/v + output projection, MLP D -> 4D -> D (weights and biases)
    return 12 * D * D + 13 * D


def test_gpt2_is_transformers_gpt2_with_our_vocabulary_and_context():
    from transformers import GPT2LMHeadModel

    m = small("gpt2")
    assert isinstance(m.gpt, GPT2LMHeadModel)
    hf = m.gpt.config
    assert (hf.vocab_size, hf.n_positions, hf.n_embd, hf.n_layer, hf.n_head) == (V, L, 32, 2, 4)
    assert hf._attn_implementation == "sdpa"
    assert hf.resid_pdrop == hf.embd_pdrop == hf.attn_pdrop == 0.1
    assert m.gpt.lm_head.weight is m.gpt.transformer.wte.weight
    D = 32
    assert m.num_params() == 2 * layer_params(D) + V * D + L * D + 2 * D  # + final LayerNorm
    untied = small("gpt2", tie_weights=False)
    assert untied.gpt.lm_head.weight is not untied.gpt.transformer.wte.weight
    assert untied.num_params() == m.num_params() + V * D  # GPT-2's head has no bias


def test_gpt2_cost_accounting():
    m = small("gpt2")
    D = 32
    assert m.flops_per_token() == 2 * (24 * D * D + 4 * L * D) + 2 * D * V
    assert m.state_bytes_per_sequence() == 2 * 2 * L * D * 4


def test_causal_linformer_differs_from_gpt2_only_by_its_projections():
    m = small("linformer")
    D, k, rows = 32, 6, 25  # E, F cover whole blocks: ceil(24 / 5) * 5 rows
    assert m.num_params() == 2 * (layer_params(D) + 2 * rows * k) + V * D + L * D + 2 * D
    assert small("linformer", share_kv=True).num_params() == m.num_params() - 2 * rows * k
    assert m.lm_head.weight is m.wte.weight
    assert m.flops_per_token() == 2 * (24 * D * D + 4 * k * D + 4 * (k + 5) * D) + 2 * D * V
    assert m.state_bytes_per_sequence() == 2 * 2 * (k + 5) * D * 4


@pytest.mark.parametrize(
    "n,block_size,k,share_kv",
    [
        (24, 5, 6, False),
        (13, 5, 6, True),
        (3, 5, 6, False),  # partial last block; a window inside one block
        (24, 32, 4, False),  # one block: plain causal attention
        (24, 1, 3, False),  # blocks of one token: the projected prefix plus the token itself
        (24, 8, 16, False),  # k larger than a block
    ],
)
def test_causal_linformer_attention_matches_reference(n, block_size, k, share_kv):
    m = small("linformer", n_layer=1, block_size=block_size, k=k, share_kv=share_kv).eval()
    att = m.blocks[0].attn
    x = torch.randn(2, n, 32, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(att(x).double(), attention_reference(att, x), rtol=1e-5, atol=1e-5)


def test_noncausal_linformer_is_the_package_model():
    from linformer import LinformerLM

    m = small("linformer_noncausal").eval()
    assert isinstance(m.lm, LinformerLM) and m.causal is False
    assert m.lm.linformer.net.layers[0][0].fn.k == 6
    torch.testing.assert_close(m(random_ids(V, 3, L)), m.lm(random_ids(V, 3, L)))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_save_and_load_roundtrip(name, tmp_path):
    m = small(name).eval()
    save_run(tmp_path, name, m, [f"w{i}" for i in range(V)])
    back, vocab = load_run(tmp_path)
    assert type(back) is type(m) and len(vocab) == V
    torch.testing.assert_close(back(random_ids(V, 3, L)), m(random_ids(V, 3, L)), rtol=0, atol=0)
