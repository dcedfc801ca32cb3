"""The workflow's config schema (workflow/schemas/config.schema.yaml) and the built-in models' config dataclasses
agree on every option: the same names, and each type the schema states is the dataclass field's type.

A model's options are written in both places (the dataclass builds the model, the schema checks a config before
any job starts); this keeps the two from drifting. vocab_size comes from the corpus and seq_len from train.seq_len
(registry.model_options), so neither is a model option in the schema.
"""

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from sdgm.models.catalog import MODELS
from sdgm.models.registry import model_classes

REPO = Path(__file__).resolve().parents[1]
CONFIG_SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
NOT_OPTIONS = {"vocab_size", "seq_len"}
JSON_TYPES = {"integer": int, "number": float, "boolean": bool, "string": str}


def resolve(node: dict) -> dict:
    """A schema node with its $ref (into $defs) followed, the node's own keys kept beside it."""
    while "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/$defs/"), f"unexpected $ref {ref!r}"
        defined = CONFIG_SCHEMA["$defs"][ref.removeprefix("#/$defs/")]
        node = {**defined, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def schema_options(model: str) -> dict[str, dict]:
    """option -> its schema node, from the models section."""
    section = CONFIG_SCHEMA["properties"]["models"]["properties"]
    assert model in section, f"the config schema's models section does not list {model!r}"
    node = resolve(section[model])
    assert node.get("additionalProperties") is False, f"models.{model}: the schema must refuse unknown options"
    return {name: resolve(option) for name, option in node["properties"].items()}


def stated_types(option: dict) -> set[type]:
    """The Python types a schema node allows, where it states them (type, or the values of enum/const)."""
    if "enum" in option or "const" in option:
        return {type(v) for v in option.get("enum", [option.get("const")])}
    kinds = option.get("type")
    return {JSON_TYPES[k] for k in ([kinds] if isinstance(kinds, str) else kinds or [])}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_schema_and_config_dataclass_name_the_same_options(model):
    cfg_cls, _ = model_classes(model)
    fields = {f.name for f in dataclasses.fields(cfg_cls)} - NOT_OPTIONS
    options = set(schema_options(model))
    assert options == fields, (
        f"models.{model}: only in the schema {sorted(options - fields)}, only in "
        f"{cfg_cls.__name__} {sorted(fields - options)}"
    )


@pytest.mark.parametrize("model", sorted(MODELS))
def test_schema_types_are_the_config_dataclass_types(model):
    cfg_cls, _ = model_classes(model)
    hints = typing.get_type_hints(cfg_cls)
    for name, option in schema_options(model).items():
        allowed = stated_types(option)
        assert allowed, f"models.{model}.{name}: the schema states no type"
        assert allowed == {hints[name]}, (
            f"models.{model}.{name}: the schema allows {sorted(t.__name__ for t in allowed)}"
            f", {cfg_cls.__name__}.{name} is {hints[name].__name__}"
        )


@pytest.mark.parametrize("model", sorted(MODELS))
def test_an_experiments_overrides_are_checked_against_the_same_options(model):
    """experiments.<name>.overrides of a model refer to the options the models section lists."""
    rules = CONFIG_SCHEMA["properties"]["experiments"]["additionalProperties"]["allOf"]
    refs = [
        r["then"]["properties"]["overrides"]["$ref"]
        for r in rules
        if r["if"]["properties"]["model"] == {"const": model}
    ]
    models = CONFIG_SCHEMA["properties"]["models"]["properties"]
    assert refs == [models[model]["$ref"]], f"experiments of {model}: {refs}"
