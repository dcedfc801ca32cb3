"""The models the benchmark knows, without importing them: where each lives and what it can do.

No torch here: the workflow checks a config against this table while Snakemake parses it (sdgm.config), in an
environment that may hold Snakemake alone. sdgm.registry builds the models from it, and a test checks every
declaration below against the class it names.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelEntry:
    module: str  # import path of the model's file
    config: str  # its config dataclass
    cls: str  # its sdgm.interface.LanguageModel subclass
    mixing_vectors: bool = False  # has mixing_vectors(idx) -> (B, L, K): GMM prior, atoms and GMM figures
    divisible: tuple[tuple[str, str], ...] = ()  # (width, heads) options: width must be divisible by heads
    tied_equal: tuple[str, str] | None = None  # with tie_weights, these two options must be equal


MODELS: dict[str, ModelEntry] = {
    "sdgm": ModelEntry("sdgm.model", "SDGMConfig", "SDGM", mixing_vectors=True),
    "gpt2": ModelEntry("baselines.gpt2", "GPT2Options", "GPT2", divisible=(("n_embd", "n_head"),)),
    "linformer": ModelEntry("baselines.linformer", "LinformerConfig", "Linformer", divisible=(("d_model", "n_head"),)),
    "linformer_noncausal": ModelEntry("baselines.linformer_noncausal", "LinformerNonCausalConfig", "LinformerNonCausal",
                                      divisible=(("d_model", "n_head"),)),
    "transformer_xl": ModelEntry("baselines.transformer_xl", "TransformerXLConfig", "TransformerXL"),
    "lstm": ModelEntry("baselines.lstm", "LSTMConfig", "LSTMLM", tied_equal=("d_embed", "d_hidden")),
}


def entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; registered models: {', '.join(sorted(MODELS))}")
    return MODELS[name]
