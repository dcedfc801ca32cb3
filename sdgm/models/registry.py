"""Every model by name, behind one constructor; and loading a finished run back.

model = build_model("sdgm", vocab_size, seq_len=128, d_model=64, n_atoms=32)
model, vocab = load_run("results/runs/ptb/sdgm-s0-<hash>")   # vocab: token -> id
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from .catalog import MODELS, classes
from .interface import LanguageModel

__all__ = ["MODELS", "build_model", "load_run", "model_classes", "model_config", "model_options", "save_run"]


def model_classes(name: str):
    """(config dataclass, model class) of a model, built in or from an installed package (sdgm.models.catalog)."""
    return classes(name)


def model_options(name: str, options: dict, seq_len: int | None) -> dict:
    """The options model `name` is built with: `options`, and the shared context length (train.seq_len) as
    seq_len where the model's config dataclass has that field (a model without one takes any length). An option
    seq_len of its own (a plug-in's config may set it) must equal the shared one."""
    options = dict(options)
    if seq_len is None or "seq_len" not in {f.name for f in dataclasses.fields(model_classes(name)[0])}:
        return options
    if options.get("seq_len", seq_len) != seq_len:
        raise ValueError(f"model seq_len {options['seq_len']} differs from the shared context length {seq_len}")
    return {"seq_len": seq_len, **options}


def model_config(name: str, vocab_size: int, seq_len: int | None = None, **overrides):
    """The config dataclass of model `name`: `overrides` are its fields; seq_len as model_options puts it."""
    cfg_cls, _ = model_classes(name)
    overrides = model_options(name, overrides, seq_len)
    known = {f.name for f in dataclasses.fields(cfg_cls)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"model {name!r} has no option(s) {unknown}; options: {sorted(known)}")
    return cfg_cls(vocab_size=vocab_size, **overrides)


def build_model(name: str, vocab_size: int, seq_len: int | None = None, **overrides) -> LanguageModel:
    """A freshly initialised model; `overrides` are fields of the model's config dataclass, and `seq_len`, the
    context length, is set where that dataclass has the field (model_options)."""
    cfg = model_config(name, vocab_size, seq_len, **overrides)
    _, cls = model_classes(name)
    return cls(cfg)


# ---- run directories ------------------------------------------------------------------------------------------
RUN_FILE, WEIGHTS_FILE, VOCAB_FILE = "run.json", "model.pt", "vocab.json"


def save_run(path: str | Path, name: str, model: LanguageModel, vocab: list[str], extra: dict | None = None) -> None:
    """Write what load_run needs: model.pt (weights), vocab.json (id -> token) and, last, run.json (model name,
    config and the SHA-256 of the weights file, so that load_run and the tables know the run's own weights)."""
    import hashlib
    import io

    from ..common.atomic import write_bytes_atomic, write_json_atomic

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    weights = buf.getvalue()
    write_bytes_atomic(path / WEIGHTS_FILE, weights)
    write_json_atomic(path / VOCAB_FILE, vocab)
    cfg = dataclasses.asdict(model.cfg)
    write_json_atomic(
        path / RUN_FILE,
        {"model": name, "config": cfg, **(extra or {}), "weights_sha256": hashlib.sha256(weights).hexdigest()},
    )


def weights_sha256(path: str | Path) -> str:
    """SHA-256 of a weights file, as save_run records it in run.json."""
    from ..common.atomic import sha256_file

    return sha256_file(path)


def load_run(path: str | Path, map_location: str = "cpu") -> tuple[LanguageModel, dict[str, int]]:
    """(model in eval mode, vocab token -> id) from a finished run directory."""
    path = Path(path)
    for f in (RUN_FILE, WEIGHTS_FILE, VOCAB_FILE):
        if not (path / f).exists():
            raise FileNotFoundError(f"{path} is not a finished run directory: {f} is missing")
    from ..common.atomic import read_json
    from ..data.tokens import vocab_sha256

    meta = read_json(path / RUN_FILE, "the run's configuration", ValueError)
    vocab_list = read_json(path / VOCAB_FILE, "the run's vocabulary", ValueError)
    if not isinstance(vocab_list, list) or not all(isinstance(t, str) for t in vocab_list):
        raise ValueError(f"{path / VOCAB_FILE} is not a JSON list of strings")
    cfg = dict(meta["config"])
    vocab_size = cfg.pop("vocab_size")
    if vocab_size != len(vocab_list):
        raise ValueError(f"{path}: model vocab_size {vocab_size} != {len(vocab_list)} tokens in {VOCAB_FILE}")
    if "vocab_sha256" in meta and meta["vocab_sha256"] != vocab_sha256(vocab_list):
        raise ValueError(
            f"{path / VOCAB_FILE} is not the vocabulary the model was trained with "
            f"(its digest differs from the one in {RUN_FILE})"
        )
    if "weights_sha256" in meta and meta["weights_sha256"] != weights_sha256(path / WEIGHTS_FILE):
        raise ValueError(
            f"{path / WEIGHTS_FILE} is not this run's weights: its SHA-256 differs from the one in "
            f"{path / RUN_FILE} (replaced or altered after training; train the run again)"
        )
    model = build_model(meta["model"], vocab_size, **cfg)
    try:
        state = torch.load(path / WEIGHTS_FILE, map_location=map_location, weights_only=True)
        model.load_state_dict(state)
    except Exception as e:
        raise ValueError(
            f"{path / WEIGHTS_FILE} does not hold the weights of the model in {RUN_FILE} "
            f"({type(e).__name__}: {str(e)[:300]})"
        ) from e
    model.eval()
    return model, {tok: i for i, tok in enumerate(vocab_list)}
