"""Faults, bad input and resumption: nothing lost, nothing silently wrong.

Every fault here is real: a learning rate that diverges, a process killed with SIGKILL or SIGINT, a file that is
missing, truncated, tampered with or from another run, a config value of the wrong type. Each must end in one
clear error naming the problem (before expensive work where possible), or in a result identical to a run
without the fault.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import json
import lzma
import math
import re
import shutil
import signal
import subprocess
import time
import typing
from pathlib import Path

import pytest
import torch
from helpers import (
    FAULTS_TRAIN,
    QUICK,
    REPO,
    kill_when,
    metrics_record,
    mutate,
    one_run_config,
    snakemake,
    snakemake_command,
    write_config,
    write_grammar_tokens,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdgm import reporting as report
from sdgm.common.atomic import remove_stale_temporaries
from sdgm.common.missing import NO_RECONSTRUCTION, na
from sdgm.data import sources as data_sources
from sdgm.data import tokens as data_tokens
from sdgm.data.checks import ChecksumError, DataError
from sdgm.data.tokens import tokenize_corpus
from sdgm.harness.config import ConfigError, check_config, experiment_spec, runs, validate_schema
from sdgm.harness.evaluate import evaluate
from sdgm.harness.experiment import run_training
from sdgm.harness.train import CheckpointError, NonFiniteLoss, TrainConfig
from sdgm.models.interface import LanguageModel
from sdgm.models.registry import build_model, load_run, model_config
from sdgm.reporting import ReportError

# ============================================================================ run_training level


TRAIN = {**FAULTS_TRAIN, "checkpoint_every_steps": 10, "log_every_steps": 25}
# The learning rate ramps up (linear warmup towards an absurd peak) until training diverges, part-way into the run,
# after several checkpoints. Losses are logged (and so checked) only every 25 steps, checkpoints come every 10: a
# naive trainer would checkpoint the diverged weights before it noticed.
DIVERGING = {**TRAIN, "lr": 1e8, "warmup_steps": 3000}


def kw(train: dict | None = None, **extra) -> dict:
    return (
        dict(
            corpus="tiny",
            experiment="sdgm",
            model_name="sdgm",
            model_overrides={"d_model": 16, "n_atoms": 8},
            train_overrides=train or TRAIN,
            seed=0,
            progress=False,
        )
        | extra
    )


def train(tokens_dir: Path, root: Path, **kwargs) -> dict:
    return run_training(tokens_dir, root / "run", root / "ck", root / "run" / "metrics.json", **kw(**kwargs))


FAULT = re.compile(
    r"non-finite training loss at step (\d+) \(detected at step (\d+)\); "
    r"last good checkpoint: (\S+) \(step (\d+)\)"
)


@pytest.fixture(scope="module")
def diverged(tokens, tmp_path_factory) -> dict:
    """A run that diverged part-way: its error message and what it left on disk."""
    root = tmp_path_factory.mktemp("diverged")
    with pytest.raises(NonFiniteLoss) as e:
        train(tokens, root, train=DIVERGING)
    return {"root": root, "message": str(e.value)}


def test_divergence_names_the_step_and_keeps_the_last_good_checkpoint(diverged):
    msg, root = diverged["message"], diverged["root"]
    m = FAULT.search(msg)
    assert m, msg
    fault, detected, ckpt, ckpt_step = int(m[1]), int(m[2]), Path(m[3]), int(m[4])
    assert 0 < ckpt_step < fault <= detected, msg
    assert detected % TRAIN["log_every_steps"] != 0  # caught at a checkpoint step, before the checkpoint was written
    assert ckpt == root / "ck" / "last.pt"
    ck = torch.load(ckpt, weights_only=False)  # still loadable, and from before the fault
    assert ck["state"]["step"] == ckpt_step
    for name, t in ck["model"].items():
        assert torch.isfinite(t).all(), name
    for s in ck["optimizer"]["state"].values():
        assert all(torch.isfinite(v).all() for v in s.values() if isinstance(v, torch.Tensor))
    # nothing a table could read
    assert not (root / "run" / "metrics.json").exists() and not (root / "run" / "run.json").exists()


def test_checkpoint_holds_everything_exact_resume_needs(tokens, diverged):
    ck = torch.load(diverged["root"] / "ck" / "last.pt", weights_only=False)
    state, step = ck["state"], ck["state"]["step"]
    assert set(ck) >= {"model", "optimizer", "scheduler", "state", "rng", "fingerprint", "fingerprint_source"}
    assert set(ck["rng"]) >= {"torch", "python", "numpy"}
    assert ck["scheduler"]["last_epoch"] == step  # the learning-rate schedule position
    params = [i for g in ck["optimizer"]["param_groups"] for i in g["params"]]
    assert all({"exp_avg", "exp_avg_sq"} <= set(ck["optimizer"]["state"][i]) for i in params)  # Adam moments
    splits, vocab = data_tokens.load_tokens(tokens)
    steps_per_epoch = (len(splits["train"]) - 1) // TRAIN["seq_len"] // TRAIN["batch_size"]
    assert state["epoch"] * steps_per_epoch + state["batch_in_epoch"] == step  # the data position
    assert ck["fingerprint_source"]["vocab_sha256"] == data_tokens.vocab_sha256(vocab)


def copy_checkpoint(diverged, tmp_path: Path) -> Path:
    shutil.copytree(diverged["root"] / "ck", tmp_path / "ck")
    return tmp_path


def test_resume_refuses_a_checkpoint_of_another_config(tokens, diverged, tmp_path):
    root = copy_checkpoint(diverged, tmp_path)
    with pytest.raises(
        CheckpointError,
        match=r"different configuration \(train\.lr: 100000000\.0 != 0\.003; "
        r"train\.warmup_steps: 3000 != 0\)",
    ):
        train(tokens, root, train=TRAIN)


def test_resume_refuses_a_checkpoint_of_another_vocabulary(diverged, tmp_path):
    other = write_grammar_tokens(tmp_path / "other", shuffle_train=True)  # same words and sizes, other id order
    assert json.loads((other / "stats.json").read_text())["vocab_size"] == 41
    root = copy_checkpoint(diverged, tmp_path)
    with pytest.raises(CheckpointError, match="different configuration") as e:
        train(other, root, train=DIVERGING)
    assert "vocab_sha256" in str(e.value) and "data.train" in str(e.value)
    assert not (root / "run").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not a checkpoint"])
def test_unreadable_checkpoint_is_named(tokens, diverged, tmp_path, damage):
    root = copy_checkpoint(diverged, tmp_path)
    last = root / "ck" / "last.pt"
    if damage == "garbage":
        last.write_bytes(b"\x00garbage" * 100)
    elif damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    else:
        torch.save({"weights": torch.zeros(3)}, last)
    with pytest.raises(CheckpointError, match=f"checkpoint {re.escape(str(last))} is unreadable"):
        train(tokens, root, train=DIVERGING)


def test_stale_temporaries_of_a_killed_writer_are_removed(tokens, diverged, tmp_path):
    root = copy_checkpoint(diverged, tmp_path)
    stale = [root / "ck" / "last.pt.part-0123456789ab", root / "ck" / "best.pt.part-ba9876543210"]
    for p in stale:
        p.write_bytes(b"half a checkpoint")
    other = root / "ck" / "notes.txt.part-000000000000"  # not ours to delete
    other.write_text("x")
    with pytest.raises(NonFiniteLoss):  # resumes, and diverges again at the same step
        train(tokens, root, train=DIVERGING)
    assert not any(p.exists() for p in stale) and other.exists()
    assert remove_stale_temporaries(root / "x[1].json") == []  # glob characters in names are literal


def test_diverged_resume_fails_at_the_same_step(tokens, diverged, tmp_path):
    root = copy_checkpoint(diverged, tmp_path)
    with pytest.raises(NonFiniteLoss) as e:
        train(tokens, root, train=DIVERGING)
    assert FAULT.search(str(e.value))[1] == FAULT.search(diverged["message"])[1]
    log = [json.loads(line) for line in (root / "ck" / "log.jsonl").read_text().splitlines()]
    assert {"event": "resume", "step": int(FAULT.search(diverged["message"])[4])} in log


class Overconfident(LanguageModel):
    """Confidently wrong next-token logits: a mean NLL beyond what exp() can take in a float."""

    def __init__(self, vocab_size):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(vocab_size, vocab_size) * 1e5)

    def forward(self, idx):
        return self.table[idx]


def test_a_perplexity_beyond_float_range_is_inf_not_a_crash():
    torch.manual_seed(0)
    res = evaluate(Overconfident(7), torch.randint(0, 7, (50,)), L=8)
    assert res["nll"] > 709 and res["ppl"] == math.inf  # which the trainer and the report then refuse


@pytest.fixture(scope="module")
def finished(tokens, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("finished")
    train(tokens, root, train={**TRAIN, "max_steps": 5})
    return root / "run"


def copy_run(finished: Path, tmp_path: Path) -> Path:
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def test_load_run_refuses_a_vocabulary_of_the_same_size_in_another_order(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    vocab = json.loads((run / "vocab.json").read_text())
    (run / "vocab.json").write_text(json.dumps([vocab[1], vocab[0], *vocab[2:]]))
    with pytest.raises(ValueError, match=r"vocab\.json is not the vocabulary the model was trained with"):
        load_run(run)


def test_load_run_refuses_a_vocabulary_of_another_size(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    vocab = json.loads((run / "vocab.json").read_text())
    (run / "vocab.json").write_text(json.dumps(vocab[:-1]))
    with pytest.raises(ValueError, match="vocab_size 41 != 40 tokens in vocab.json"):
        load_run(run)


def test_load_run_refuses_weights_of_another_model(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    meta = json.loads((run / "run.json").read_text())
    meta["config"]["d_model"] = 32
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"model\.pt does not hold the weights of the model in run\.json"):
        load_run(run)


def test_load_run_names_an_unknown_model(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    meta = json.loads((run / "run.json").read_text())
    meta["model"] = "gpt5"
    (run / "run.json").write_text(json.dumps(meta))
    with pytest.raises(KeyError, match="unknown model 'gpt5'; built in: sdgm"):
        load_run(run)


def test_unknown_model_fails_before_training(tokens, tmp_path):
    with pytest.raises(KeyError, match="unknown model 'gpt5'"):
        build_model("gpt5", 10)
    with pytest.raises(KeyError, match="unknown model 'gpt5'"):
        train(tokens, tmp_path, model_name="gpt5")
    assert not (tmp_path / "ck").exists()


def test_tokens_of_another_vocabulary_are_refused(tokens, tmp_path):
    shutil.copytree(tokens, tmp_path / "tokens")
    vocab = json.loads((tmp_path / "tokens" / "vocab.json").read_text())
    (tmp_path / "tokens" / "vocab.json").write_text(json.dumps(vocab[::-1]))
    with pytest.raises(DataError, match=r"vocab\.json \(41 tokens\) is not the vocabulary the token ids were made"):
        train(tmp_path / "tokens", tmp_path)
    assert not (tmp_path / "ck").exists()


def test_corrupt_token_file_is_named(tokens, tmp_path):
    shutil.copytree(tokens, tmp_path / "tokens")
    (tmp_path / "tokens" / "test.pt").write_bytes(b"not a tensor")
    with pytest.raises(DataError, match=r"test\.pt is unreadable"):
        train(tmp_path / "tokens", tmp_path)


@pytest.mark.parametrize(
    "split,text,match",
    [
        ("valid", "\n", r"the valid split has 1 token\(s\); perplexity needs at least 2"),
        ("test", "\n", r"the test split has 1 token\(s\)"),
        ("train", " ".join(f"w{i}" for i in range(40)) + "\n", "fewer than one batch of 8 x 16"),
    ],
)
def test_too_short_splits_fail_before_training(tmp_path, split, text, match):
    write_grammar_tokens(tmp_path / "c")
    (tmp_path / "c" / f"{split}.txt").write_text(text)
    tokenize_corpus(tmp_path / "c", tmp_path / "c" / "tokens")
    t0 = time.perf_counter()
    with pytest.raises((DataError, ValueError), match=match):
        train(tmp_path / "c" / "tokens", tmp_path)
    assert time.perf_counter() - t0 < 10 and not (tmp_path / "run").exists()
    assert not (tmp_path / "ck" / "last.pt").exists()


# ============================================================================ corpus files


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the shipped PTB validation split and the checksum list, used as the shipped corpora."""
    root = tmp_path / "corpora"
    (root / "ptb").mkdir(parents=True)
    shutil.copy(data_sources.CORPORA_DIR / "SHA256SUMS", root / "SHA256SUMS")
    shutil.copy(data_sources.CORPORA_DIR / "ptb" / "valid.txt.xz", root / "ptb" / "valid.txt.xz")
    monkeypatch.setattr(data_sources, "CORPORA_DIR", root)
    return root / "ptb" / "valid.txt.xz"


def materialize_valid(dest: Path) -> str:
    return data_sources.materialize(
        "valid", {"type": "shipped", "corpus": "ptb"}, dest, data_sources.shipped_sha256("ptb")["valid"]
    )


def test_shipped_copy_is_intact(shipped_copy, tmp_path):
    assert materialize_valid(tmp_path / "out" / "valid.txt") == data_sources.shipped_sha256("ptb")["valid"]


def test_missing_shipped_file_is_named(shipped_copy, tmp_path):
    shipped_copy.unlink()
    with pytest.raises(DataError, match=f"shipped corpus file {re.escape(str(shipped_copy))} does not exist"):
        materialize_valid(tmp_path / "out" / "valid.txt")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_altered_shipped_file_fails_its_checksum(shipped_copy, tmp_path):
    text = lzma.decompress(shipped_copy.read_bytes()).replace(b" the ", b" a ", 1)
    shipped_copy.write_bytes(lzma.compress(text))
    with pytest.raises(ChecksumError, match="SHA-256 mismatch for .*valid.txt"):
        materialize_valid(tmp_path / "out" / "valid.txt")
    assert list((tmp_path / "out").iterdir()) == []


def test_truncated_shipped_file_is_named(shipped_copy, tmp_path):
    shipped_copy.write_bytes(shipped_copy.read_bytes()[:50_000])
    with pytest.raises(DataError, match=f"failed to materialize .*valid.txt \\(from {re.escape(str(shipped_copy))}\\)"):
        materialize_valid(tmp_path / "out" / "valid.txt")
    assert list((tmp_path / "out").iterdir()) == []


# ============================================================================ configuration

BAD = [  # values a plain JSON-schema check lets through, or that YAML makes easy to write by mistake
    ("train.seq_len", 64.0, "train.seq_len"),
    ("train.lr", float("nan"), "train.lr"),
    ("train.weight_decay", float("inf"), "train.weight_decay"),
    ("models.sdgm.alpha", float("-inf"), "models.sdgm.alpha"),
    ("train.epochs", True, "train.epochs"),
    ("models.sdgm.tie_weights", "yes", "models.sdgm.tie_weights"),
    ("train.betas", [0.9, 0.99, 0.999], "train.betas"),
    ("models.sdgm.dropout", 1.0, "models.sdgm.dropout"),
    ("seeds", [0, 0], "seeds"),
    ("seeds", [-1], "seeds.0"),
    ("corpora", {1: QUICK["corpora"]["ptb"]}, "corpora"),
    ("experiments.sdgm.overrides", {"seq_len": 32}, "experiments.sdgm.overrides"),
    ("job_resources.train.threads", 0, "job_resources.train.threads"),
]


@pytest.mark.parametrize("path,value,named", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_config_check_refuses_bad_values_naming_the_field(path, value, named):
    with pytest.raises(ConfigError, match=f"invalid config at {re.escape(named)}:"):
        check_config(mutate(path, value))  # what the Snakefile runs after Snakemake's own schema check


def test_snakemake_refuses_an_integer_written_as_a_float(tmp_path):
    write_config(tmp_path, mutate("train.seq_len", 64.0), "bad.yaml")
    r = snakemake("-n", "--configfile", "bad.yaml", cwd=tmp_path, timeout=120)
    assert r.returncode != 0
    assert "invalid config at train.seq_len: 64.0 is not of type 'integer'" in r.stdout + r.stderr
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def config_paths(node, prefix=()) -> list[tuple]:
    """Every path into the config tree (dict keys and list indices)."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += config_paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += config_paths(v, prefix + (i,))
    return out


PATHS = [p for p in config_paths(QUICK) if p]
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from([0, 1, -1, 0.5, 1e-3, "auto", "sdgm", "ptb", "cpu", [], {}, [0.9, 0.999]]),
    st.lists(st.integers(-3, 100), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
)


def near_misses(value) -> list:
    """Values one confusion away from `value`: the same number as another type, out of range, NaN, a string."""
    out = [None, str(value), [value], math.nan, math.inf, -math.inf]
    if isinstance(value, bool):
        out += [int(value), float(value), "yes", "true"]
    elif isinstance(value, (int, float)):
        out += [float(value), int(value), -value, value + 0.5, value * 1e12, True, 0, 0.0, -1]
    return out


def get(cfg, path):
    for p in path:
        cfg = cfg[p]
    return cfg


@st.composite
def mutation(draw):
    op, path = draw(st.sampled_from(["replace", "replace", "delete", "add"])), draw(st.sampled_from(PATHS))
    value = draw(st.one_of(junk, st.sampled_from(near_misses(get(QUICK, path)))))
    return op, path, draw(st.one_of(st.text(max_size=8), st.integers(-5, 5))), value


def apply(cfg: dict, op: str, path: tuple, key, value) -> None:
    parent = cfg
    for p in path[:-1]:
        try:
            parent = parent[p]
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation removed or replaced it
    last = path[-1]
    if (
        not isinstance(parent, (dict, list))
        or (isinstance(parent, dict) and last not in parent)
        or (isinstance(parent, list) and not (isinstance(last, int) and last < len(parent)))
    ):
        return
    if op == "replace":
        parent[last] = value
    elif op == "delete":
        del parent[last]
    elif isinstance(parent[last], dict):
        parent[last][key] = value
    elif isinstance(parent[last], list):
        parent[last].append(value)


def finite_numbers(node) -> bool:
    if isinstance(node, float):
        return math.isfinite(node)
    if isinstance(node, dict):
        return all(finite_numbers(v) for v in node.values())
    if isinstance(node, list):
        return all(finite_numbers(v) for v in node)
    return True


def assert_field_types(obj) -> None:
    """Every field of a config dataclass holds a value of its annotated type (an int field no float or bool)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        v, t = getattr(obj, f.name), hints[f.name]
        if t is bool:
            assert isinstance(v, bool), (f.name, v)
        elif t is int:
            assert isinstance(v, int) and not isinstance(v, bool), (f.name, v)
        elif t is float:
            assert isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v), (f.name, v)
        elif t is str:
            assert isinstance(v, str), (f.name, v)
        elif typing.get_origin(t) is tuple:
            assert isinstance(v, tuple) and len(v) == len(typing.get_args(t)), (f.name, v)
            assert all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutation(), min_size=1, max_size=3))
def test_config_fuzz_accepts_only_configs_the_trainer_and_models_accept(mutations):
    cfg = copy.deepcopy(QUICK)
    for m in mutations:
        apply(cfg, *m)
    try:
        validate_schema(cfg)
        check_config(cfg)
    except ConfigError as e:
        assert str(e)  # the one allowed failure, with a message
        return
    assert finite_numbers(cfg)
    for name in cfg["experiments"]:
        spec = experiment_spec(cfg, name)
        tcfg = TrainConfig(**spec["train"])
        assert_field_types(tcfg)
        mcfg = model_config(spec["model"], 100, **{"seq_len": tcfg.seq_len, **spec["model_overrides"]})
        assert_field_types(mcfg)


# ============================================================================ tables never lie


def good_record() -> dict:
    rec = metrics_record("sdgm", "ptb", 0, 150.0, history={"train": [], "val": []})
    rec["metrics"].update(
        test_ppl=140.0, test_nll=math.log(140.0), params=123456, cosine_val=0.4, train_tokens_per_s=1e4
    )
    return rec


def broken(change):
    def make(path: Path) -> None:
        rec = good_record()
        change(rec)
        path.write_text(json.dumps(rec))

    return make


def set_metric(key, value):
    return broken(lambda r: r["metrics"].__setitem__(key, value))


BROKEN = {
    "invalid JSON": (lambda p: p.write_text("{not json"), "not valid JSON"),
    "half-written": (lambda p: p.write_text(json.dumps(good_record())[:80]), "not valid JSON"),
    "empty file": (lambda p: p.write_text(""), "not valid JSON"),
    "no provenance": (broken(lambda r: r.pop("provenance")), "provenance"),
    "no git commit": (broken(lambda r: r["provenance"].pop("git_commit")), "git_commit"),
    "no device": (broken(lambda r: r["provenance"].pop("device")), "device"),
    "NaN ppl": (lambda p: p.write_text(json.dumps(good_record()).replace("150.0", "NaN")), "metrics.val_ppl"),
    "infinite ppl": (
        lambda p: p.write_text(json.dumps(good_record()).replace("140.0", "Infinity")),
        "metrics.test_ppl",
    ),
    "negative ppl": (set_metric("val_ppl", -3.0), "metrics.val_ppl must be a finite number >= 1"),
    "ppl below 1": (set_metric("test_ppl", 0.5), "metrics.test_ppl must be a finite number >= 1"),
    "ppl as string": (set_metric("val_ppl", "150.0"), "metrics.val_ppl"),
    "params as float": (set_metric("params", 1234.5), "metrics.params must be a positive integer"),
    "params zero": (set_metric("params", 0), "metrics.params must be a positive integer"),
    "params as bool": (set_metric("params", True), "metrics.params"),
    "cosine above 1": (set_metric("cosine_val", 1.5), "metrics.cosine_val"),
    "negative speed": (set_metric("train_tokens_per_s", -1.0), "metrics.train_tokens_per_s"),
    "metrics not a dict": (broken(lambda r: r.__setitem__("metrics", [150.0])), "'metrics' must be an object"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_report_refuses_a_broken_metrics_file_naming_it(tmp_path, case):
    make, why = BROKEN[case]
    good = tmp_path / "runs" / "ptb" / "sdgm-s1" / "metrics.json"
    good.parent.mkdir(parents=True)
    rec = good_record() | {"seed": 1}
    good.write_text(json.dumps(rec))
    bad = tmp_path / "runs" / "ptb" / "sdgm-s0" / "metrics.json"
    bad.parent.mkdir(parents=True)
    make(bad)
    with pytest.raises(ReportError) as e:
        report.build_report([good, bad], tmp_path / "tables", tmp_path / "figures")
    assert str(e.value).startswith(f"{bad}:") and why in str(e.value), str(e.value)
    assert not (tmp_path / "tables").exists() and not (tmp_path / "figures").exists()  # no table at all


def test_every_cell_is_a_measured_value_or_na_with_a_reason(tmp_path):
    rec = good_record()
    rec["metrics"]["cosine_val"] = None
    rec["na"]["cosine_val"] = NO_RECONSTRUCTION
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(rec))
    df = report.main_table(report.load_metrics([path]), report.load_paper())
    row = df.iloc[0]
    assert row.val_ppl == "150.0" and row.test_ppl == "140.0" and row.params_m == "0.12"
    assert row.cosine == na(NO_RECONSTRUCTION)
    assert row.peak_mem_gb == "n/a (no GPU (CPU run))"


# ============================================================================ every writer is atomic


def non_atomic_writes(path: Path) -> list[str]:
    """Calls in a source file that write a file in place: torch.save / np.save* / savefig not aimed at a
    temporary (`tmp`) or an in-memory buffer (`buf`), Path.write_text/write_bytes, open() for writing (appending
    to a log is fine), DataFrame.to_csv or json/yaml.dump to a path or file."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        args = node.args
        target = {"save": 1, "savez": 0, "savez_compressed": 0, "savefig": 0}.get(name)
        if name == "save" and isinstance(f, ast.Attribute) and getattr(f.value, "id", "") in ("np", "numpy"):
            target = 0
        if target is not None and len(args) > target:
            if not (isinstance(args[target], ast.Name) and args[target].id in ("tmp", "buf")):
                bad.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        elif (
            name in ("write_text", "write_bytes", "to_parquet")
            or (name == "to_csv" and args)
            or (name in ("dump", "safe_dump") and len(args) > 1)
        ):
            bad.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        elif name == "open" and isinstance(f, ast.Name):
            mode = args[1] if len(args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            m = mode.value if isinstance(mode, ast.Constant) else "r"
            if any(c in m for c in "wx+") and path.name != "atomic.py":
                bad.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
    return bad


def test_every_output_is_written_through_sdgm_atomic():
    files = [p for d in ("sdgm", "baselines", "workflow/scripts") for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 15
    assert [b for p in files for b in non_atomic_writes(p)] == []


def test_the_writer_check_finds_in_place_writes(tmp_path):
    src = tmp_path / "writer.py"
    src.write_text(
        "torch.save(state, path)\nfig.savefig(out)\nnp.save(path, a)\nPath(p).write_text('x')\n"
        "open(p, 'w')\njson.dump(obj, fh)\ndf.to_csv(p)\n"
        "torch.save(state, tmp)\nopen(log, 'a')\ntorch.save(x, buf)\nopen(p)\n"
    )
    assert [b.split(":")[1] for b in non_atomic_writes(src)] == ["1", "2", "3", "4", "5", "6", "7"]


# ============================================================================ the DAG: kills, resumption, divergence

MAX_STEPS = 300


def tiny_config(resources_dir: str = "resources", **train) -> dict:
    """One corpus (PTB, shipped), one small SDGM run, a checkpoint every 10 steps, one thread (bit-identical)."""
    cfg = one_run_config(d_model=32, n_atoms=16)
    cfg["resources_dir"] = resources_dir
    cfg["train"].update(
        seq_len=32,
        batch_size=16,
        max_steps=MAX_STEPS,
        eval_every_steps=100,
        eval_max_windows=16,
        checkpoint_every_steps=10,
        log_every_steps=1,
        device="cpu",
        **train,
    )
    cfg["sampling"].update(n_samples=1, n_tokens=5)
    cfg["job_resources"]["train"] = {**cfg["job_resources"]["train"], "threads": 1}
    return cfg


NAME = runs(tiny_config())[0].name  # sdgm-s0-<hash of the tiny config>
RUN = Path(f"runs/ptb/{NAME}")
CKPT = Path(f"results/checkpoints/ptb/{NAME}")
TARGET = f"results/{RUN}/metrics.json"  # the train job and what it needs (the full DAG runs in test_workflow.py)


def jobs_run(out: str) -> list[str]:
    return re.findall(r"^localrule (\w+):", out, re.M)


def leftovers(workdir: Path) -> list[str]:
    """Half-written files anywhere under results/ and resources/, and JSON files that do not parse."""
    bad = []
    for top in ("results", "resources"):
        for p in (workdir / top).rglob("*"):
            if ".part-" in p.name or p.name.endswith(".tmp"):
                bad.append(str(p))
            elif p.suffix == ".json":
                try:
                    json.loads(p.read_text())
                except ValueError:
                    bad.append(f"{p} (invalid JSON)")
            elif p.suffix == ".jsonl":
                for line in p.read_text().splitlines():
                    try:
                        json.loads(line)
                    except ValueError:
                        bad.append(f"{p} (invalid line {line!r})")
            elif p.suffix == ".pt":
                try:
                    torch.load(p, weights_only=True)
                except Exception as e:
                    bad.append(f"{p} ({type(e).__name__})")
    return bad


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """The tiny DAG, uninterrupted."""
    work = tmp_path_factory.mktemp("reference")
    write_config(work, tiny_config())
    r = snakemake(TARGET, "--cores", "2", "--configfile", "tiny.yaml", cwd=work)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return {"dir": work, "metrics": json.loads((work / "results" / RUN / "metrics.json").read_text())}


def train_progress(work: Path) -> int:
    log = work / CKPT / "log.jsonl"
    if not (work / CKPT / "last.pt").exists() or not log.exists():
        return -1
    lines = log.read_text().splitlines()
    try:
        return json.loads(lines[-1])["step"] if lines else -1
    except ValueError:  # a line being written
        return -1


def mtimes(work: Path, top: str) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in (work / top).rglob("*") if p.is_file()}


def interrupt_dag(work: Path, target: str, cores: int, ready, sig: int) -> None:
    """Snakemake of `target` in `work` (tiny.yaml), its output in first.log, sent `sig` (its whole process group) once
    `ready()`. SIGINT is back to its default in Snakemake and its jobs: a shell starts background commands
    (`cmd &`) with SIGINT ignored, and a suite launched that way would see the interrupt ignored."""
    with open(work / "first.log", "w") as log:
        proc = subprocess.Popen(
            snakemake_command(target, "--cores", str(cores), "--configfile", "tiny.yaml"),
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        kill_when(proc, ready, sig)


@pytest.mark.e2e
@pytest.mark.parametrize("sig,at_step", [(signal.SIGKILL, 120), (signal.SIGINT, 170)], ids=["SIGKILL", "SIGINT"])
def test_dag_killed_during_training_resumes_to_identical_results(reference, tmp_path, sig, at_step):
    work = tmp_path
    write_config(work, tiny_config())
    interrupt_dag(work, TARGET, 2, lambda: train_progress(work) >= at_step, sig)
    assert not (work / "results" / RUN / "metrics.json").exists()
    ck = torch.load(work / CKPT / "last.pt", weights_only=False)
    assert ck["state"]["epoch"] == 0 and 0 < ck["state"]["batch_in_epoch"] < MAX_STEPS  # mid-epoch
    finished_before = mtimes(work, "resources")
    assert any(p.endswith("stats.json") for p in finished_before)  # fetch and tokenize had finished
    # what a kill during a write leaves: temporaries next to the files being written
    (work / "results" / RUN).mkdir(parents=True, exist_ok=True)
    for p in (work / "results" / RUN / "metrics.json.part-0123456789ab", work / CKPT / "last.pt.part-0123456789ab"):
        p.write_bytes(b"half")

    if sig == signal.SIGKILL:  # Snakemake's lock outlives a SIGKILL (as it would a power loss): README says --unlock
        u = snakemake("--configfile", "tiny.yaml", "--unlock", cwd=work, timeout=120)
        assert u.returncode == 0, u.stderr[-2000:]
    r = snakemake(TARGET, "--cores", "2", "--configfile", "tiny.yaml", cwd=work)  # no --rerun-incomplete: the profile's
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert f"Using workflow specific profile {REPO / 'workflow' / 'profiles' / 'default'}" in out
    assert jobs_run(out) == ["train"]  # fetch_corpus and tokenize not redone
    assert mtimes(work, "resources") == finished_before
    assert leftovers(work) == []
    assert not (work / CKPT / "last.pt").exists()

    rec = json.loads((work / "results" / RUN / "metrics.json").read_text())
    assert rec["metrics"]["resumed"] is True
    assert "resuming sdgm on ptb from step" in (work / f"results/logs/train/ptb/{NAME}.log").read_text()
    ref = reference["metrics"]
    for key in (
        "val_ppl",
        "test_ppl",
        "val_nll",
        "test_nll",
        "cosine_val",
        "cosine_test",
        "steps",
        "best_step",
        "best_val_ppl_during_training",
        "params",
    ):
        assert rec["metrics"][key] == ref["metrics"][key], key  # bit-identical on CPU
    assert rec["history"]["val"] == ref["history"]["val"]
    assert rec["fingerprint"] == ref["fingerprint"]
    m_ref, _ = load_run(reference["dir"] / "results" / RUN)
    m_res, _ = load_run(work / "results" / RUN)
    for (n, a), (_, b) in zip(m_ref.state_dict().items(), m_res.state_dict().items()):
        assert torch.equal(a, b), n
    again = snakemake(TARGET, "-n", "--configfile", "tiny.yaml", cwd=work, timeout=120)
    assert "Nothing to be done" in again.stdout + again.stderr


@pytest.mark.e2e
def test_dag_killed_during_tokenization_redoes_only_that(tmp_path):
    work = tmp_path
    write_config(work, tiny_config())
    target = "resources/tokens/ptb/stats.json"
    started = work / "results/logs/tokenize/ptb.log"
    # the job's log appears once its script has imported torch, just before tokenizing (about a second of work)
    interrupt_dag(work, target, 1, started.exists, signal.SIGKILL)
    assert not (work / target).exists()
    fetched = mtimes(work, "resources/corpora")
    assert len(fetched) == 3
    assert snakemake("--configfile", "tiny.yaml", "--unlock", cwd=work, timeout=120).returncode == 0
    r = snakemake(target, "--cores", "1", "--configfile", "tiny.yaml", cwd=work, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert jobs_run(r.stdout + r.stderr) == ["tokenize"]
    assert mtimes(work, "resources/corpora") == fetched
    assert leftovers(work) == []
    assert json.loads((work / target).read_text())["vocab_size"] == 10000


@pytest.mark.e2e
def test_dag_divergence_fails_the_train_job_and_builds_no_table(reference, tmp_path):
    work = tmp_path
    cfg = tiny_config(resources_dir=str(reference["dir"] / "resources"), lr=1e30)
    write_config(work, cfg)
    run = Path("runs/ptb") / runs(cfg)[0].name  # another learning rate: another run directory
    r = snakemake("--cores", "2", "--configfile", "tiny.yaml", cwd=work)
    out = r.stdout + r.stderr
    assert r.returncode != 0
    assert "rule train" in out and "localrule tokenize" not in out  # shared, finished corpus: not redone
    train_log = (work / f"results/logs/train/ptb/{run.name}.log").read_text()
    assert re.search(
        r"NonFiniteLoss: non-finite training loss at step \d+ \(detected at step \d+\); "
        r"no checkpoint written yet",
        train_log,
    ), train_log[-2000:]
    assert not (work / "results" / run / "metrics.json").exists()
    assert not (work / "results" / "tables").exists() and not (work / "results" / "figures").exists()
    assert leftovers(work) == []
