"""Trainer and evaluator: perplexity definition, early stopping, non-finite loss, and exact resume after SIGKILL."""

import json
import math
import os
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import LSTM_STREAMS, REPO, kill_when, logged_steps

from sdgm.harness.evaluate import batchify, evaluate, evaluate_streams, stream_windows, windows
from sdgm.harness.experiment import run_training
from sdgm.harness.train import NonFiniteLoss, TrainConfig, Trainer
from sdgm.models.interface import LanguageModel
from sdgm.models.registry import build_model, load_run


@pytest.fixture(scope="module")
def tiny_corpus(grammar_tokens):
    """A small synthetic corpus with structure (a repeating grammar) so a model can learn something."""
    return grammar_tokens


class Bigram(LanguageModel):
    """A model whose perplexity we can compute by hand."""

    def __init__(self, V):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(V, V))

    def forward(self, idx):
        return self.table[idx]


def test_windows_cover_every_token_once():
    ids = torch.arange(23)
    w = windows(ids, 5)
    assert w == [(0, 5), (5, 5), (10, 5), (15, 5), (20, 2)]
    assert sum(n for _, n in w) == len(ids) - 1


def test_perplexity_is_exp_mean_nll_over_all_predicted_tokens():
    torch.manual_seed(0)
    V, ids = 7, torch.randint(0, 7, (101,))
    m = Bigram(V)
    res = evaluate(m, ids, L=8, batch_size=3)
    nll = F.cross_entropy(m.table[ids[:-1]], ids[1:]).item()  # a bigram's context is one token: window-free
    assert res["tokens"] == 100
    assert res["nll"] == pytest.approx(nll, rel=1e-6)
    assert res["ppl"] == pytest.approx(math.exp(nll), rel=1e-6)


def make_trainer(tokens_dir, ckpt_dir, **kw):
    from sdgm.data.tokens import load_tokens

    splits, vocab = load_tokens(tokens_dir)
    torch.manual_seed(0)
    model = build_model("sdgm", len(vocab), d_model=16, n_atoms=8, seq_len=16)
    cfg = TrainConfig(
        **{"seq_len": 16, "batch_size": 8, "epochs": 2, "lr": 3e-3, "log_every_steps": 5, "device": "cpu", **kw}
    )
    return Trainer(model, splits["train"], splits["valid"], cfg, ckpt_dir, progress=False)


def test_training_lowers_validation_perplexity(tiny_corpus, tmp_path):
    tr = make_trainer(tiny_corpus, tmp_path, eval_every_steps=20, patience=100, lr=1e-2)
    st = tr.fit()
    vals = [p["ppl"] for p in st.history["val"]]
    assert st.stopped == "max_epochs" and st.step == tr.total_steps
    assert vals[-1] < 0.7 * vals[0], vals


def test_early_stopping_after_patience(tiny_corpus, tmp_path):
    tr = make_trainer(tiny_corpus, tmp_path, lr=1e-12, eval_every_steps=3, patience=2)
    st = tr.fit()
    assert st.stopped == "early_stop"
    assert st.step == 9  # best at step 3, then two evaluations without improvement
    assert st.best_step == 3


def test_non_finite_loss_stops_with_the_step_number(tiny_corpus, tmp_path):
    tr = make_trainer(tiny_corpus, tmp_path)
    with torch.no_grad():
        tr.model.atoms.amplitude[0, 0] = float("nan")
    with pytest.raises(NonFiniteLoss, match="step 5"):
        tr.fit()


def test_resume_refuses_a_checkpoint_of_another_config(tiny_corpus, tmp_path):
    tr = make_trainer(tiny_corpus, tmp_path, max_steps=5)
    tr.fingerprint = "A"
    tr.fit()
    other = make_trainer(tiny_corpus, tmp_path, max_steps=5)
    other.fingerprint = "B"
    with pytest.raises(ValueError, match="different configuration"):
        other.try_resume()


RUN_KW = dict(
    corpus="tiny",
    experiment="sdgm",
    model_name="sdgm",
    model_overrides={"d_model": 16, "n_atoms": 8},
    train_overrides={
        "seq_len": 16,
        "batch_size": 8,
        "epochs": 3,
        "lr": 3e-3,
        "eval_every_steps": 40,
        "checkpoint_every_steps": 7,
        "log_every_steps": 1,
        "device": "cpu",
        "patience": 50,
    },
    seed=3,
    progress=False,
)
# stateful training as in the word_language_model example: SGD, lr / 4 on plateau, contiguous streams with the
# hidden state carried across steps (and across the checkpoint), validation with the state carried
RUN_KW_LSTM = dict(
    RUN_KW,
    experiment="lstm",
    model_name="lstm",
    model_overrides={"d_embed": 16, "d_hidden": 16},
    train_overrides={**RUN_KW["train_overrides"], **LSTM_STREAMS, "lr": 5.0, "eval_every_steps": 30},
)


@pytest.mark.e2e  # a training subprocess, killed with SIGKILL, and two runs beside it
@pytest.mark.parametrize("kw", [RUN_KW, RUN_KW_LSTM], ids=["sdgm-shuffled", "lstm-streams"])
def test_resume_after_sigkill_gives_identical_results(tiny_corpus, tmp_path, kw):
    RUN_KW = kw
    torch.set_num_threads(1)
    ref = run_training(tiny_corpus, tmp_path / "ref", tmp_path / "ref_ck", tmp_path / "ref" / "metrics.json", **RUN_KW)

    # the same run in a child process, killed with SIGKILL part-way through training
    run_dir, ck = tmp_path / "run", tmp_path / "ck"
    code = (
        f"import torch; torch.set_num_threads(1)\n"
        f"from sdgm.harness.experiment import run_training\n"
        f"run_training({str(tiny_corpus)!r}, {str(run_dir)!r}, {str(ck)!r}, {str(run_dir / 'metrics.json')!r}, "
        f"**{RUN_KW!r})\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True
    )
    kill_when(child, lambda: (logged_steps(ck / "log.jsonl", "train") or [0])[-1] >= 60, signal.SIGKILL, timeout=120)
    assert child.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()
    assert (ck / "last.pt").exists()

    resumed = run_training(tiny_corpus, run_dir, ck, run_dir / "metrics.json", **RUN_KW)
    assert resumed["metrics"]["resumed"] is True
    for key in ("val_ppl", "test_ppl", "val_ppl_mem", "test_ppl_mem", "cosine_val", "steps", "best_step"):
        assert resumed["metrics"][key] == ref["metrics"][key], key
    assert [p["lr"] for p in resumed["history"]["train"]] == [p["lr"] for p in ref["history"]["train"]]
    assert resumed["history"]["val"] == ref["history"]["val"]
    m_ref, _ = load_run(tmp_path / "ref")
    m_res, vocab = load_run(run_dir)
    for (n, a), (_, b) in zip(m_ref.state_dict().items(), m_res.state_dict().items()):
        assert torch.equal(a, b), n
    assert len(vocab) == 41 and not (ck / "last.pt").exists()


def test_metrics_json_has_provenance_and_na_reasons(tiny_corpus, tmp_path):
    rec = run_training(
        tiny_corpus,
        tmp_path / "r",
        tmp_path / "c",
        tmp_path / "r" / "metrics.json",
        **{**RUN_KW, "train_overrides": {**RUN_KW["train_overrides"], "max_steps": 10}},
    )
    on_disk = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert on_disk["metrics"]["steps"] == 10 and on_disk["metrics"]["stopped"] == "max_steps"
    prov = on_disk["provenance"]
    for key in ("git_commit", "device", "torch", "python", "timestamp"):
        assert key in prov
    assert prov["torch"] == torch.__version__
    assert set(prov["libraries"]) == {"transformers", "linformer"}
    assert on_disk["metrics"]["peak_mem_bytes"] is None and "no GPU" in on_disk["na"]["peak_mem_bytes"]
    for key in ("val_ppl_mem", "test_ppl_mem", "val_tokens_mem"):  # SDGM carries nothing across windows
        assert on_disk["metrics"][key] is None and "no state" in on_disk["na"][key]
    assert len(on_disk["data"]["sha256"]["train"]) == 64
    assert on_disk["metrics"]["causal_audit"]["passed"] is True  # measured on the trained model
    assert on_disk == rec


def test_bf16_autocast_path_trains(tiny_corpus, tmp_path):
    """The mixed-precision path (bf16 autocast, as used on CUDA) runs and learns; exercised here on CPU."""
    tr = make_trainer(tiny_corpus, tmp_path, precision="bf16", max_steps=30, eval_every_steps=15, lr=1e-2)
    assert tr.amp == torch.bfloat16
    st = tr.fit()
    vals = [p["ppl"] for p in st.history["val"]]
    assert all(math.isfinite(v) for v in vals) and vals[-1] < vals[0]


# ---- stateful models: evaluation with carried state, streams training, plateau annealing ----------------------
def test_evaluate_streams_equals_a_manual_loop():
    torch.manual_seed(0)
    m = build_model("lstm", 30, seq_len=7, d_embed=8, d_hidden=8).eval()
    ids = torch.randint(0, 30, (203,))
    res = evaluate_streams(m, ids, L=7, batch_size=4)
    data = ids[:200].view(4, 50)  # 4 contiguous streams of 50 tokens; 3 tokens dropped
    nll, n, state = 0.0, 0, None
    for s in range(0, 49, 7):
        x, y = data[:, s : min(s + 7, 49)], data[:, s + 1 : min(s + 8, 50)]
        logits, state = m.forward_with_state(x, state)
        nll += F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        n += y.numel()
    assert n == 4 * 49 and res["tokens"] == n
    assert res["nll"] == pytest.approx(nll / n, rel=1e-6)
    # an LSTM's carried state makes the window length irrelevant: one window per stream gives the same number
    assert evaluate_streams(m, ids, L=1000, batch_size=4)["nll"] == pytest.approx(res["nll"], rel=1e-5)


def test_a_diverged_model_evaluates_to_an_infinite_perplexity_with_and_without_state():
    """A mean NLL past 709 nats (exp overflows a float): ppl is inf beside the finite NLL, in both evaluations
    (the streams one raised OverflowError)."""
    torch.manual_seed(0)
    m = build_model("lstm", 30, seq_len=7, d_embed=8, d_hidden=8).eval()
    with torch.no_grad():
        m.decoder.weight.mul_(1e5)  # logits of order 1e4-1e5: the true word is thousands of nats behind
    ids = torch.randint(0, 30, (203,))
    for res in (evaluate_streams(m, ids, L=7, batch_size=4), evaluate(m, ids, L=7)):
        assert math.isfinite(res["nll"]) and res["nll"] > 709 and res["ppl"] == math.inf, res


def test_batchify_and_stream_windows_follow_the_example():
    ids = torch.arange(26)
    data = batchify(ids, 4)
    assert data.tolist()[1] == [6, 7, 8, 9, 10, 11]  # stream b = the b-th contiguous chunk; 2 tokens dropped
    assert stream_windows(6, 2) == [(0, 2), (2, 2), (4, 1)]  # the last window is shorter
    with pytest.raises(ValueError, match="streams"):
        batchify(torch.arange(3), 4)


def test_streams_training_carries_state_across_consecutive_windows(tiny_corpus, tmp_path):
    from sdgm.data.tokens import load_tokens

    splits, vocab = load_tokens(tiny_corpus)
    torch.manual_seed(0)
    m = build_model("lstm", len(vocab), seq_len=16, d_embed=8, d_hidden=8)
    cfg = TrainConfig(
        seq_len=16,
        train_seq_len=10,
        batch_size=8,
        epochs=1,
        max_steps=3,
        data_order="streams",
        device="cpu",
        log_every_steps=1,
    )
    tr = Trainer(m, splits["train"], splits["valid"], cfg, tmp_path, progress=False)
    rows = len(splits["train"]) // 8
    assert tr.steps_per_epoch == -(-(rows - 1) // 10)
    x0, y0 = tr.batch(None, 0)
    x1, _ = tr.batch(None, 1)
    assert torch.equal(x0[2], splits["train"][2 * rows : 2 * rows + 10])  # stream 2 starts at its chunk
    assert torch.equal(y0[:, :-1], x0[:, 1:]) and torch.equal(x1[:, 0], y0[:, -1])  # consecutive windows
    tr.fit()
    h, c = tr.carry
    assert h.shape == (2, 8, 8) and not h.requires_grad and h.abs().sum() > 0  # state carried, detached


def test_plateau_schedule_divides_the_rate_after_each_evaluation_without_improvement(tiny_corpus, tmp_path):
    lr = 2.0**-40  # too small to move fp32 weights: validation never improves after the first evaluation
    tr = make_trainer(
        tiny_corpus,
        tmp_path,
        optimizer="sgd",
        lr=lr,
        schedule="plateau",
        plateau_factor=4.0,
        eval_every_steps=3,
        patience=100,
        max_steps=10,
        log_every_steps=1,
    )
    st = tr.fit()
    lrs = [p["lr"] for p in st.history["train"]]
    assert lrs[:3] == [lr] * 3  # first evaluation at step 3 improves on nothing (inf)
    assert lrs[3:6] == [lr] * 3  # it sets the best; no annealing
    assert lrs[6:9] == [lr / 4] * 3  # step 6: no better -> lr / 4 from step 7 on
    assert lrs[9] == lr / 16  # step 9: again
    assert st.plateau_scale == 1 / 64  # final evaluation after step 10: no better either
    assert tr.opt.param_groups[0]["lr"] == lr / 64


def test_train_config_rejects_bad_values():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="data_order"):
        TrainConfig(data_order="random")
    with pytest.raises(ValueError, match="train_seq_len"):
        TrainConfig(seq_len=16, train_seq_len=17)
    with pytest.raises(ValueError, match="plateau_factor"):
        TrainConfig(plateau_factor=1.0)


def test_carried_state_evaluation_needs_a_stateful_model(tiny_corpus, tmp_path):
    with pytest.raises(ValueError, match="eval_carry_state"):
        make_trainer(tiny_corpus, tmp_path, eval_carry_state=True)


def test_stateful_run_records_both_perplexities(tiny_corpus, tmp_path):
    kw = {**RUN_KW_LSTM, "train_overrides": {**RUN_KW_LSTM["train_overrides"], "max_steps": 12}}
    rec = run_training(tiny_corpus, tmp_path / "r", tmp_path / "c", tmp_path / "r" / "metrics.json", **kw)
    m = rec["metrics"]
    model, _ = load_run(tmp_path / "r")
    from sdgm.data.tokens import load_tokens

    splits, _ = load_tokens(tiny_corpus)
    assert m["val_ppl"] == pytest.approx(evaluate(model, splits["valid"], L=16)["ppl"], rel=1e-6)
    assert m["val_ppl_mem"] == pytest.approx(
        evaluate_streams(model, splits["valid"], L=16, batch_size=5)["ppl"], rel=1e-6
    )
    assert m["test_tokens_mem"] == (len(splits["test"]) // 5 - 1) * 5
    assert "val_ppl_mem" not in rec["na"] and rec["na"]["cosine_val"]
    assert m["train_tokens_per_s"] > 0 and m["steps"] == 12
