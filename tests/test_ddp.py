"""Training in several processes (DistributedDataParallel under torchrun, gloo on CPU) is the one-process run.

Every comparison trains the same global batches with one process (in this process) and with two (spawned for
real through sdgm.harness.distributed.launch, as the train rule does), dropout 0 and one thread per process, and asks
for the same training-loss curve, validations and final weights within TOL: the two differ only in the order of
floating-point sums (the mean of two half-batch means, DDP's all-reduce). Two runs with two processes, one of
them killed and resumed, must agree exactly.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import (
    LSTM_STREAMS,
    QUICK,
    REPO,
    kill_when,
    logged_steps,
    one_run_config,
    snakemake,
    write_config,
    write_grammar_corpus,
)

from sdgm.harness.config import ConfigError, check_config, runs, train_processes
from sdgm.harness.distributed import launch
from sdgm.harness.experiment import run_training
from sdgm.models.registry import MODELS, build_model, load_run

TOL = 1e-5  # largest absolute difference of a logged loss, a validation NLL or a weight, 1 vs 2 processes


TRAIN = {
    "seq_len": 16,
    "batch_size": 8,
    "epochs": 1,
    "max_steps": 40,
    "lr": 1e-2,
    "eval_every_steps": 10,
    "eval_max_windows": 20,
    "checkpoint_every_steps": 10,
    "log_every_steps": 1,
    "device": "cpu",
    "patience": 50,
}
CASES = {  # name: (model, options, own train options); every dropout 0, else the runs cannot agree
    "sdgm": ("sdgm", {"d_model": 16, "n_atoms": 8, "dropout": 0.0}, {}),
    "gpt2": (
        "gpt2",
        {"n_layer": 1, "n_embd": 16, "n_head": 2, "dropout": 0.0},
        {"optimizer": "adamw", "schedule": "cosine", "warmup_steps": 5, "weight_decay": 0.1},
    ),
    # stateful: each process reads batch_size / 2 of the contiguous streams and carries their hidden state
    "lstm-streams": (
        "lstm",
        {"d_embed": 16, "d_hidden": 16, "dropout": 0.0},
        {**LSTM_STREAMS, "lr": 20.0},
    ),
}


def run_kwargs(tokens: Path, root: Path, case: str, **train) -> dict:
    model, options, own = CASES[case]
    return dict(
        tokens_dir=str(tokens),
        run_dir=str(root / "run"),
        ckpt_dir=str(root / "ck"),
        metrics_path=str(root / "run" / "metrics.json"),
        corpus="tiny",
        experiment=case.split("-")[0],
        model_name=model,
        model_overrides=options,
        train_overrides={**TRAIN, **own, **train},
        seed=1,
        progress=False,
    )


def one_process(kw: dict) -> dict:
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_training(**kw)
    finally:
        torch.set_num_threads(n)


def two_processes(kw: dict) -> dict:
    launch(2, kw, threads=1, log_path=Path(kw["ckpt_dir"]).parent / "train.log")
    return json.loads(Path(kw["metrics_path"]).read_text())


# GPT-2's key bias adds the same amount to all attention scores of a query, which the softmax ignores: its gradient
# is 0 up to rounding, and Adam turns that rounding noise into steps of up to lr. It is left out of the weight
# comparison; the logits comparison covers it.
NO_GRADIENT = {"gpt2": {"gpt.transformer.h.0.attn.c_attn.bias": slice(16, 32)}}


def max_weight_difference(run_a: Path, run_b: Path, leave_out: dict | None = None) -> float:
    (a, _), (b, _) = load_run(run_a), load_run(run_b)
    diff = 0.0
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        d = (x - y).abs()
        if name in (leave_out or {}):
            d[leave_out[name]] = 0
        diff = max(diff, d.max().item())
    return diff


def max_logit_difference(run_a: Path, run_b: Path, tokens: Path) -> float:
    """Largest difference of the two trained models' logits on the first 8 validation windows."""
    (a, _), (b, _) = load_run(run_a), load_run(run_b)
    ids = torch.load(tokens / "valid.pt")[: 8 * 16].view(8, 16)
    with torch.no_grad():
        return (a(ids) - b(ids)).abs().max().item()


@pytest.mark.e2e  # trains in two processes under torchrun
@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_train_as_one_on_the_same_global_batch(tokens, tmp_path, case):
    one = one_process(run_kwargs(tokens, tmp_path / "one", case))
    two_root = tmp_path / "two"
    two = two_processes(run_kwargs(tokens, two_root, case))
    assert one["metrics"]["train_processes"] == 1 and two["metrics"]["train_processes"] == 2
    h1, h2 = one["history"]["train"], two["history"]["train"]
    assert [p["step"] for p in h1] == [p["step"] for p in h2] == list(range(1, TRAIN["max_steps"] + 1))
    assert [p["lr"] for p in h1] == [p["lr"] for p in h2]
    keys = [k for k in h1[0] if k not in ("step", "epoch", "tokens_per_s", "lr")]  # loss, nll, the model's terms
    assert "loss" in keys and keys == [k for k in h2[0] if k in keys]
    loss_diff = max(abs(p[k] - q[k]) for p, q in zip(h1, h2) for k in keys)
    assert h1[-1]["loss"] < h1[0]["loss"] - 0.05  # it learned: the curves compared are not flat
    v1, v2 = one["history"]["val"], two["history"]["val"]
    assert [p["step"] for p in v1] == [p["step"] for p in v2] and len(v1) == 4  # every 10 steps
    val_diff = max(abs(p["nll"] - q["nll"]) for p, q in zip(v1, v2))
    weight_diff = max_weight_difference(tmp_path / "one" / "run", two_root / "run", NO_GRADIENT.get(case))
    logit_diff = max_logit_difference(tmp_path / "one" / "run", two_root / "run", tokens)
    print(
        f"{case}: 1 vs 2 processes, largest difference: training loss {loss_diff:.2e}, validation NLL "
        f"{val_diff:.2e}, weight {weight_diff:.2e}, logit {logit_diff:.2e}"
    )
    assert max(loss_diff, val_diff, weight_diff, logit_diff) <= TOL, (loss_diff, val_diff, weight_diff, logit_diff)
    for key in ("steps", "best_step", "stopped"):
        assert one["metrics"][key] == two["metrics"][key], key
    assert two["metrics"]["val_ppl"] == pytest.approx(one["metrics"]["val_ppl"], rel=1e-4)
    assert not (two_root / "ck" / "last.pt").exists()  # removed after a finished run, as with one process


def cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:  # gone meanwhile
        return ""


@pytest.mark.e2e  # trains in two processes under torchrun
def test_two_processes_killed_and_resumed_end_as_the_uninterrupted_run(tokens, tmp_path):
    """SIGKILL to torchrun and its workers part-way through training; the rerun resumes from the last checkpoint
    (every rank's RNG state in it) and ends bit-identical to the uninterrupted two-process run."""
    kw = run_kwargs(tokens, tmp_path, "sdgm", max_steps=0, epochs=1, log_every_steps=5)
    ref = two_processes(run_kwargs(tokens, tmp_path / "ref", "sdgm", max_steps=0, epochs=1, log_every_steps=5))
    code = f"from sdgm.harness.distributed import launch; launch(2, {kw!r}, threads=1)"
    log = Path(kw["ckpt_dir"]) / "log.jsonl"
    with open(tmp_path / "first.log", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            start_new_session=True,
        )
        steps = []

        def at_step_40() -> bool:
            steps[:] = logged_steps(log)
            return bool(steps) and steps[-1] >= 40

        kill_when(proc, at_step_40, signal.SIGKILL, timeout=120)  # the launcher, torchrun and both workers
    killed_at = steps[-1]
    time.sleep(0.5)
    left = [pid for pid in os.listdir("/proc") if pid.isdigit() and str(tmp_path / "ck") in cmdline(pid)]
    assert not left, f"processes of the killed run still alive: {left}"  # the workers died with torchrun
    ck = torch.load(Path(kw["ckpt_dir"]) / "last.pt", weights_only=False)
    assert ck["processes"] == 2 and len(ck["ranks"]) == 2 and 0 < ck["state"]["step"] <= killed_at
    assert not torch.equal(ck["ranks"][0]["rng"]["torch"], ck["ranks"][1]["rng"]["torch"])  # one stream per rank
    assert not Path(kw["metrics_path"]).exists()
    shutil.copytree(tmp_path / "ck", tmp_path / "ck-copy")

    resumed = two_processes(kw)
    assert resumed["metrics"]["resumed"] is True
    for key in ("val_ppl", "test_ppl", "steps", "best_step", "cosine_val"):
        assert resumed["metrics"][key] == ref["metrics"][key], key
    assert resumed["history"]["val"] == ref["history"]["val"]
    assert max_weight_difference(tmp_path / "run", tmp_path / "ref" / "run") == 0.0

    # the same checkpoint resumed by one process: the data position is global, so it continues the same run
    one = one_process(
        {
            **kw,
            "run_dir": str(tmp_path / "run1"),
            "ckpt_dir": str(tmp_path / "ck-copy"),
            "metrics_path": str(tmp_path / "run1" / "metrics.json"),
        }
    )
    assert one["metrics"]["resumed"] is True and one["metrics"]["steps"] == ref["metrics"]["steps"]
    assert max(abs(p["nll"] - q["nll"]) for p, q in zip(one["history"]["val"], ref["history"]["val"])) <= TOL
    assert max_weight_difference(tmp_path / "run1", tmp_path / "ref" / "run") <= TOL


def test_a_stream_checkpoint_resumes_only_with_as_many_processes(tokens, tmp_path):
    """Each process carries the state of its own streams: another number of processes cannot continue them."""
    from sdgm.data.tokens import load_tokens
    from sdgm.harness.checkpoint import sha256_file
    from sdgm.harness.train import CheckpointError, TrainConfig, Trainer

    splits, vocab = load_tokens(tokens)
    model, options, own = CASES["lstm-streams"]

    def trainer():
        torch.manual_seed(0)
        cfg = TrainConfig(**{**TRAIN, **own, "max_steps": 3})
        return Trainer(
            build_model(model, len(vocab), **options), splits["train"], splits["valid"], cfg, tmp_path, progress=False
        )

    trainer().fit()
    ck = torch.load(tmp_path / "last.pt", weights_only=False)
    assert ck["processes"] == 1 and ck["carry"] is not None
    torch.save({**ck, "processes": 2, "ranks": [{"rng": ck["rng"], "carry": ck["carry"]}] * 2}, tmp_path / "last.pt")
    meta = json.loads((tmp_path / "last.pt.json").read_text())  # as two processes would have recorded it
    (tmp_path / "last.pt.json").write_text(json.dumps({**meta, "sha256": [sha256_file(tmp_path / "last.pt")]}))
    with pytest.raises(
        CheckpointError,
        match=r"written by 2 training process\(es\) reading contiguous streams.*"
        r"resumes only with 2 \(now 1\)",
    ):
        trainer().try_resume()


def test_a_batch_that_does_not_split_evenly_is_refused():
    cfg = json.loads(json.dumps(QUICK))
    cfg["job_resources"]["train"]["processes"] = 2
    cfg["train"]["batch_size"] = 15
    with pytest.raises(ConfigError, match=r"^train\.batch_size: 15 is not divisible by the 2 training processes"):
        check_config(cfg)
    cfg["train"]["batch_size"] = 16
    cfg["experiments"]["lstm"]["train"]["batch_size"] = 10
    check_config(cfg)
    cfg["experiments"]["lstm"]["train"]["batch_size"] = 9
    with pytest.raises(ConfigError, match=r"^experiments\.lstm\.train\.batch_size: 9 is not divisible"):
        check_config(cfg)


@pytest.mark.e2e  # starts two processes under torchrun
def test_a_batch_that_does_not_split_evenly_is_refused_by_the_trainer_in_its_processes(tokens, tmp_path):
    """The trainer itself, in the processes, before any step."""
    kw = run_kwargs(tokens, tmp_path, "sdgm", batch_size=7)
    with pytest.raises(RuntimeError, match="training in 2 processes failed"):
        two_processes(kw)
    log = (tmp_path / "train.log").read_text()
    assert "batch_size 7 is not divisible by the 2 training processes" in log, log[-3000:]
    assert not (tmp_path / "ck" / "log.jsonl").exists()


def test_processes_follow_the_gpu_count_and_need_one_gpu_each():
    cfg = json.loads(json.dumps(QUICK))
    res = cfg["job_resources"]
    assert train_processes(cfg) == 1
    del res["train"]["processes"]
    res["train"]["gpu"] = 4
    assert train_processes(cfg) == 4  # left out: one process per GPU
    res["train"]["processes"] = 2
    with pytest.raises(ConfigError, match=r"job_resources\.train\.processes: 2 training .*train\.gpu = 4"):
        check_config(cfg)
    res["train"]["processes"] = 4
    cfg["train"]["device"] = "cuda:1"
    with pytest.raises(ConfigError, match=r"^train\.device: 'cuda:1' names one GPU"):
        check_config(cfg)


OPTIONS = {  # small sizes; SDGM also with every optional part switched on
    "sdgm": [
        {"d_model": 16, "n_atoms": 8},
        {"d_model": 16, "n_atoms": 8, "head": "pointer", "delta": 0.5, "gamma": 0.0, "tie_weights": False},
    ],
    "gpt2": [{"n_layer": 1, "n_embd": 16, "n_head": 2}],
    "linformer": [{"d_model": 16, "n_layer": 1, "n_head": 2, "k": 4, "block_size": 4}],
    "linformer_noncausal": [{"d_model": 16, "n_layer": 1, "n_head": 2, "k": 4}],
    "transformer_xl": [{"n_layer": 1, "n_head": 2, "d_model": 16, "d_head": 8, "d_inner": 32, "mem_len": 16}],
    "lstm": [{"d_embed": 8, "d_hidden": 8}],
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_parameter_gets_a_gradient_from_the_training_loss(name):
    """DistributedDataParallel (without find_unused_parameters) expects a gradient for every parameter."""
    assert set(OPTIONS) == set(MODELS)
    for options in OPTIONS[name]:
        torch.manual_seed(0)
        m = build_model(name, 50, seq_len=16, **options)
        x, y = torch.randint(0, 50, (2, 16)), torch.randint(0, 50, (2, 16))
        losses = [m.training_loss(x, y)[0]] + ([m.training_loss_with_state(x, y)[0]] if m.stateful else [])
        for loss in losses:
            m.zero_grad(set_to_none=True)
            loss.backward()
            missing = [n for n, p in m.named_parameters() if p.grad is None]
            assert not missing and math.isfinite(loss.item()), (options, missing)


@pytest.mark.e2e  # Snakemake's train job, in two processes under torchrun
def test_snakemake_train_job_runs_in_two_processes(tmp_path):
    """The train rule with job_resources.train.processes: 2 trains through torchrun; both processes log to the job's
    log, and the run records that it trained in two."""
    corpus = write_grammar_corpus(tmp_path / "corpus")
    cfg = one_run_config(d_model=16, n_atoms=8)
    cfg["corpora"] = {
        "tiny": {
            "source": {"type": "url", "urls": {s: f"file://{corpus}/{s}.txt" for s in ("train", "valid", "test")}},
            "sha256": None,
        }
    }
    cfg["train"].update(
        seq_len=16, batch_size=8, max_steps=20, eval_every_steps=10, eval_max_windows=8, log_every_steps=5, device="cpu"
    )
    cfg["job_resources"]["train"].update(threads=2, processes=2, gpu=0)
    write_config(tmp_path, cfg)
    name = runs(cfg)[0].name  # sdgm-s0-<hash>
    target = f"results/runs/tiny/{name}/metrics.json"
    r = snakemake(target, "--cores", "2", "--configfile", "tiny.yaml", cwd=tmp_path, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    rec = json.loads((tmp_path / target).read_text())
    assert rec["metrics"]["train_processes"] == 2 and rec["metrics"]["steps"] == 20
    assert rec["run_spec"]["processes"] == 2
    log = (tmp_path / f"results/logs/train/tiny/{name}.log").read_text()
    for rank in (0, 1):
        assert f"training process {rank} of 2 (pid" in log and "gloo backend, device cpu" in log, log[-3000:]
