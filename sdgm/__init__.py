"""sdgm-bench: the Spectral Dictionary Generative Model and the harness that benchmarks it.

`build_model` and `load_run` are imported lazily, so that light modules (sdgm.config, used by Snakemake while it
parses the workflow) do not pull in torch.
"""

import os as _os

__all__ = ["build_model", "load_run"]

# Tests run every workflow job with only its conda environment's packages importable (sdgm/importguard.py).
if _os.environ.get("SDGM_IMPORT_GUARD"):
    from .importguard import install as _install_import_guard

    _install_import_guard(_os.environ["SDGM_IMPORT_GUARD"])


def __getattr__(name):
    if name in __all__:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'sdgm' has no attribute {name!r}")
