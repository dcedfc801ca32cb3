"""Test-session setup shared by every test file."""
import os

# Triton reads this when it is imported: without a GPU its kernels then run on CPU tensors, so the fused spectral
# decoder's kernels are tested here too (tests/test_spectral_op.py). Nothing else in the project uses Triton, and
# decoder "auto" never picks Triton on a CPU.
os.environ.setdefault("TRITON_INTERPRET", "1")
