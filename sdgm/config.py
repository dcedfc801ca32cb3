"""The experiment matrix from a validated configuration (no torch import: Snakemake parses with this).

The JSON schema (workflow/schemas/config.schema.yaml) checks each value; `check_config` checks what a schema
cannot: that names refer to things that exist.
"""
from __future__ import annotations

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


def validate_schema(config: dict) -> None:
    """The same check Snakemake's validate() runs, for use outside Snakemake. Raises ConfigError naming the field."""
    import jsonschema

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(f"invalid config at {where}: {e.message}")


def check_config(config: dict) -> None:
    corpora = set(config["corpora"])
    for name, exp in config["experiments"].items():
        for c in exp.get("corpora", []):
            if c not in corpora:
                raise ConfigError(f"experiments.{name}.corpora: unknown corpus {c!r}; defined: {sorted(corpora)}")
    for name in config["gmm"]["experiments"]:
        if name not in config["experiments"]:
            raise ConfigError(f"gmm.experiments: unknown experiment {name!r}; defined: {sorted(config['experiments'])}")
        if config["experiments"][name]["model"] != "sdgm":
            raise ConfigError(f"gmm.experiments: {name!r} is not an SDGM experiment (no mixing vectors)")
    if not runs(config):
        raise ConfigError("the configuration selects no runs")


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
