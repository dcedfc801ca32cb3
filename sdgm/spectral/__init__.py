"""SDGM itself, the Spectral Dictionary Generative Model: the model (model), its loss terms (losses), the Gaussian-
mixture prior over its mixing vectors (gmm), the spectral decoder (ops: one file per algorithm, naive, chunked, the
rotation on a CPU and in Triton, and the choice among them) and the interpretability figures of a trained run
(figures). It imports sdgm.common, sdgm.data, sdgm.models and, for the figures' file formats, sdgm.reporting; never
the harness that trains it.
"""
