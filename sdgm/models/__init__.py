"""The model contract and the catalog of models: the interface every sequence model follows (interface), the checks
anyone can run on a model, its causality audit included (contract), every model by name, built in or registered by
an installed package under the entry-point group sdgm_bench.models, without importing it (catalog), and building a
model or loading a finished run by its name (registry: sdgm.build_model, sdgm.load_run). It imports sdgm.common and
sdgm.data (a run's vocabulary digest); the models themselves (sdgm.spectral, baselines/, plug-ins) are imported by
the name the catalog gives, never by an import statement here.
"""
