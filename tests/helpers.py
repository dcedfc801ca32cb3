"""Plain helpers shared by the test files (imported as `from helpers import ...`); fixtures live in conftest.py.

Configs and the workflow (the repository's paths, the quick config, a one-run config, a Snakemake runner),
corpora (a small corpus with a repeating grammar), small models, token ids and a small training run, metrics
records as run_training writes them, and waiting for a moment to kill a process.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from sdgm.common.missing import NO_STATE, NOT_MEASURED
from sdgm.data.tokens import tokenize_corpus

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "workflow" / "Snakefile"


# ---- configs and the workflow -------------------------------------------------------------------------------------
def load_config(name: str) -> dict:
    """config/<name>.yaml, freshly read (the caller may change it)."""
    return yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())


QUICK = load_config("quick")  # read-only: copy it (copy.deepcopy) or load_config("quick") before changing it
PAPER = load_config("config")


def mutate(path: str, value, base: dict = QUICK) -> dict:
    """A copy of `base` with the dotted `path` set to `value` (deleted where value is KeyError)."""
    cfg = copy.deepcopy(base)
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value
    return cfg


def one_run_config(corpus: str = "ptb", gmm: bool = False, **sdgm) -> dict:
    """The quick config cut down to one SDGM experiment on one of its corpora (seed 0: one run), with `sdgm` as
    model options; its GMM is fitted where gmm is set."""
    cfg = copy.deepcopy(QUICK)
    cfg["corpora"] = {corpus: QUICK["corpora"][corpus]}
    cfg["experiments"] = {"sdgm": {"model": "sdgm"}}
    cfg["gmm"]["experiments"] = ["sdgm"] if gmm else []
    cfg["models"]["sdgm"].update(sdgm)
    return cfg


def write_config(workdir: Path, cfg: dict, name: str = "tiny.yaml") -> Path:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / name).write_text(yaml.safe_dump(cfg))
    return workdir / name


def snakemake_command(*args) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), *args]


def snakemake(*args, cwd, timeout: float = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """The project's Snakefile run in `cwd` with `args`, output captured."""
    return subprocess.run(snakemake_command(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


# ---- corpora -------------------------------------------------------------------------------------------------------
def write_grammar_corpus(root: Path, seed: int = 0, shuffle_train: bool = False) -> Path:
    """A small corpus with structure (a repeating grammar over 40 words, 8 a line; 1500 training lines, 120
    validation, 120 test), so a model can learn something: root/{train,valid,test}.txt; returns root. With
    shuffle_train the training lines come in reverse order: the same words, another order of first appearance
    (another vocabulary)."""
    g = torch.Generator().manual_seed(seed)
    words = [f"w{i}" for i in range(40)]
    root.mkdir(parents=True, exist_ok=True)
    for split, n_lines in (("train", 1500), ("valid", 120), ("test", 120)):
        starts = torch.randint(0, 40, (n_lines,), generator=g).tolist()
        lines = [" ".join(words[(s + 3 * j) % 40] for j in range(8)) for s in starts]
        if shuffle_train and split == "train":
            lines = lines[::-1]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


# The reference LSTM's training, small: SGD on contiguous streams, state carried into evaluation (lr is the caller's).
LSTM_STREAMS = {
    "optimizer": "sgd",
    "weight_decay": 0.0,
    "schedule": "plateau",
    "grad_clip": 0.25,
    "data_order": "streams",
    "train_seq_len": 12,
    "eval_batch_size": 5,
    "eval_carry_state": True,
}


# The fault tests' training: three epochs of the grammar corpus, no evaluation during training, patient early stopping
FAULTS_TRAIN = {
    "seq_len": 16,
    "batch_size": 8,
    "epochs": 3,
    "lr": 3e-3,
    "eval_every_steps": 0,
    "device": "cpu",
    "patience": 50,
}


def write_grammar_tokens(root: Path, **kw) -> Path:
    """write_grammar_corpus(root, **kw), tokenized into root/tokens; returns the tokens directory."""
    write_grammar_corpus(root, **kw)
    tokenize_corpus(root, root / "tokens")
    return root / "tokens"


def write_toy_corpus(root: Path) -> Path:
    """A toy corpus of random words (30 words, 8 a line; 400 training lines, 40 validation, 40 test); returns root."""
    words = [f"w{i}" for i in range(30)]
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 400), ("valid", 40), ("test", 40)):
        (root / f"{split}.txt").write_text("\n".join(" ".join(rng.choice(words, 8)) for _ in range(n)) + "\n")
    return root


# ---- small models --------------------------------------------------------------------------------------------------
# Small options per registered model, the sizes most test files use (Transformer-XL's mem_len is the caller's).
SMALL = {
    "sdgm": {"d_model": 16, "n_atoms": 8},
    "gpt2": {"n_layer": 2, "n_embd": 32, "n_head": 4},
    "linformer": {"d_model": 32, "n_layer": 2, "n_head": 4, "k": 6, "block_size": 5},
    "linformer_noncausal": {"d_model": 32, "n_layer": 2, "n_head": 4, "k": 6},
    "transformer_xl": {"n_layer": 2, "n_head": 2, "d_model": 16, "d_head": 8, "d_inner": 32},
    "lstm": {"d_embed": 16, "d_hidden": 16},
}


def train_tiny(tokens: Path, folder: Path, model: str, corpus: str, model_overrides: dict, **train) -> dict:
    """run_training of catalog model `model` (experiment of the same name, seed 0, no progress bar) on the token folder
    `tokens`: its records in folder/run, its checkpoints in folder/ck; `train` overrides the training config (on the
    CPU unless it names a device)."""
    from sdgm.harness.experiment import run_training

    run = folder / "run"
    return run_training(
        tokens,
        run,
        folder / "ck",
        run / "metrics.json",
        corpus=corpus,
        experiment=model,
        model_name=model,
        model_overrides=model_overrides,
        train_overrides={"device": "cpu", **train},
        seed=0,
        progress=False,
    )


def random_ids(vocab_size: int, B: int, T: int, seed: int = 1) -> torch.Tensor:
    """(B, T) token ids, uniform over the vocabulary, from their own generator."""
    return torch.randint(0, vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def take_optimizer_steps(m, vocab_size: int, L: int, steps: int, seed: int) -> None:
    """`steps` Adam steps (lr 1e-2) on random spans of L + 1 tokens, in training mode (dropout on); the model is
    left in training mode."""
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    m.train()
    with torch.enable_grad():  # callers may run under no_grad
        for _ in range(steps):
            span = torch.randint(0, vocab_size, (4, L + 1), generator=g)
            loss, _ = m.training_loss(span[:, :-1], span[:, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()


# ---- metrics records -----------------------------------------------------------------------------------------------
def training_history(seed: int, final_ppl: float, n: int = 20) -> dict:
    """A plausible training and validation history ending near final_ppl."""
    rng = np.random.default_rng(seed)
    train = []
    for i in range(1, n + 1):
        step = 10 * i
        loss = 7.5 * math.exp(-step / 120) + math.log(final_ppl) * (1 - math.exp(-step / 120))
        loss += float(rng.normal(0, 0.05))
        train.append({"step": step, "epoch": step / 1000, "loss": loss, "nll": loss - 0.1, "tokens_per_s": 11000.0})
    val = []
    for i in range(1, n // 5 + 1):
        step = 50 * i
        ppl = final_ppl * (1 + 4 * math.exp(-step / 60))
        val.append({"step": step, "epoch": step / 1000, "ppl": ppl, "nll": math.log(ppl)})
    return {"train": train, "val": val}


def metrics_record(
    experiment: str,
    corpus: str,
    seed: int,
    val_ppl: float,
    *,
    model: str | None = None,
    cosine: float | None = 0.41,
    na: dict | None = None,
    history: dict | None = None,
    causal_change: float | None = 0.0,
    mem_ppl: float | None = None,
    model_config: dict | None = None,
    timestamp: str = "2026-11-24T10:00:00Z",
) -> dict:
    """A metrics.json record of one run as run_training writes it (test perplexity val_ppl - 5; a causal audit
    that passes where causal_change <= 1e-4, none where it is None)."""
    audit = None if causal_change is None else {"max_logit_change": causal_change, "passed": causal_change <= 1e-4}
    stateless = NO_STATE
    return {
        "schema": 1,
        "run_id": f"{corpus}/{experiment}-s{seed}",
        "experiment": experiment,
        "model": model or experiment,
        "corpus": corpus,
        "seed": seed,
        "model_config": model_config or {"d_model": 64},
        "train_config": {"lr": 0.001},
        "data": {"vocab_size": 1000, "sha256": {"train": "a", "valid": "b", "test": "c"}},
        "provenance": {
            "git_commit": "abc123",
            "device": "cpu",
            "torch": "2.13.0",
            "python": "3.11.7",
            "platform": "linux",
            "timestamp": timestamp,
        },
        "metrics": {
            "val_ppl": val_ppl,
            "test_ppl": val_ppl - 5,
            "val_nll": math.log(val_ppl),
            "test_nll": math.log(val_ppl - 5),
            "params": 2345678,
            "cosine_val": cosine,
            "cosine_test": cosine,
            "train_tokens_per_s": 12000.0 + 100 * seed,
            "train_wall_s": 60.2,
            "steps": 200,
            "epochs_completed": 0.2,
            "best_step": 200,
            "stopped": "max_steps",
            "peak_mem_bytes": None,
            "causal_audit": audit,
            "val_ppl_mem": mem_ppl,
            "test_ppl_mem": None if mem_ppl is None else mem_ppl - 5,
        },
        "na": {
            "peak_mem_bytes": "no GPU (CPU run)",
            **({} if cosine is not None else {"cosine_test": (na or {}).get("cosine_val", NOT_MEASURED)}),
            **({} if mem_ppl else {"val_ppl_mem": stateless, "test_ppl_mem": stateless}),
            **(na or {}),
        },
        "history": history if history is not None else training_history(seed, val_ppl),
    }


def write_metrics(root: Path, rec: dict) -> Path:
    """rec as root/runs/<corpus>/<experiment>-s<seed>/metrics.json."""
    d = root / "runs" / rec["corpus"] / f"{rec['experiment']}-s{rec['seed']}"
    d.mkdir(parents=True, exist_ok=True)
    p = d / "metrics.json"
    p.write_text(json.dumps(rec, indent=1))
    return p


# ---- processes -----------------------------------------------------------------------------------------------------
def logged_steps(log: Path, event: str | None = None) -> list[int]:
    """The steps in a trainer's log.jsonl so far (of lines mentioning `event` only, where given); a line being
    written is not counted."""
    if not log.exists():
        return []
    steps = []
    for line in log.read_text().splitlines():
        if event is None or f'"{event}"' in line:
            try:
                steps.append(json.loads(line)["step"])
            except ValueError:
                pass
    return steps


def kill_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 300) -> None:
    """Send `sig` to proc's whole process group (proc started with start_new_session=True: a launcher and its
    workers, Snakemake and its jobs), as Ctrl-C or a crash would, once ready() is true."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before it could be interrupted")
        if ready():
            os.killpg(proc.pid, sig)
            proc.wait(timeout=60)
            return
        time.sleep(0.01)
    raise AssertionError("timed out waiting for the moment to interrupt")
