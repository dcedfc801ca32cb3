"""The experiment matrix from a validated configuration (no torch import: Snakemake parses with this).

The JSON schema (workflow/schemas/config.schema.yaml) checks each value; `check_config` checks what a schema
cannot: that names refer to things that exist. `validate_schema` is stricter than a plain JSON-schema validator
(the one Snakemake's validate() uses), and check_config runs it too: an integer field refuses 64.0 (YAML reads it
as a float, which would reach the trainer as one), and a number must be finite (YAML has .nan and .inf).
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import NamedTuple

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


class Run(NamedTuple):
    corpus: str
    experiment: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.experiment}-s{self.seed}"


@functools.cache
def _validator():
    import jsonschema

    def is_int(_, v):
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(_, v):
        return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and math.isfinite(v))

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine_many({"integer": is_int, "number": is_number})
    strict = jsonschema.validators.extend(base, type_checker=checker)
    return strict(yaml.safe_load(SCHEMA_PATH.read_text()))


def validate_schema(config: dict) -> None:
    """The schema check Snakemake's validate() runs, stricter (see above). Raises ConfigError naming the field."""
    errors = sorted(_validator().iter_errors(config), key=lambda e: [str(p) for p in e.path])
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(f"invalid config at {where}: {e.message}")


# Relations between a model's options that the schema cannot express; the model's config dataclass refuses them
# too, but only when its job starts. (model, width, heads): width must be divisible by heads. The schema requires
# these options in the model's `models:` section, so the merged options hold both whenever the section exists.
DIVISIBLE_OPTIONS = [("gpt2", "n_embd", "n_head"), ("linformer", "d_model", "n_head"),
                     ("linformer_noncausal", "d_model", "n_head")]


def check_model_options(config: dict, name: str) -> None:
    """The options experiment `name` builds its model with (defaults merged with its overrides) fit together."""
    exp = config["experiments"][name]
    options = experiment_spec(config, name)["model_overrides"]

    def where(key: str) -> str:
        return f"experiments.{name}.overrides.{key}" if key in exp.get("overrides", {}) else f"models.{exp['model']}.{key}"

    for model, width, heads in DIVISIBLE_OPTIONS:
        if exp["model"] == model and width in options and heads in options and options[width] % options[heads]:
            raise ConfigError(f"{where(width)}: {options[width]} is not divisible by {heads} = {options[heads]} "
                              f"({where(heads)})")
    if exp["model"] == "lstm" and options.get("tie_weights") and "d_embed" in options and "d_hidden" in options \
            and options["d_embed"] != options["d_hidden"]:
        raise ConfigError(f"{where('tie_weights')}: tied weights need d_embed == d_hidden, got "
                          f"{options.get('d_embed')} ({where('d_embed')}) and {options.get('d_hidden')}")


def check_config(config: dict) -> None:
    validate_schema(config)
    corpora = set(config["corpora"])
    for name, exp in config["experiments"].items():
        for c in exp.get("corpora", []):
            if c not in corpora:
                raise ConfigError(f"experiments.{name}.corpora: unknown corpus {c!r}; defined: {sorted(corpora)}")
        if "seq_len" in exp.get("train", {}):
            raise ConfigError(f"experiments.{name}.train.seq_len: the context length L is shared by every model "
                              f"(set train.seq_len instead)")
        merged = {**config["train"], **exp.get("train", {})}
        if merged.get("train_seq_len", 0) > merged["seq_len"]:
            where = f"experiments.{name}.train" if "train_seq_len" in exp.get("train", {}) else "train"
            raise ConfigError(f"{where}.train_seq_len: {merged['train_seq_len']} exceeds the context length "
                              f"train.seq_len = {merged['seq_len']}")
        check_model_options(config, name)
    for name in config["gmm"]["experiments"]:
        if name not in config["experiments"]:
            raise ConfigError(f"gmm.experiments: unknown experiment {name!r}; defined: {sorted(config['experiments'])}")
        if config["experiments"][name]["model"] != "sdgm":
            raise ConfigError(f"gmm.experiments: {name!r} is not an SDGM experiment (no mixing vectors)")
    check_processes(config)
    if not runs(config):
        raise ConfigError("the configuration selects no runs")
    sc = config["benchmark"]["scaling"]
    if sc["tokens_per_batch"] < max(sc["lengths"]):
        raise ConfigError(f"benchmark.scaling.tokens_per_batch {sc['tokens_per_batch']} is below the longest length "
                          f"{max(sc['lengths'])}: that batch would hold no sequence")
    if sc["d_model"] % sc["n_heads"]:
        raise ConfigError(f"benchmark.scaling.d_model {sc['d_model']} is not divisible by n_heads {sc['n_heads']}")


def train_gpus(config: dict) -> int:
    """GPUs of one training job: job_resources.train.gpu, else job_resources.default.gpu, else 0."""
    table = config["job_resources"]
    return table.get("train", {}).get("gpu", table["default"].get("gpu")) or 0


def train_processes(config: dict) -> int:
    """Processes of one training job: job_resources.train.processes; when not set, the job's GPU count if it is
    above 1, else 1."""
    processes = config["job_resources"].get("train", {}).get("processes")
    if processes is not None:
        return processes
    return max(1, train_gpus(config))


def check_processes(config: dict) -> None:
    """A training job's GPUs and processes agree (one GPU each), and every global batch splits into equal shares."""
    n, gpus = train_processes(config), train_gpus(config)
    if gpus and gpus != n:
        raise ConfigError(f"job_resources.train.processes: {n} training process(es) with job_resources.train.gpu = "
                          f"{gpus}: each process uses one GPU, so the two must be equal (or processes left out)")
    if n == 1:
        return
    for name, exp in config["experiments"].items():
        own = exp.get("train", {})
        merged = {**config["train"], **own}

        def where(key: str) -> str:
            return f"experiments.{name}.train.{key}" if key in own else f"train.{key}"

        if merged["batch_size"] % n:
            raise ConfigError(f"{where('batch_size')}: {merged['batch_size']} is not divisible by the {n} training "
                              f"processes (job_resources.train.processes): each process takes an equal share of the "
                              f"batch")
        if merged.get("device", "auto").startswith("cuda:"):
            raise ConfigError(f"{where('device')}: {merged['device']!r} names one GPU, but each of the {n} training "
                              f"processes (job_resources.train.processes) uses its own: use auto or cuda")


def runs(config: dict) -> list[Run]:
    out = []
    for name, exp in config["experiments"].items():
        for corpus in exp.get("corpora", list(config["corpora"])):
            out.extend(Run(corpus, name, seed) for seed in config["seeds"])
    return out


def experiment_spec(config: dict, experiment: str) -> dict:
    """What the train job needs: model name, its options (defaults + overrides), and the training config
    (the global `train:` with the experiment's own `train:` merged over it, key by key)."""
    exp = config["experiments"][experiment]
    model = exp["model"]
    options = {**config["models"].get(model, {}), **exp.get("overrides", {})}
    return {"model": model, "model_overrides": options, "train": {**config["train"], **exp.get("train", {})}}
