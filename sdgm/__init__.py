"""sdgm-bench: the Spectral Dictionary Generative Model and the harness that benchmarks it.

`build_model` and `load_run` are imported lazily, so that light modules (sdgm.config, used by Snakemake while it
parses the workflow) do not pull in torch.
"""

__all__ = ["build_model", "load_run"]


def __getattr__(name):
    if name in __all__:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'sdgm' has no attribute {name!r}")
