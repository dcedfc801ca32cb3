"""The experiment matrix from a validated configuration (no torch import: Snakemake parses with this).

The JSON schema (workflow/schemas/config.schema.yaml) checks each value; `check_config` checks what a schema
cannot: that names refer to things that exist. `validate_schema` is stricter than a plain JSON-schema validator
(the one Snakemake's validate() uses), and check_config runs it too: an integer field refuses 64.0 (YAML reads it
as a float, which would reach the trainer as one), and a number must be finite (YAML has .nan and .inf).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import NamedTuple

import yaml

from ..models import catalog

CONFIG_SCHEMA_PATH = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"
SHIPPED_SUMS = Path(__file__).resolve().parents[1] / "data" / "corpora" / "SHA256SUMS"
HASH_CHARS = 8  # hex digits of the run hash in a run's directory name
# The allocator settings of every workflow job (set by workflow/rules/common.smk, inherited by the jobs): glibc
# returns big freed blocks to the OS and maps them again on the next step, which on a CPU costs as much as the
# arithmetic for the logits of a 10k-33k vocabulary; with these it keeps them. sdgm.harness.memory counts what that
# keeps.
JOB_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}


class ConfigError(ValueError):
    pass


class Run(NamedTuple):
    corpus: str
    experiment: str
    seed: int
    run_hash: str  # run_hash(): the first HASH_CHARS hex digits of the SHA-256 of the run's resolved spec

    @property
    def name(self) -> str:
        """The run's directory name: readable, and new whenever anything that changes its result changes."""
        return f"{self.experiment}-s{self.seed}-{self.run_hash}"


@functools.cache
def _validator():
    from ..common.schema import strict_validator  # integers refuse 64.0, numbers must be finite

    return strict_validator(yaml.safe_load(CONFIG_SCHEMA_PATH.read_text()))


def validate_schema(config: dict) -> None:
    """The schema check Snakemake's validate() runs, stricter (see above). Raises ConfigError naming the field."""
    errors = sorted(_validator().iter_errors(config), key=lambda e: [str(p) for p in e.path])
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise ConfigError(f"invalid config at {where}: {e.message}")


def check_model_options(config: dict, name: str) -> None:
    """The options experiment `name` builds its model with (defaults merged with its overrides) fit together."""
    exp = config["experiments"][name]
    options = experiment_spec(config, name)["model_overrides"]

    def where(key: str) -> str:
        return (
            f"experiments.{name}.overrides.{key}" if key in exp.get("overrides", {}) else f"models.{exp['model']}.{key}"
        )

    # Relations between a model's options that the schema cannot express (declared in sdgm.models.catalog); the model's
    # config dataclass refuses them too, but only when its job starts. The schema requires these options in the
    # model's `models:` section, so the merged options hold both whenever the section exists.
    model = catalog.entry(exp["model"])
    known = catalog.options(exp["model"])  # a plug-in's options, from its config dataclass (built-ins: the schema)
    if known is not None:
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"{where(unknown[0])}: model {exp['model']!r} (package {model.package!r}) has no option "
                f"{unknown[0]!r}; its options: {sorted(known)}"
            )
    for width, heads in model.divisible:
        if width in options and heads in options and options[width] % options[heads]:
            raise ConfigError(
                f"{where(width)}: {options[width]} is not divisible by {heads} = {options[heads]} ({where(heads)})"
            )
    if model.tied_equal and options.get("tie_weights"):
        a, b = model.tied_equal
        if a in options and b in options and options[a] != options[b]:
            raise ConfigError(
                f"{where('tie_weights')}: tied weights need {a} == {b}, got {options[a]} ({where(a)}) and {options[b]}"
            )


def load_config(path: str | Path) -> dict:
    """A config file read and checked (check_config); ConfigError names the file and what is wrong."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the config ({e})") from e
    try:
        check_config(config)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from e
    return config


def check_config(config: dict) -> None:
    validate_schema(config)
    try:
        _check(config)
    except catalog.PluginError as e:  # a plug-in that breaks the contract (sdgm.models.catalog names the package)
        raise ConfigError(str(e)) from None


def _check(config: dict) -> None:
    for model in config["models"]:
        try:
            catalog.entry(model)
        except KeyError as e:
            raise ConfigError(f"models.{model}: {e.args[0]}") from None
    corpora = set(config["corpora"])
    for name, exp in config["experiments"].items():
        try:
            catalog.entry(exp["model"])
        except KeyError as e:
            raise ConfigError(f"experiments.{name}.model: {e.args[0]}") from None
        for c in exp.get("corpora", []):
            if c not in corpora:
                raise ConfigError(f"experiments.{name}.corpora: unknown corpus {c!r}; defined: {sorted(corpora)}")
        if "seq_len" in exp.get("train", {}):
            raise ConfigError(
                f"experiments.{name}.train.seq_len: the context length L is shared by every model "
                f"(set train.seq_len instead)"
            )
        merged = {**config["train"], **exp.get("train", {})}
        if merged.get("train_seq_len", 0) > merged["seq_len"]:
            where = f"experiments.{name}.train" if "train_seq_len" in exp.get("train", {}) else "train"
            raise ConfigError(
                f"{where}.train_seq_len: {merged['train_seq_len']} exceeds the context length "
                f"train.seq_len = {merged['seq_len']}"
            )
        check_model_options(config, name)
    for name in config["gmm"]["experiments"]:
        if name not in config["experiments"]:
            raise ConfigError(f"gmm.experiments: unknown experiment {name!r}; defined: {sorted(config['experiments'])}")
        model = config["experiments"][name]["model"]
        if not catalog.has_mixing_vectors(model):
            raise ConfigError(f"gmm.experiments: {name!r} trains {model}, which has no mixing vectors to fit a GMM to")
    for name, exp in config["experiments"].items():
        ref = exp.get("ablation_of")
        if ref is None:
            continue
        if ref not in config["experiments"]:
            raise ConfigError(f"experiments.{name}.ablation_of: unknown experiment {ref!r}")
        if "ablation_of" in config["experiments"][ref]:
            raise ConfigError(f"experiments.{name}.ablation_of: {ref!r} is itself an ablation; name the main run")
        if config["experiments"][ref]["model"] != exp["model"]:
            raise ConfigError(
                f"experiments.{name}.ablation_of: {ref!r} is a {config['experiments'][ref]['model']} "
                f"experiment, {name!r} a {exp['model']} one"
            )
        missing = set(exp.get("corpora", config["corpora"])) - set(
            config["experiments"][ref].get("corpora", config["corpora"])
        )
        if missing:
            raise ConfigError(
                f"experiments.{name}.ablation_of: {ref!r} is not run on {sorted(missing)}, "
                f"so there is nothing to compare with"
            )
    seen: dict[tuple, str] = {}  # one resolved spec per corpus: a duplicate would train the same run twice
    for name, exp in config["experiments"].items():
        spec = canonical_json(experiment_spec(config, name))
        for corpus in exp.get("corpora", list(config["corpora"])):
            if (spec, corpus) in seen:
                other = seen[spec, corpus]
                raise ConfigError(
                    f"experiments.{name}: resolves to the same model and training as experiments."
                    f"{other} on {corpus} (a duplicate run; reuse {other!r} instead)"
                )
            seen[spec, corpus] = name
    check_processes(config)
    if "readings" in config:
        check_readings(config)
    if not runs(config):
        raise ConfigError("the configuration selects no runs")
    sc = config["benchmark"]["scaling"]
    if sc["tokens_per_batch"] < max(sc["lengths"]):
        raise ConfigError(
            f"benchmark.scaling.tokens_per_batch {sc['tokens_per_batch']} is below the longest length "
            f"{max(sc['lengths'])}: that batch would hold no sequence"
        )
    if sc["d_model"] % sc["n_heads"]:
        raise ConfigError(f"benchmark.scaling.d_model {sc['d_model']} is not divisible by n_heads {sc['n_heads']}")


def check_readings(config: dict) -> None:
    """The readings section (docs/readings.md) names experiments and corpora that exist."""
    r, exps = config["readings"], config["experiments"]
    for key in ("default", "reference"):
        if r[key] not in exps:
            raise ConfigError(f"readings.{key}: unknown experiment {r[key]!r}; defined: {sorted(exps)}")
    if exps[r["default"]]["model"] != "sdgm":
        raise ConfigError(f"readings.default: {r['default']!r} trains {exps[r['default']]['model']}, not sdgm")
    for name, ev in r.get("evaluations", {}).items():
        if ev["experiment"] not in exps:
            raise ConfigError(f"readings.evaluations.{name}.experiment: unknown experiment {ev['experiment']!r}")
    for corpus in r.get("parameters", {}).get("corpora", []):
        if "vocab_size" not in config["corpora"].get(corpus, {}).get("expected", {}):
            raise ConfigError(f"readings.parameters.corpora: {corpus!r} is not a corpus with an expected vocab_size")


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
        raise ConfigError(
            f"job_resources.train.processes: {n} training process(es) with job_resources.train.gpu = "
            f"{gpus}: each process uses one GPU, so the two must be equal (or processes left out)"
        )
    if n == 1:
        return
    for name, exp in config["experiments"].items():
        own = exp.get("train", {})
        merged = {**config["train"], **own}

        def where(key: str, name: str = name, own: dict = own) -> str:  # this experiment's name and keys
            return f"experiments.{name}.train.{key}" if key in own else f"train.{key}"

        if merged["batch_size"] % n:
            raise ConfigError(
                f"{where('batch_size')}: {merged['batch_size']} is not divisible by the {n} training "
                f"processes (job_resources.train.processes): each process takes an equal share of the "
                f"batch"
            )
        if merged.get("device", "auto").startswith("cuda:"):
            raise ConfigError(
                f"{where('device')}: {merged['device']!r} names one GPU, but each of the {n} training "
                f"processes (job_resources.train.processes) uses its own: use auto or cuda"
            )


def runs(config: dict) -> list[Run]:
    """The matrix: every experiment on each of its corpora for every seed, each with its run hash."""
    out = []
    for name, exp in config["experiments"].items():
        for corpus in exp.get("corpora", list(config["corpora"])):
            out.extend(Run(corpus, name, seed, run_hash(config, corpus, name, seed)) for seed in config["seeds"])
    return out


def benchmarked_runs(config: dict) -> list[Run]:
    """The runs the throughput benchmark measures: by default the first run of each model on each corpus in the
    matrix's order (the lowest seed of the first experiment with that model, so a main run before its ablations);
    every run with benchmark.throughput.every_run: true. Throughput depends on the model's shape and the device,
    not on the seed, and an ablation changes a loss weight or one option of the same model."""
    all_runs = runs(config)
    if config["benchmark"]["throughput"].get("every_run", False):
        return all_runs
    first: dict[tuple[str, str], Run] = {}
    for r in sorted(all_runs, key=lambda r: r.seed):  # stable: the config's order within a seed
        first.setdefault((config["experiments"][r.experiment]["model"], r.corpus), r)
    chosen = set(first.values())
    return [r for r in all_runs if r in chosen]


def ablations(config: dict) -> dict[str, str]:
    """{ablation experiment: the main experiment it is compared with} (`ablation_of` in the config)."""
    return {name: exp["ablation_of"] for name, exp in config["experiments"].items() if "ablation_of" in exp}


@functools.cache
def _shipped_digests() -> dict[str, dict[str, str]]:
    """{corpus: {split: sha256}} from the shipped corpora's SHA256SUMS (sha256sum format)."""
    table: dict[str, dict[str, str]] = {}
    for line in SHIPPED_SUMS.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split(maxsplit=1)
            corpus, _, filename = name.strip().lstrip("*").partition("/")
            table.setdefault(corpus, {})[filename.removesuffix(".txt")] = digest.lower()
    return table


def corpus_identity(config: dict, corpus: str) -> dict:
    """What the text of a corpus is: its source and the SHA-256 of each split ("shipped" resolved to the digests
    in sdgm/data/corpora/SHA256SUMS; None for an unverified source). Not `expected`: those counts only check it."""
    c = config["corpora"][corpus]
    sha = c["sha256"]
    if sha == "shipped":
        sha = _shipped_digests().get(c["source"].get("corpus", corpus))
    return {"name": corpus, "source": c["source"], "sha256": sha}


def run_spec(config: dict, corpus: str, experiment: str, seed: int) -> dict:
    """Everything in the config that changes a run's result: the experiment's resolved model and training
    (experiment_spec), the corpus (source and digests), the seed, and the number of training processes (each
    draws its own dropout masks). Not results_dir, resources_dir, the rest of job_resources (threads, memory,
    runtime, GPU model), nor the settings of later steps (gmm, sampling, benchmark), nor the experiment's name."""
    return {
        **experiment_spec(config, experiment),
        "corpus": corpus_identity(config, corpus),
        "seed": seed,
        "processes": train_processes(config),
    }


def canonical_json(obj) -> str:
    """Sorted keys, no whitespace, no NaN: one text per value. 1 and 1.0 differ (a new run, never a wrong reuse)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def spec_hash(spec: dict) -> str:
    return hashlib.sha256(canonical_json(spec).encode("utf-8")).hexdigest()[:HASH_CHARS]


def run_hash(config: dict, corpus: str, experiment: str, seed: int) -> str:
    """The `{run_hash}` part of a run's directory name: changing a parameter gives a new directory."""
    return spec_hash(run_spec(config, corpus, experiment, seed))


def experiment_spec(config: dict, experiment: str) -> dict:
    """What the train job needs: model name, its options (defaults + overrides), and the training config
    (the global `train:` with the experiment's own `train:` merged over it, key by key)."""
    exp = config["experiments"][experiment]
    model = exp["model"]
    options = {**config["models"].get(model, {}), **exp.get("overrides", {})}
    return {"model": model, "model_overrides": options, "train": {**config["train"], **exp.get("train", {})}}
