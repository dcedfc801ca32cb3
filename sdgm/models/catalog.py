"""The models the benchmark knows, without importing them: where each lives and what it can do.

Two sources, one table: the built-in models below, and every installed package that registers models under the
entry-point group `sdgm_bench.models` (`name = "module:Class"`, where Class subclasses
sdgm.models.interface.LanguageModel and has a class attribute `Config`, its config dataclass; docs/adding-a-model.md).
Everything (config checks, build_model, load_run, the workflow) looks models up here, by `entry(name)`.

No torch here for the built-ins: the workflow checks a config against this table while Snakemake parses it
(sdgm.harness.config), in an environment that may hold Snakemake alone. A plug-in's capabilities are read from its
class, which imports it. A test checks every built-in declaration against the class it names.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as md
from dataclasses import dataclass

GROUP = "sdgm_bench.models"


class PluginError(Exception):
    """A package registers a model the benchmark cannot use; the message names the package."""


@dataclass(frozen=True)
class ModelEntry:
    module: str  # import path of the model's file
    cls: str  # its sdgm.models.interface.LanguageModel subclass
    config: str | None = None  # its config dataclass, by name (None: the class attribute `Config`)
    mixing_vectors: bool | None = False  # has mixing_vectors(idx) -> (B, L, K): GMM prior, atoms and GMM figures
    divisible: tuple[tuple[str, str], ...] = ()  # (width, heads) options: width must be divisible by heads
    tied_equal: tuple[str, str] | None = None  # with tie_weights, these two options must be equal
    package: str | None = None  # the installed distribution that registered it; None: built in


MODELS: dict[str, ModelEntry] = {  # the built-in models
    "sdgm": ModelEntry("sdgm.spectral.model", "SDGM", "SDGMConfig", mixing_vectors=True),
    "gpt2": ModelEntry("baselines.gpt2", "GPT2", "GPT2Options", divisible=(("n_embd", "n_head"),)),
    "linformer": ModelEntry("baselines.linformer", "Linformer", "LinformerConfig", divisible=(("d_model", "n_head"),)),
    "linformer_noncausal": ModelEntry(
        "baselines.linformer_noncausal",
        "LinformerNonCausal",
        "LinformerNonCausalConfig",
        divisible=(("d_model", "n_head"),),
    ),
    "transformer_xl": ModelEntry("baselines.transformer_xl", "TransformerXL", "TransformerXLConfig"),
    "lstm": ModelEntry("baselines.lstm", "LSTMLM", "LSTMConfig", tied_equal=("d_embed", "d_hidden")),
}


def plugins() -> dict[str, ModelEntry]:
    """The models installed packages register (read from their metadata; nothing is imported)."""
    out: dict[str, ModelEntry] = {}
    for ep in sorted(md.entry_points(group=GROUP), key=lambda e: e.name):
        package = ep.dist.name if ep.dist is not None else "an unnamed package"
        where = f"package {package!r} registers model {ep.name!r} ({GROUP}: {ep.name} = {ep.value!r})"
        if ep.name in MODELS:
            raise PluginError(
                f"{where}, but {ep.name!r} is a built-in model; give it another name in that package's entry points"
            )
        if ep.name in out:
            raise PluginError(
                f"{where}, but package {out[ep.name].package!r} registers {ep.name!r} too; uninstall one or rename it"
            )
        module, _, cls = ep.value.partition(":")
        if not module or not cls or " " in ep.value:
            raise PluginError(f"{where}: the entry must be 'module:Class'")
        out[ep.name] = ModelEntry(module.strip(), cls.strip(), mixing_vectors=None, package=package)
    return out


def models() -> dict[str, ModelEntry]:
    """Every model by name: the built-ins, then the installed plug-ins."""
    return {**MODELS, **plugins()}


def entry(name: str) -> ModelEntry:
    if name in MODELS:
        return MODELS[name]
    found = plugins()
    if name not in found:
        extra = (
            f"; from installed packages: {', '.join(found)}"
            if found
            else f" (installed packages may add models under the entry-point group {GROUP})"
        )
        raise KeyError(f"unknown model {name!r}; built in: {', '.join(MODELS)}{extra}")
    return found[name]


def classes(name: str):
    """(config dataclass, model class) of a model, imported now and checked against the contract."""
    from .interface import LanguageModel

    e = entry(name)
    origin = "built in" if e.package is None else f"from package {e.package!r}"
    try:
        cls = getattr(importlib.import_module(e.module), e.cls)
    except (ImportError, AttributeError) as err:
        raise PluginError(f"model {name!r} ({origin}): cannot import {e.module}:{e.cls} ({err})") from err
    if not (isinstance(cls, type) and issubclass(cls, LanguageModel)):
        raise PluginError(
            f"model {name!r} ({origin}): {e.module}:{e.cls} is not a subclass of sdgm.models.interface.LanguageModel"
        )
    cfg = getattr(importlib.import_module(e.module), e.config) if e.config else getattr(cls, "Config", None)
    if not (isinstance(cfg, type) and dataclasses.is_dataclass(cfg)):
        raise PluginError(
            f"model {name!r} ({origin}): {e.module}:{e.cls} has no class attribute `Config` holding "
            f"its config dataclass"
        )
    if "vocab_size" not in {f.name for f in dataclasses.fields(cfg)}:
        raise PluginError(f"model {name!r} ({origin}): its config dataclass {cfg.__name__} has no field vocab_size")
    return cfg, cls


def has_mixing_vectors(name: str) -> bool:
    e = entry(name)
    if e.mixing_vectors is not None:
        return e.mixing_vectors
    return callable(getattr(classes(name)[1], "mixing_vectors", None))


def options(name: str) -> set[str] | None:
    """The option names a plug-in model's config dataclass takes (besides vocab_size); None for a built-in model,
    whose options the config schema lists."""
    if entry(name).package is None:
        return None
    return {f.name for f in dataclasses.fields(classes(name)[0])} - {"vocab_size"}
