"""Test-session setup and fixtures shared by several test files."""
import os

import numpy as np
import pytest

# Triton reads this when it is imported: without a GPU its kernels then run on CPU tensors, so the fused spectral
# decoder's kernels are tested here too (tests/test_spectral_op.py). Nothing else in the project uses Triton, and
# decoder "auto" never picks Triton on a CPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

from sdgm.data import tokenize_corpus  # noqa: E402


@pytest.fixture(scope="session")
def toy_tokens(tmp_path_factory):
    """Token files of a toy corpus (30 words, 8 a line; 400 training lines, 40 validation, 40 test) for tiny
    training runs; returns the tokens directory (read-only for the tests)."""
    root = tmp_path_factory.mktemp("toy_corpus")
    words = [f"w{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    for split, n in (("train", 400), ("valid", 40), ("test", 40)):
        (root / f"{split}.txt").write_text("\n".join(" ".join(rng.choice(words, 8)) for _ in range(n)) + "\n")
    tokenize_corpus(root, root / "tokens")
    return root / "tokens"
