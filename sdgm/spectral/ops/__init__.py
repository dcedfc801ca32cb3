"""The spectral decoder's op, one file per algorithm: naive.py (the definition, the one reference), chunked.py (the
atoms recomputed block by block), rotation_cpu.py (the atoms advanced by rotation; its numba kernels in
rotation_cpu_kernels.py), rotation_triton.py (the fused Triton kernels launched; triton_mix.py and triton_params.py
hold them), stream.py (the atoms of incremental decoding), base.py (what they share) and dispatch.py (the backends
probed, the on-device check, the choice among them, spectral_decode and the cost model); kernel_check.py is the
check's child process."""

from .base import SpectralOpError
from .dispatch import IMPLEMENTATIONS, decoder_record, resolve_impl, spectral_decode
from .naive import naive_spectral_decode, spectral_atoms

__all__ = [
    "IMPLEMENTATIONS",
    "SpectralOpError",
    "decoder_record",
    "naive_spectral_decode",
    "resolve_impl",
    "spectral_atoms",
    "spectral_decode",
]
