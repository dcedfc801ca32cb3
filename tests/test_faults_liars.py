"""Round 3 of the fault tests: records and models that lie (what each case was and is: docs/faults.md).

The misbehaving models are plug-ins (tests/liars/liars.py), installed nowhere: the folder and a distribution's metadata
in a temporary folder go on sys.path, which is all the entry-point lookup reads.
"""
import math

import numpy as np
import pytest
import torch

from sdgm.data.tokens import load_tokens, tokenize_corpus
from sdgm.harness.evaluate import evaluate, evaluate_streams
from sdgm.harness.experiment import run_training
from sdgm.models import catalog
from sdgm.models.contract import ContractError, causal_audit, check_forward
from sdgm.models.registry import build_model
from pathlib import Path

LIARS = Path(__file__).resolve().parent / "liars"
PLUGINS = {"peek_frequent": "PeekFrequent", "rewrites_input": "RewritesInput", "wrong_width": "WrongWidth",
           "integer_logits": "IntegerLogits", "nan_logits": "NaNLogits", "bigram": "Bigram"}
N_WORDS = 2000
TRAIN = {"seq_len": 16, "batch_size": 8, "max_steps": 4, "lr": 1e-2, "device": "cpu", "log_every_steps": 2}


@pytest.fixture
def liars(tmp_path, monkeypatch):
    """The models of tests/liars/liars.py registered under PLUGINS' names by a distribution in tmp_path."""
    info = tmp_path / "site" / "sdgm_bench_liars-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: sdgm-bench-liars\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{catalog.GROUP}]\n" + "".join(f"{k} = liars:{v}\n"
                                                                             for k, v in PLUGINS.items()))
    monkeypatch.syspath_prepend(str(LIARS))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))


@pytest.fixture(scope="module")
def zipf_tokens(tmp_path_factory):
    """A corpus of N_WORDS words drawn by Zipf's law (12 a line); its first line lists the words by rank, so a word's
    id is its rank: ids below 20 are the 20 most frequent. Returns the tokens directory."""
    root = tmp_path_factory.mktemp("zipf")
    words = np.array([f"w{i}" for i in range(N_WORDS)])
    p = 1.0 / np.arange(1, N_WORDS + 1)
    rng = np.random.default_rng(0)
    for split, n in (("train", 1500), ("valid", 120), ("test", 120)):
        lines = [" ".join(rng.choice(words, 12, p=p / p.sum())) for _ in range(n)]
        if split == "train":
            lines.insert(0, " ".join(words))
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    tokenize_corpus(root, root / "tokens")
    return root / "tokens"


def train(tokens, tmp_path, model, **opts):
    return run_training(tokens, tmp_path / "run", tmp_path / "ck", tmp_path / "run" / "metrics.json", corpus="zipf",
                        experiment=model, model=model, model_overrides=opts, seed=0, progress=False,
                        train_overrides=TRAIN)


# ---- A. the causality audit and the evaluation cannot be fooled --------------------------------------------------
def test_audit_catches_a_model_that_peeks_at_frequent_tokens_only(liars, zipf_tokens, tmp_path):
    """Was: random ids rarely hold one of the 20 most frequent of 2001 ids, so the peek passed and was published as
    causal. Now the audit reads the validation text and puts frequent ids after the cut."""
    valid = load_tokens(zipf_tokens)[0]["valid"]
    torch.manual_seed(0)
    m = build_model("peek_frequent", N_WORDS + 1)
    assert not causal_audit(m, N_WORDS + 1, 16, text=valid)["passed"]
    rec = train(zipf_tokens, tmp_path, "peek_frequent")
    audit = rec["metrics"]["causal_audit"]
    assert audit["declared_causal"] and not audit["passed"] and audit["max_logit_change"] > 1e-2, audit
    assert audit["text"] == "given text" and audit["modes"] == ["eval", "train"]


def test_audit_catches_a_rare_token_peek_too(liars, zipf_tokens):
    """The other way round: a peek at the rare ids only (every id from 20 on) is caught as well."""
    valid = load_tokens(zipf_tokens)[0]["valid"]
    torch.manual_seed(0)
    m = build_model("peek_frequent", N_WORDS + 1, peek_from=20, peek_below=N_WORDS + 1)
    assert not causal_audit(m, N_WORDS + 1, 16, text=valid)["passed"]
    causal = build_model("bigram", N_WORDS + 1)
    audit = causal_audit(causal, N_WORDS + 1, 16, text=valid)
    assert audit["passed"] and audit["max_logit_change"] == 0.0


def test_a_model_that_rewrites_its_input_is_refused_not_scored(liars, zipf_tokens, tmp_path):
    """Was: the stateful evaluation took its targets from the tensor the model rewrote, so a model that set the rare
    ids to 0 scored against mostly-0 targets. Now the model gets a copy, and a rewrite is refused in one line."""
    valid = load_tokens(zipf_tokens)[0]["valid"]
    torch.manual_seed(0)
    m = build_model("rewrites_input", N_WORDS + 1, rare_from=20)
    with pytest.raises(ContractError, match=r"^evaluation of RewritesInput: the model changed its input tokens in "
                                            r"place \(\d+ of \d+ ids\); forward must not modify idx$"):
        evaluate_streams(m, valid, 16, batch_size=4)
    with pytest.raises(ContractError, match="changed its input tokens in place"):
        train(zipf_tokens, tmp_path, "rewrites_input", rare_from=20)
    assert not (tmp_path / "run" / "metrics.json").exists()


@pytest.mark.parametrize("extra", [3, -1])
def test_logits_of_the_wrong_width_are_refused_before_training(liars, zipf_tokens, tmp_path, extra):
    """Was: V + 3 trained and published; V - 1 ended in IndexError: Target 2000 is out of bounds."""
    V = N_WORDS + 1
    with pytest.raises(ContractError, match=rf"^model 'wrong_width': logits of shape \(1, 16, {V + extra}\), "
                                            rf"not \(B, L, V\) = \(1, 16, {V}\)$"):
        train(zipf_tokens, tmp_path, "wrong_width", extra=extra)
    assert not (tmp_path / "run" / "metrics.json").exists()
    m = build_model("wrong_width", V, extra=extra)
    with pytest.raises(ContractError, match=r"^evaluation of WrongWidth: logits of shape"):
        evaluate(m, load_tokens(zipf_tokens)[0]["valid"], 16)


@pytest.mark.parametrize("model,message", [
    ("integer_logits", r"logits of dtype torch.int64, not a floating-point type"),
    ("nan_logits", r"\d+ of \d+ logits are NaN or infinite"),
])
def test_logits_must_be_floating_and_finite(liars, model, message):
    m = build_model(model, 30)
    with pytest.raises(ContractError, match=rf"^model '{model}': {message}$"):
        check_forward(m, torch.zeros(2, 8, dtype=torch.long), 30, f"model {model!r}")
