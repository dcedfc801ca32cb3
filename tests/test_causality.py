"""Causality audit of every registered model: logits at positions <= t must not move when tokens after t change.

Fresh models at every cut position, models after a few optimizer steps, and the audit that run_training stores in
metrics.json. Models that see later tokens on purpose must be caught, and must say so (`causal = False`).
"""

import pytest
import torch
from helpers import SMALL as SMALL_MODELS
from helpers import take_optimizer_steps, train_tiny

from sdgm.models.contract import CAUSAL_TOLERANCE, causal_audit, causality_violation
from sdgm.models.registry import MODELS, build_model

V, L = 50, 24

# Small options per registered model; a model without an entry is audited at its default size.
SMALL = {**SMALL_MODELS, "transformer_xl": {**SMALL_MODELS["transformer_xl"], "mem_len": 12}}
# Registered models that see later tokens by construction (kept to measure what leaking does).
KNOWN_LEAKS = {"linformer_noncausal"}

CASES = [(name, SMALL.get(name, {}), name in KNOWN_LEAKS) for name in sorted(MODELS)]
CASES.append(("sdgm", {**SMALL["sdgm"], "encoder_padding": "centered"}, True))
IDS = [name + ("-centered" if opts.get("encoder_padding") == "centered" else "") for name, opts, _ in CASES]


def fresh(name, opts, seed=0):
    torch.manual_seed(seed)
    return build_model(name, V, seq_len=L, **opts)


def test_the_lists_above_name_registered_models():
    assert set(SMALL) <= set(MODELS) and KNOWN_LEAKS <= set(MODELS)


@pytest.mark.parametrize("name,opts,leaks", CASES, ids=IDS)
def test_fresh_model(name, opts, leaks):
    m = fresh(name, opts)
    assert m.causal is (not leaks)  # the capability flag tells the truth
    changes = [causality_violation(m, V, L, t=t) for t in range(L - 1)]  # every cut position
    if leaks:
        assert max(changes) > 1e-3, changes
    else:
        assert max(changes) <= CAUSAL_TOLERANCE, changes
    audit = causal_audit(m, V, L)
    assert audit["passed"] is (not leaks) and audit["declared_causal"] is (not leaks)


@pytest.mark.parametrize("name,opts,leaks", CASES, ids=IDS)
def test_trained_model(name, opts, leaks):
    """A few optimizer steps (dropout on, as in training) must not open a path to later tokens."""
    m = fresh(name, opts)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    take_optimizer_steps(m, V, L, steps=4, seed=1)
    assert any(not torch.equal(before[n], p) for n, p in m.named_parameters())  # it did train
    audit = causal_audit(m, V, L, seed=7)
    assert m.training  # the audit restores the mode it found
    assert audit["passed"] is (not leaks), audit
    if leaks:
        assert audit["max_logit_change"] > 1e-3


@pytest.mark.parametrize(
    "name,opts,leaks",
    [
        ("linformer", SMALL["linformer"], False),
        ("linformer_noncausal", SMALL["linformer_noncausal"], True),
        ("sdgm", {**SMALL["sdgm"], "encoder_padding": "centered"}, True),
    ],
)
def test_run_training_stores_the_audit_of_the_trained_model(toy_tokens, tmp_path, name, opts, leaks):
    rec = train_tiny(
        toy_tokens, tmp_path, name, "tiny", opts, seq_len=16, batch_size=8, max_steps=6, lr=1e-2, log_every_steps=2
    )
    audit = rec["metrics"]["causal_audit"]
    assert audit["passed"] is (not leaks) and audit["declared_causal"] is (not leaks)
    assert audit["tolerance"] == CAUSAL_TOLERANCE and audit["positions"] == list(range(15))
    if leaks:
        assert audit["max_logit_change"] > 1e-3
    else:
        assert audit["max_logit_change"] <= CAUSAL_TOLERANCE
