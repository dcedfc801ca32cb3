"""Test-session setup and the fixtures shared by several test files; plain helpers shared by them are in
helpers.py."""
import os

import pytest

# Triton reads this when it is imported: without a GPU its kernels then run on CPU tensors, so the fused spectral
# decoder's kernels are tested here too (tests/test_spectral_op.py). Nothing else in the project uses Triton, and
# decoder "auto" never picks Triton on a CPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

from helpers import write_grammar_corpus, write_toy_corpus  # noqa: E402
from sdgm.data import tokenize_corpus  # noqa: E402


# ---- shared fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def toy_tokens(tmp_path_factory):
    """Token files of a toy corpus (helpers.write_toy_corpus: 30 words, 8 a line; 400 training lines, 40
    validation, 40 test) for tiny training runs; returns the tokens directory (read-only for the tests)."""
    root = write_toy_corpus(tmp_path_factory.mktemp("toy_corpus"))
    tokenize_corpus(root, root / "tokens")
    return root / "tokens"


@pytest.fixture(scope="session")
def grammar_tokens(tmp_path_factory):
    """Token files of helpers.write_grammar_corpus (seed 0; 41 tokens with <eos>), a corpus a model learns from in
    a few dozen steps; returns the tokens directory (read-only for the tests)."""
    root = write_grammar_corpus(tmp_path_factory.mktemp("grammar_corpus"))
    tokenize_corpus(root, root / "tokens")
    return root / "tokens"
