"""sdgm-bench: the Spectral Dictionary Generative Model and the harness that benchmarks it, in parts, each
importing only parts listed before it (its docstring names which; tests/test_layout.py checks the directions):

    common      atomic writes, why a value is missing, schemas, timing, the workflow-script preamble, the import guard
    data        corpora: sources, content checks, tokenization
    reporting   every table, figure and page made from the records (no torch)
    models      the model contract and the catalog: interface, contract checks, catalog, registry
    spectral    SDGM itself: model, losses, GMM prior, spectral decoder ops, interpretability figures
    harness     what trains and evaluates any model: config, train, checkpoint, evaluate, experiment, generate, ...
    bench       the benchmarks
    published   the published store, campaigns and GPU windows

and the `sdgm` command (cli.py), whose subcommands run the parts' commands (`sdgm --help`).

`build_model` and `load_run` (sdgm.models.registry) are imported lazily, so that light modules (sdgm.harness.config,
used by Snakemake while it parses the workflow) do not pull in torch.
"""

__all__ = ["build_model", "load_run"]


def __getattr__(name):
    if name in __all__:
        from .models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'sdgm' has no attribute {name!r}")
