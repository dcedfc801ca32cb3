"""The old import path of the decoder's dispatch, kept for sdgm/published/gpu_window.py (which imports resolve_impl
from here) until it imports from sdgm.spectral.ops; the op itself lives in dispatch.py and the files beside it."""
from .dispatch import resolve_impl

__all__ = ["resolve_impl"]
