import os
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

min_version("9.0")


# The paper's setup is the default; a --configfile given on the command line replaces it (not merged into it,
# so config/quick.yaml runs exactly its own experiments). --config key=value still overrides single values.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


# Validate every value before anything runs; a bad field stops here with its name in the message.
validate(config, schema="../schemas/config.schema.yaml")

REPO = Path(workflow.basedir).parent
sys.path.insert(0, str(REPO))
from sdgm.harness.config import (  # noqa: E402
    JOB_MALLOC_ENV,
    ablations,
    benchmarked_runs,
    check_config,
    experiment_spec,
    run_hash,
    run_spec,
    runs,
    train_processes,
)

check_config(config)

# glibc keeps big freed blocks instead of returning them to the OS and mapping them again on every step (see
# sdgm.harness.config.JOB_MALLOC_ENV; jobs inherit this environment).
for _name, _value in JOB_MALLOC_ENV.items():
    os.environ.setdefault(_name, _value)

RES = config["resources_dir"]
OUT = config["results_dir"]
SPLITS = ["train", "valid", "test"]
RUNS = runs(config)
GMM_EXPERIMENTS = set(config["gmm"]["experiments"])


wildcard_constraints:
    corpus="[a-z0-9_]+",
    experiment="[a-z0-9_]+",
    seed="[0-9]+",
    run_hash="[0-9a-f]{8}",
    split="train|valid|test",


def job_res(kind, key):
    table = config["job_resources"]
    return table.get(kind, {}).get(key, table["default"].get(key))


def cluster_res(kind):
    """Scheduler-facing resources of one kind of job: memory, runtime, GPUs (count and model), Slurm partition.
    Keys that are not set are left out, so a cluster profile's default-resources apply."""
    names = {
        "mem_mb": "mem_mb",
        "runtime": "runtime",
        "gpu": "gpu",
        "gpu_model": "gpu_model",
        "partition": "slurm_partition",
        "account": "slurm_account",
    }
    return {res: job_res(kind, key) for key, res in names.items() if job_res(kind, key) is not None}


# One run: results/runs/{corpus}/{experiment}-s{seed}-{run_hash}, where {run_hash} is the run hash
# (sdgm.harness.config.run_hash) of everything in the config that changes its result. Every per-run rule carries the
# four wildcards.
RUN = "{corpus}/{experiment}-s{seed}-{run_hash}"


def run_dir(run):
    return f"{OUT}/runs/{run.corpus}/{run.name}"


def resolved_run(wc):
    """The run the wildcards name, as the current config defines it: its hash and resolved spec. A path whose hash
    is not the current config's (a result of an earlier configuration) is refused, never silently reused."""
    if wc.experiment not in config["experiments"] or wc.corpus not in config["corpora"]:
        raise ValueError(f"{wc.corpus}/{wc.experiment}: no such experiment or corpus in the config")
    expected = run_hash(config, wc.corpus, wc.experiment, int(wc.seed))
    if wc.run_hash != expected:
        raise ValueError(
            f"{wc.corpus}/{wc.experiment}-s{wc.seed}-{wc.run_hash}: the current config gives this run the "
            f"hash {expected}, not {wc.run_hash} (that directory belongs to another configuration)"
        )
    return {"hash": expected, "spec": run_spec(config, wc.corpus, wc.experiment, int(wc.seed))}


def has_gmm(wildcards):
    return wildcards.experiment in GMM_EXPERIMENTS


# Aggregate inputs: one file of each run (or of each run with a GMM), for the rules that collect them. Input
# functions, so every rule that gathers the same files names them the same way.
GMM_RUNS = [r for r in RUNS if r.experiment in GMM_EXPERIMENTS]
RUN_FIGURES = ["atoms", "atom_signals", "gmm_bic", "gmm_pca"]


def metrics_files(wildcards=None):
    return [f"{run_dir(r)}/metrics.json" for r in RUNS]


def gmm_files(wildcards=None):
    return [f"{run_dir(r)}/gmm.json" for r in GMM_RUNS]


def sample_files(wildcards=None):
    return [f"{OUT}/samples/{r.corpus}/{r.name}.txt" for r in RUNS]


def quality_files(wildcards=None):
    return [f"{OUT}/quality/{r.corpus}/{r.name}.json" for r in RUNS]


# The throughput benchmark measures one run per model and corpus (sdgm.harness.config.benchmarked_runs), every run with
# benchmark.throughput.every_run: true.
BENCH_RUNS = benchmarked_runs(config)


def is_benchmarked(wildcards):
    return any(
        r.corpus == wildcards.corpus and r.name == f"{wildcards.experiment}-s{wildcards.seed}-{wildcards.run_hash}"
        for r in BENCH_RUNS
    )


def throughput_files(wildcards=None):
    return [f"{OUT}/bench/throughput/{r.corpus}/{r.name}.json" for r in BENCH_RUNS]


def generation_files(wildcards=None):
    return [f"{OUT}/bench/generation/{r.corpus}/{r.name}.json" for r in RUNS]


def run_figure_files(wildcards=None):
    return [f"{OUT}/figures/{r.corpus}/{r.name}/{f}.png" for r in GMM_RUNS for f in RUN_FIGURES]


# What rule store_run (rules/store.smk) copies into the published store for one run. Every run has its metrics, free
# samples and quality record (made by score_samples from the samples and continuations).
def store_run_inputs(wildcards):
    name = f"{wildcards.corpus}/{wildcards.experiment}-s{wildcards.seed}-{wildcards.run_hash}"
    run = f"{OUT}/runs/{name}"
    files = {
        "metrics": f"{run}/metrics.json",
        "samples": f"{OUT}/samples/{name}.txt",
        "quality": f"{OUT}/quality/{name}.json",
    }
    if has_gmm(wildcards):
        files["gmm"] = f"{run}/gmm.json"
        files["figures"] = [f"{OUT}/figures/{name}/{f}.png" for f in RUN_FIGURES]
    if is_benchmarked(wildcards):
        files["throughput"] = f"{OUT}/bench/throughput/{name}.json"
    return files


# The readings study (rules/readings.smk, docs/readings.md): config/readings.yaml's `readings:` section, {} elsewhere.
READINGS = config.get("readings", {})


def readings_files(wildcards=None):
    return [f"{OUT}/readings/{r.corpus}/{r.name}.json" for r in RUNS]
