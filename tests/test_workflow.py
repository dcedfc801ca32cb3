"""The Snakemake workflow: config validation, lint, the paper DAG, and the quick DAG end to end on CPU."""

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import PAPER, QUICK, REPO, load_config, mutate, one_run_config, snakemake, write_config

from sdgm.common.missing import LEAKS_FUTURE, na
from sdgm.harness.config import (
    ConfigError,
    ablations,
    benchmarked_runs,
    check_config,
    experiment_spec,
    run_hash,
    run_spec,
    runs,
    validate_schema,
)
from sdgm.models.registry import MODELS


def test_both_configs_are_valid():
    for cfg in (PAPER, QUICK):
        validate_schema(cfg)
        check_config(cfg)


BAD = [
    ("models.sdgm.n_atoms", 0),
    ("models.sdgm.d_model", -4),
    ("train.lr", 0),
    ("train.lr", "fast"),
    ("train.batch_size", 0),
    ("train.device", "tpu"),
    ("experiments.sdgm.overrides", {"n_atoms": 0}),
    ("experiments.sdgm.overrides", {"no_such_option": 1}),
    ("models.sdgm.encoder_padding", "sideways"),
    ("corpora.ptb.sha256", {"train": "abc", "valid": "abc", "test": "abc"}),
    ("corpora.ptb.source", {"type": "ftp"}),
    ("corpora.ptb.source", {"type": "url"}),
    ("seeds", []),
    ("sampling.temperature", -1),
    ("train.epochs", KeyError),
    ("unknown_key", 1),
    ("models.gpt2.n_head", 0),
    ("models.linformer.k", 0),
    ("models.linformer_noncausal.dropout", 1.0),
    ("experiments.linformer.overrides", {"n_atoms": 8}),  # an SDGM option on another model
    ("experiments.gpt2.train", {"lr": 0}),
    ("experiments.gpt2.train", {"optimizer": "rmsprop"}),
    ("experiments.gpt2.train", {"no_such_option": 1}),
    ("benchmark.repeats", 0),
    ("benchmark.sampler_interval_s", 0),
    ("benchmark.throughput.generate_batch_sizes", []),
    ("benchmark.scaling.lengths", [1, 2]),
    ("benchmark.scaling.tokens_per_batch", "many"),
    ("benchmark.scaling.linformer_k", 0),
    ("benchmark.scaling.sdgm_decoders", ["einsum"]),
    ("benchmark.scaling.batch_view", {"batch_size": 0, "lengths": [64, 128]}),
    ("models.sdgm.decoder", "fastest"),
    ("train.optimizer", "rmsprop"),
    ("train.schedule", "step"),
    ("train.plateau_factor", 1),
    ("train.data_order", "random"),
    ("train.train_seq_len", -1),
    ("train.eval_carry_state", "yes"),
    ("experiments.lstm.train", {"lr": 0}),
    ("experiments.lstm.train", {"no_such_key": 1}),
    ("experiments.lstm.overrides", {"n_atoms": 8}),
    ("experiments.transformer_xl.overrides", {"mem_len": -1}),
    ("models.lstm.n_layers", 0),
    ("models.transformer_xl.dropout", 1.0),
    ("job_resources.train.processes", 0),
    ("job_resources.train.processes", 1.0),
    ("job_resources.bench", {"processes": 2}),  # processes belong to training jobs only
    ("job_resources.default", {"threads": 1, "gpus": 1}),
    ("train.ddp_backend", "mpi"),
    ("models.gpt2.n_head", KeyError),  # n_embd must be divisible by it: a default of 12 would meet 64 unchecked
    ("models.lstm.d_hidden", KeyError),
]


@pytest.mark.parametrize("path,value", BAD, ids=[f"{p}={v}" for p, v in BAD])
def test_schema_rejects_bad_values_naming_the_field(path, value):
    with pytest.raises(ConfigError) as e:
        validate_schema(mutate(path, value))
    msg = str(e.value)
    named = path.split(".")[0 if path == "unknown_key" or value is KeyError else -1]
    assert named in msg or path.rsplit(".", 1)[0] in msg, msg


def test_lstm_crosscheck_config_is_valid():
    cfg = load_config("lstm_crosscheck")
    validate_schema(cfg)
    check_config(cfg)


def test_experiment_train_is_merged_over_the_global_train():
    spec = experiment_spec(QUICK, "lstm")
    assert spec["train"]["optimizer"] == "sgd" and spec["train"]["lr"] == 20.0
    assert spec["train"]["seq_len"] == QUICK["train"]["seq_len"]  # untouched keys come from the global train
    assert experiment_spec(QUICK, "sdgm")["train"] == QUICK["train"]


def test_cross_references_are_checked():
    with pytest.raises(ConfigError, match="unknown corpus"):
        check_config(mutate("experiments.sdgm.corpora", ["wikitext103"]))
    with pytest.raises(ConfigError, match="unknown experiment"):
        check_config(mutate("gmm.experiments", ["nope"]))
    with pytest.raises(ConfigError, match=r"^experiments\.sdgm\.model: unknown model 'gpt5'; built in: sdgm, gpt2"):
        check_config(mutate("experiments.sdgm.model", "gpt5"))
    with pytest.raises(ConfigError, match=r"^models\.gtp2: unknown model 'gtp2'"):
        check_config(mutate("models.gtp2", {"n_embd": 64}))
    with pytest.raises(ConfigError, match=r"gmm\.experiments: 'gpt2' trains gpt2, which has no mixing vectors"):
        check_config(mutate("gmm.experiments", ["gpt2"]))
    with pytest.raises(ConfigError, match=r"experiments\.gpt2\.train\.seq_len: the context length L is shared"):
        check_config(mutate("experiments.gpt2.train", {"seq_len": 32}))


def test_experiment_train_options_are_merged_over_the_global_ones():
    spec = experiment_spec(PAPER, "gpt2")
    own = PAPER["experiments"]["gpt2"]["train"]
    assert spec["train"] == {**PAPER["train"], **own}
    assert spec["train"]["optimizer"] == "adamw" and spec["train"]["epochs"] == PAPER["train"]["epochs"]
    assert experiment_spec(PAPER, "sdgm")["train"] == PAPER["train"]  # no train section: the global one
    assert spec["model_overrides"] == PAPER["models"]["gpt2"]


def test_training_window_cannot_exceed_the_context_length():
    with pytest.raises(ConfigError, match=r"experiments\.lstm\.train\.train_seq_len"):
        check_config(mutate("experiments.lstm.train", {**QUICK["experiments"]["lstm"]["train"], "train_seq_len": 65}))
    with pytest.raises(ConfigError, match=r"^train\.train_seq_len"):
        check_config(mutate("train.train_seq_len", 65))


def test_model_options_that_do_not_fit_together_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match=r"^models\.linformer_noncausal\.d_model: 62 is not divisible by n_head = 4"):
        check_config(mutate("models.linformer_noncausal.d_model", 62))
    with pytest.raises(
        ConfigError,
        match=r"^models\.gpt2\.n_embd: 64 is not divisible by n_head = 5 "
        r"\(experiments\.gpt2\.overrides\.n_head\)",
    ):
        check_config(mutate("experiments.gpt2.overrides", {"n_head": 5}))  # n_embd 64 from models.gpt2
    with pytest.raises(ConfigError, match=r"^models\.lstm\.tie_weights: tied weights need d_embed == d_hidden"):
        check_config(mutate("models.lstm", {**QUICK["models"]["lstm"], "tie_weights": True, "d_hidden": 32}))
    check_config(mutate("models.lstm", {**QUICK["models"]["lstm"], "tie_weights": True}))  # 64 and 64


def test_benchmark_cross_checks():
    with pytest.raises(ConfigError, match="benchmark.scaling.tokens_per_batch"):
        check_config(mutate("benchmark.scaling.tokens_per_batch", 512))
    with pytest.raises(ConfigError, match="n_heads"):
        check_config(mutate("benchmark.scaling.n_heads", 3))


@pytest.mark.parametrize(
    "path,value,field",
    [
        ("models.sdgm.n_atoms", 0, "['models']['sdgm']['n_atoms']"),
        ("train.lr", -1e-3, "['train']['lr']"),
        ("experiments.sdgm_beta0.corpora", "ptb", "['experiments']['sdgm_beta0']['corpora']"),
        ("experiments.linformer.train", {"warmup_steps": -1}, "['experiments']['linformer']['train']['warmup_steps']"),
    ],
)
def test_snakemake_refuses_bad_config_before_any_job(tmp_path, path, value, field):
    write_config(tmp_path, mutate(path, value), "bad.yaml")
    r = snakemake("-n", "--configfile", "bad.yaml", cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "Error validating config file" in out and field in out, out[-2000:]
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def test_lint_is_clean():
    r = snakemake("--lint", cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Congratulations, your workflow is in a good condition!" in r.stdout + r.stderr


def job_counts(out: str) -> dict[str, int]:
    table = out[out.index("Job stats:") :]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_default_config_schedules_the_full_paper_dag():
    r = snakemake("-n", "--forceall", cwd=REPO, timeout=120)  # no --configfile: config/config.yaml is the default
    assert r.returncode == 0, r.stderr
    counts = job_counts(r.stdout + r.stderr)
    n_runs = len(runs(PAPER))
    # every registered model on both corpora (SDGM also as its beta = 0 and gamma = 0 ablations)
    scheduled = {(PAPER["experiments"][r.experiment]["model"], r.corpus) for r in runs(PAPER)}
    assert scheduled == {(m, c) for m in MODELS for c in ("wikitext2", "ptb")}
    assert {("sdgm_beta0", "wikitext2"), ("sdgm_gamma0", "ptb")} <= {(r.experiment, r.corpus) for r in runs(PAPER)}
    assert counts["fetch_corpus"] == 2 and counts["tokenize"] == 2
    assert counts["train"] == n_runs and counts["sample"] == n_runs
    assert counts["fit_gmm"] == len([r for r in runs(PAPER) if r.experiment in PAPER["gmm"]["experiments"]])
    assert counts["report"] == 1
    assert counts["throughput"] == len(scheduled) and counts["scaling"] == 1 and counts["bench_report"] == 1
    assert counts["generation"] == n_runs and counts["generation_report"] == 1
    assert counts["interpretability_figures"] == counts["fit_gmm"]
    assert counts["samples_table"] == 1 and counts["results_readme"] == 1
    assert counts["score_samples"] == n_runs and counts["generation_quality"] == 1
    # main, ablations, reconstruction, throughput, scaling, scaling_slopes, generation, generation_quality
    assert counts["table_html"] == 8


# ---------------------------------------------------------------------------------------- the experiment matrix


def jobs_total(out: str) -> int:
    return int(re.search(r"^total\s+(\d+)$", out[out.index("Job stats:") :], re.M).group(1))


def test_paper_matrix_has_three_seeds_and_every_ablation():
    assert PAPER["seeds"] == [0, 1, 2]
    main = experiment_spec(PAPER, "sdgm")["model_overrides"]
    assert (main["n_atoms"], main["kernel_size"], main["encoder_padding"]) == (256, 3, "causal")
    assert (main["alpha"], main["beta"], main["gamma"], main["delta"]) == (1.0, 1.0, 1.0, 0.0)
    changed = {}
    for name, ref in ablations(PAPER).items():
        assert ref == "sdgm" and PAPER["experiments"][name]["corpora"] == ["wikitext2", "ptb"]
        opts = experiment_spec(PAPER, name)["model_overrides"]
        diff = {k: v for k, v in opts.items() if main.get(k) != v}
        assert len(diff) == 1, (name, diff)  # one option per ablation
        ((key, value),) = diff.items()
        changed.setdefault(key, set()).add(value)
        assert experiment_spec(PAPER, name)["train"] == experiment_spec(PAPER, "sdgm")["train"]
    assert changed["alpha"] == {0.0} and changed["beta"] == {0.0} and changed["gamma"] == {0.0}
    assert len(changed["delta"]) == 1 and min(changed["delta"]) > 0
    assert changed["n_atoms"] | {main["n_atoms"]} == {32, 64, 128, 256, 512}  # K = 256 is the main run, once
    assert changed["kernel_size"] | {main["kernel_size"]} == {1, 3, 5, 7}
    assert changed["encoder_padding"] == {"centered"}
    assert set(changed) == {"alpha", "beta", "gamma", "delta", "n_atoms", "kernel_size", "encoder_padding"}


def test_default_config_dag_has_the_exact_number_of_jobs():
    r = snakemake("-n", "--forceall", cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    # derived from the config, independently of sdgm.harness.config.runs: each experiment on its corpora, per seed
    seeds, corpora, exps = PAPER["seeds"], PAPER["corpora"], PAPER["experiments"]
    n_runs = sum(len(e.get("corpora", list(corpora))) for e in exps.values()) * len(seeds)
    n_gmm = sum(len(exps[e].get("corpora", list(corpora))) for e in PAPER["gmm"]["experiments"]) * len(seeds)
    per_run = 4  # train, sample, generation, score_samples
    n_models = {(e["model"], c) for e in exps.values() for c in e.get("corpora", list(corpora))}
    per_model_corpus = 1  # throughput: once per model and corpus (benchmark.throughput.every_run: false)
    per_gmm_run = 2  # fit_gmm, interpretability_figures
    per_corpus = 2  # fetch_corpus, tokenize
    tables = 8  # table_html: main, ablations, reconstruction, throughput, scaling, scaling_slopes, generation,
    # generation_quality
    once = 9  # report, scaling, bench_report, generation_report, generation_quality, samples_table, claims,
    # results_readme, all
    expected = (
        per_run * n_runs
        + per_model_corpus * len(n_models)
        + per_gmm_run * n_gmm
        + per_corpus * len(corpora)
        + tables
        + once
    )
    assert n_runs == 108 and n_gmm == 18  # (13 SDGM experiments + 5 baselines) x 2 corpora x 3 seeds
    assert expected == 501
    assert jobs_total(out) == expected == 501
    # every run of the matrix is in the DAG, under its hashed directory
    for run in runs(PAPER):
        assert f"results/runs/{run.corpus}/{run.experiment}-s{run.seed}-{run.run_hash}/metrics.json" in out, run


def test_run_hash_covers_what_changes_a_result_and_nothing_else():
    base = one_run_config()
    h = run_hash(base, "ptb", "sdgm", 0)
    assert re.fullmatch(r"[0-9a-f]{8}", h)

    def changed(edit) -> str:
        cfg = json.loads(json.dumps(base))
        edit(cfg)
        check_config(cfg)
        return run_hash(cfg, "ptb", "sdgm", 0)

    # a model option, a training option, an experiment's own overrides or recipe, the corpus, the seed
    assert changed(lambda c: c["models"]["sdgm"].update(n_atoms=16)) != h
    assert changed(lambda c: c["models"]["sdgm"].update(delta=0.5)) != h
    assert changed(lambda c: c["train"].update(lr=2e-2)) != h
    assert changed(lambda c: c["train"].update(max_steps=201)) != h
    assert changed(lambda c: c["experiments"]["sdgm"].update(overrides={"kernel_size": 5})) != h
    assert changed(lambda c: c["experiments"]["sdgm"].update(train={"batch_size": 8})) != h
    assert changed(lambda c: c["corpora"]["ptb"].update(sha256=None)) != h
    assert (
        changed(
            lambda c: c["corpora"]["ptb"].update(
                source={"type": "url", "urls": {s: f"https://example.org/{s}.txt" for s in ("train", "valid", "test")}}
            )
        )
        != h
    )
    assert run_hash(base, "ptb", "sdgm", 1) != h
    # two training processes draw other dropout masks: another result (job_resources.train.processes)
    assert changed(lambda c: c["job_resources"]["train"].update(processes=2)) != h
    # where results go, how jobs are scheduled, and the settings of later steps do not change the run
    assert changed(lambda c: c.update(results_dir="elsewhere", resources_dir="cache")) == h
    assert changed(lambda c: c["job_resources"].update(train={"threads": 8, "mem_mb": 1, "runtime": 1})) == h
    assert changed(lambda c: c["job_resources"]["train"].update(gpu_model="h100", partition="gpu")) == h
    assert changed(lambda c: c["job_resources"]["default"].update(threads=3)) == h
    assert changed(lambda c: c["gmm"].update(components=[1, 2])) == h
    assert changed(lambda c: c["sampling"].update(n_tokens=7)) == h
    assert changed(lambda c: c["benchmark"].update(repeats=9)) == h
    assert changed(lambda c: c["corpora"]["ptb"].update(expected={})) == h  # only checks the tokens
    assert changed(lambda c: c["seeds"].append(7)) == h
    assert changed(lambda c: c["experiments"].update(other={"model": "lstm"})) == h  # another experiment
    # "shipped" means the digests in SHA256SUMS: writing them out is the same corpus
    from sdgm.data.sources import shipped_sha256

    assert changed(lambda c: c["corpora"]["ptb"].update(sha256=shipped_sha256("ptb"))) == h
    # the hash is of the resolved spec that run_spec returns (and metrics.json stores)
    import hashlib

    spec = run_spec(base, "ptb", "sdgm", 0)
    assert spec["seed"] == 0 and spec["model"] == "sdgm" and spec["corpus"]["sha256"]["train"]
    assert spec["processes"] == 1
    text = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(text.encode()).hexdigest()[:8] == h


def test_duplicate_and_dangling_ablations_are_refused():
    with pytest.raises(
        ConfigError,
        match=r"experiments\.sdgm_k32: resolves to the same model and training as "
        r"experiments\.sdgm on wikitext2",
    ):
        check_config(mutate("experiments.sdgm_k32", {"model": "sdgm", "overrides": {"n_atoms": 32}}))
    with pytest.raises(ConfigError, match=r"experiments\.sdgm_beta0\.ablation_of: unknown experiment 'nope'"):
        check_config(mutate("experiments.sdgm_beta0.ablation_of", "nope"))
    with pytest.raises(ConfigError, match=r"experiments\.sdgm_beta0\.ablation_of: 'gpt2' is a gpt2 experiment"):
        check_config(mutate("experiments.sdgm_beta0.ablation_of", "gpt2"))
    with pytest.raises(ConfigError, match="ablation_of"):
        validate_schema(mutate("experiments.sdgm_beta0.ablation_of", 3))


def dry_run(tmp_path: Path, cfg: dict, *targets: str) -> tuple[int, str]:
    write_config(tmp_path, cfg, "c.yaml")
    r = snakemake("-n", *targets, "--configfile", "c.yaml", cwd=tmp_path, timeout=120)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.e2e  # long: Snakemake builds the DAG of two configs
def test_a_changed_parameter_is_a_new_run_directory_in_the_dag(tmp_path):
    def trained(out):  # the run directories the DAG would train
        return set(re.findall(r"^\s+output: results/runs/ptb/(sdgm-s0-[0-9a-f]{8})/metrics\.json", out, re.M))

    rc, out = dry_run(tmp_path, one_run_config())
    assert rc == 0, out[-3000:]
    (old,) = trained(out)
    assert old == runs(one_run_config())[0].name
    # that run finished: its outputs exist
    old_dir = tmp_path / "results" / "runs" / "ptb" / old
    old_dir.mkdir(parents=True)
    for f in ("metrics.json", "run.json", "model.pt", "vocab.json"):
        (old_dir / f).write_text("{}")
    # change one model option: the DAG trains a new directory and leaves the finished one alone
    rc, out = dry_run(tmp_path, one_run_config(n_atoms=16))
    assert rc == 0, out[-3000:]
    (new,) = trained(out)
    assert new != old and new.startswith("sdgm-s0-") and new == runs(one_run_config(n_atoms=16))[0].name
    assert f"results/runs/ptb/{old}/" not in out
    # a run directory of another configuration is refused by name, not rebuilt under the new settings
    rc, out = dry_run(tmp_path, one_run_config(n_atoms=16), f"results/runs/ptb/{old}/metrics.json")
    assert rc != 0, out[-3000:]
    assert f"gives this run the hash {new.rsplit('-', 1)[1]}, not {old.rsplit('-', 1)[1]}" in out, out[-3000:]
    # where results go is not part of a run's identity
    rc, out = dry_run(tmp_path, {**one_run_config(n_atoms=16), "results_dir": "results"})
    assert trained(out) == {new}


def check_claims_outputs(res: Path) -> None:
    """The claims and compact tables of a finished run of the workflow, and results/README.md leading with them."""
    claims = pd.read_csv(res / "tables" / "claims.csv")
    verdicts = {"reproduced", "not reproduced", "contradicted", "not measured", "not comparable"}
    assert set(claims.verdict) <= verdicts and len(claims) > 15
    for col in ("paper_value", "ours_value", "ours_ci_low", "ours_ci_high", "n", "tolerance"):
        assert pd.api.types.is_numeric_dtype(claims[col]), col  # numbers only; reasons in their own column
    assert claims.set_index("id").loc["ptb-val-ppl", "ours_value"] > 1
    compact = pd.read_csv(res / "tables" / "compact.csv")
    assert "sdgm" in set(compact.experiment)
    for col in ("params_m", "ptb_val_ppl", "ptb_test_ppl", "train_tok_s"):
        assert pd.api.types.is_numeric_dtype(compact[col]), col
    readme = (res / "README.md").read_text()
    assert readme.split("\n## ")[1].startswith("Verdicts")  # the page leads with the verdicts
    for ext in ("csv", "md", "tex", "html"):
        assert (res / "tables" / f"claims.{ext}").stat().st_size > 0 and (res / "tables" / f"compact.{ext}").exists()


@pytest.mark.e2e
def test_quick_pipeline_end_to_end(tmp_path):
    """The README's quick run, in a scratch directory: every output exists and holds measured numbers."""
    r = snakemake("--cores", "2", "--configfile", str(REPO / "config" / "quick.yaml"), cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    res = tmp_path / "results"
    quick_runs = runs(QUICK)
    models = {r.experiment: QUICK["experiments"][r.experiment]["model"] for r in quick_runs}
    assert {"sdgm", "gpt2", "linformer", "linformer_noncausal"} <= set(models.values())

    abl = ablations(QUICK)
    assert abl == {"sdgm_beta0": "sdgm", "sdgm_k16": "sdgm"}
    table = pd.read_csv(res / "tables" / "main.csv")
    assert len(table) == len([r for r in quick_runs if r.experiment not in abl])  # one seed: a row per run
    assert not set(table.experiment) & set(abl)
    for col in ("causal", "val_ppl", "val_ppl_paper", "test_ppl", "val_ppl_mem", "test_ppl_mem", "params_m", "cosine"):
        assert col in table.columns
    for run in quick_runs:
        rec = json.loads((res / "runs" / run.corpus / run.name / "metrics.json").read_text())
        assert rec["run_hash"] == run.run_hash == run_hash(QUICK, run.corpus, run.experiment, run.seed)
        assert rec["run_spec"] == run_spec(QUICK, run.corpus, run.experiment, run.seed)
        run_json = json.loads((res / "runs" / run.corpus / run.name / "run.json").read_text())
        assert run_json["run_hash"] == run.run_hash
        m = rec["metrics"]
        vocab = {"wikitext2": 33278, "ptb": 10000}[run.corpus]
        assert rec["data"]["vocab_size"] == vocab
        assert 1 < m["val_ppl"] < vocab and math.isfinite(m["test_ppl"])  # learned something, not degenerate
        assert m["steps"] == experiment_spec(QUICK, run.experiment)["train"]["max_steps"]
        own_train = experiment_spec(QUICK, run.experiment)["train"]
        assert (rec["train_config"]["optimizer"], rec["train_config"]["lr"]) == (
            own_train["optimizer"],
            own_train["lr"],
        )
        if models[run.experiment] == "sdgm":
            assert 0 < m["cosine_val"] <= 1
        else:
            assert m["cosine_val"] is None and rec["na"]["cosine_val"]
        if models[run.experiment] in ("transformer_xl", "lstm"):  # stateful: both perplexities
            assert 1 < m["val_ppl_mem"] < vocab and math.isfinite(m["test_ppl_mem"])
        else:
            assert m["val_ppl_mem"] is None and rec["na"]["val_ppl_mem"]
        leaks = models[run.experiment] == "linformer_noncausal"
        assert m["causal_audit"]["passed"] is (not leaks), m["causal_audit"]
        assert (res / "samples" / run.corpus / f"{run.name}.txt").stat().st_size > 100
    row = table[(table.experiment == "sdgm") & (table.corpus == "wikitext2")].iloc[0]
    assert str(row["val_ppl_paper"]) == "31.2" and row["causal"] == "yes"
    leaky = table[table.model == "linformer_noncausal"].iloc[0]
    assert leaky["experiment"] == "linformer_noncausal (non-causal)" and leaky["causal"] == "LEAKS future tokens"
    assert leaky["val_ppl_diff"] == na(LEAKS_FUTURE)
    for ext in ("csv", "md", "tex"):
        assert (res / "tables" / f"main.{ext}").stat().st_size > 200
    for name in ("training_curves", "ablations", "ppl_vs_atoms"):
        for ext in ("png", "pdf"):
            assert (res / "figures" / f"{name}.{ext}").stat().st_size > 10_000, name
    # the ablation table: the main PTB run, then beta = 0 and K = 16 beside it
    at = pd.read_csv(res / "tables" / "ablations.csv")
    assert list(zip(at.corpus, at.experiment, at.ablation)) == [
        ("ptb", "sdgm", "none (main run)"),
        ("ptb", "sdgm_beta0", "beta = 0.0"),
        ("ptb", "sdgm_k16", "n_atoms = 16"),
    ]
    assert (at.causal == "yes").all() and at.val_ppl_vs_main.iloc[1][0] in "+-"
    rt = pd.read_csv(res / "tables" / "reconstruction.csv")
    sdgm_runs = {(r.experiment, r.corpus) for r in quick_runs if models[r.experiment] == "sdgm"}
    assert set(zip(rt.experiment, rt.corpus)) == sdgm_runs  # every SDGM run, no baseline
    assert str(rt[(rt.experiment == "sdgm") & (rt.corpus == "wikitext2")].iloc[0]["cosine_paper"]) == "0.92"
    for name in ("ablations", "reconstruction"):
        for ext in ("csv", "md", "tex"):
            assert (res / "tables" / f"{name}.{ext}").stat().st_size > 200
    main_ptb = next(r for r in quick_runs if (r.experiment, r.corpus) == ("sdgm", "ptb"))
    gmm = json.loads((res / "runs" / "ptb" / main_ptb.name / "gmm.json").read_text())
    assert gmm["components"] in QUICK["gmm"]["components"]
    assert "gmm-coefficients sample 1" in (res / "samples" / "ptb" / f"{main_ptb.name}.txt").read_text()

    # benchmarks: a throughput record per model and corpus, the scaling record, their tables and figure
    assert [
        r for r in quick_runs if (res / "bench" / "throughput" / r.corpus / f"{r.name}.json").exists()
    ] == benchmarked_runs(QUICK)
    for run in benchmarked_runs(QUICK):
        tp = json.loads((res / "bench" / "throughput" / run.corpus / f"{run.name}.json").read_text())
        assert tp["run_id"] == f"{run.corpus}/{run.name}" and tp["provenance"]["git_commit"]
        gen = [f"generate_b{b}_tokens_per_s" for b in QUICK["benchmark"]["throughput"]["generate_batch_sizes"]]
        for key in ("train_tokens_per_s", "score_tokens_per_s", *gen):
            assert tp["metrics"][key] > 0, key
        assert tp["metrics"]["mfu_train"] is None and tp["na"]["mfu_train"]  # CPU: no peak, a reason instead
    sc = json.loads((res / "bench" / "scaling.json").read_text())
    qs = QUICK["benchmark"]["scaling"]
    assert {r["L"] for r in sc["results"] if r["view"] == "tokens"} == set(qs["lengths"])
    assert {r["L"] for r in sc["results"] if r["view"] == "batch"} == set(qs["batch_view"]["lengths"])
    # on a CPU every layer runs except the Triton decoder, which is timed on CUDA only
    assert all(r["status"] == ("skipped" if r["model"] == "sdgm_triton" else "ok") for r in sc["results"])
    for view in ("tokens", "batch"):
        for model in ("sdgm_naive", "sdgm_chunked", "attention", "linformer"):
            assert all(math.isfinite(f["time"]["slope"]) for f in sc["slopes"][view][model].values())
    assert all(r["over_floor"] > 0 for r in sc["results"] if r["status"] == "ok")
    n_cases = len(qs["lengths"]) + len(qs["batch_view"]["lengths"])
    assert len(sc["ratios"]) == 2 * len(qs["sdgm_decoders"]) * n_cases
    tp_table = pd.read_csv(res / "tables" / "throughput.csv")
    assert len(tp_table) == len(benchmarked_runs(QUICK))
    for name in ("throughput", "scaling", "scaling_slopes", "generation"):
        for ext in ("csv", "md", "tex"):
            assert (res / "tables" / f"{name}.{ext}").stat().st_size > 200
    for name in ("scaling", "generation_latency"):
        for ext in ("png", "pdf"):
            assert (res / "figures" / f"{name}.{ext}").stat().st_size > 10_000
    # generation: every model with a cache beside the window recompute, the non-causal Linformer recomputing
    gen_table = pd.read_csv(res / "tables" / "generation.csv")
    assert len(gen_table) == len(quick_runs)
    for run in quick_runs:
        g = json.loads((res / "bench" / "generation" / run.corpus / f"{run.name}.json").read_text())
        assert g["run_id"] == f"{run.corpus}/{run.name}" and g["provenance"]["git_commit"]
        cached = models[run.experiment] != "linformer_noncausal"
        assert g["incremental_decoding"] is cached and set(g["paths"]) == (
            {"cache", "recompute"} if cached else {"recompute"}
        )
        for path in g["paths"].values():
            for b in QUICK["benchmark"]["generation"]["batch_sizes"]:
                assert path["generate"][f"b{b}"]["tokens_per_s"] > 0 and path["prefill"][f"b{b}"]["status"] == "ok"
            assert (
                len(path["latency"]["median_s"])
                == QUICK["benchmark"]["generation"]["context_multiple"] * g["max_context"]
            )
        row = gen_table[(gen_table.experiment == run.experiment) & (gen_table.corpus == run.corpus)].iloc[0]
        assert row["decoding"] == ("cache" if cached else "recompute window")

    # a finished run loads back, ready to score text
    from sdgm.models.registry import load_run

    for run in quick_runs:
        if run.corpus != "ptb" or run.experiment not in ("sdgm", "gpt2", "linformer", "transformer_xl", "lstm"):
            continue
        model, vocab = load_run(res / "runs" / "ptb" / run.name)
        ids = torch.tensor([[vocab[w] for w in "the company said <eos>".split()]])
        assert model(ids).shape == (1, 4, len(vocab))

    # interpretability figures of every SDGM run with a GMM, the samples page, HTML tables, results/README.md
    gmm_runs = [r for r in quick_runs if r.experiment in QUICK["gmm"]["experiments"]]
    for run in gmm_runs:
        for name in ("atoms", "atom_signals", "gmm_bic", "gmm_pca"):
            for ext in ("png", "pdf"):
                assert (res / "figures" / run.corpus / run.name / f"{name}.{ext}").stat().st_size > 10_000
    samples = (res / "tables" / "samples.md").read_text()
    for run in quick_runs:
        leaking = " (non-causal)" if models[run.experiment] == "linformer_noncausal" else ""
        assert f"### {run.experiment}{leaking}: model {models[run.experiment]}, corpus {run.corpus}, seed 0" in samples
    assert samples.count("GMM-sampled coefficients") == 2 * len(gmm_runs)
    for table in (
        "main",
        "ablations",
        "reconstruction",
        "throughput",
        "scaling",
        "scaling_slopes",
        "generation",
        "samples",
    ):
        assert (res / "tables" / f"{table}.html").stat().st_size > 500
    readme = (res / "README.md").read_text()
    check_claims_outputs(res)  # the page leads with the verdicts, then the compact table
    compact_rows = [line for line in (res / "tables" / "compact.md").read_text().splitlines() if line.startswith("|")]
    assert compact_rows and all(row in readme for row in compact_rows[2:])
    assert "](tables/main.md)" in readme and readme.index("## Main results") < readme.index("## Figures")
    for run in gmm_runs:
        assert f"](figures/{run.corpus}/{run.name}/gmm_pca.png)" in readme
    for fig in ("training_curves", "ablations", "ppl_vs_atoms", "scaling", "generation_latency"):
        assert f"](figures/{fig}.png)" in readme, fig

    # the HTML report: every table and figure, with its caption
    rep = snakemake(
        "--report",
        "results/report.html",
        "--configfile",
        str(REPO / "config" / "quick.yaml"),
        cwd=tmp_path,
        timeout=300,
    )
    assert rep.returncode == 0, (rep.stdout + rep.stderr)[-5000:]
    html = (res / "report.html").read_text()
    for name in (
        "main.html",
        "ablations.html",
        "reconstruction.html",
        "throughput.html",
        "scaling_slopes.html",
        "generation.html",
        "generation_latency.png",
        "samples.html",
        "training_curves.png",
        "ablations.png",
        "ppl_vs_atoms.png",
        "scaling.png",
        *(
            f"results/figures/{r.corpus}/{r.name}/{f}.png"
            for r in gmm_runs
            for f in ("atoms", "atom_signals", "gmm_bic", "gmm_pca")
        ),
    ):
        assert name in html, name
    for caption in (
        "Main table: one row per experiment",
        "Slopes of log(time per sequence)",
        "Training curves of every run",
        "Cost of one token-mixing layer",
        "Generation of every trained run with its own decoding",
        "Time of one generation step",
        "Generated text, per corpus and experiment",
        "Rows are atoms sorted by energy",
        "The four highest-energy atoms",
        "Bayesian information criterion",
        "first two principal components",
        "This run: experiments sdgm, sdgm_beta0",
        "Ablations of SDGM, one column per corpus",
        "Perplexity against the number of atoms K",
        "Ablations: per corpus, the main SDGM run",
        "Embedding reconstruction of every SDGM run",
    ):
        assert caption in html, caption

    # a second invocation has nothing left to do
    again = snakemake("-n", "--configfile", str(REPO / "config" / "quick.yaml"), cwd=tmp_path, timeout=120)
    assert "Nothing to be done" in again.stdout + again.stderr
