"""Generation benchmark: decoding paths, state bytes, timing on a fake clock, the record of a trained run, and
the generation table and latency figure built from it."""

import itertools
import json

import pytest
import torch
import torch.nn as nn
from helpers import random_ids, train_tiny

from sdgm.bench.generation import (
    CompiledSteps,
    WindowRecompute,
    decoding_paths,
    generation_for_run,
    measure_generation,
    measure_path,
    state_bytes,
)
from sdgm.harness.generate import sample_autoregressive
from sdgm.harness.train import TrainConfig
from sdgm.models.registry import build_model
from sdgm.reporting import generation_report
from sdgm.reporting.protocol import NOT_RECORDED, record_protocol

V, L = 40, 8
SMALL = {
    "gpt2": {"n_layer": 2, "n_embd": 16, "n_head": 2},
    "lstm": {"d_embed": 8, "d_hidden": 8},
    "linformer_noncausal": {"d_model": 16, "n_layer": 1, "n_head": 2, "k": 4},
    "transformer_xl": {"n_layer": 1, "n_head": 2, "d_model": 16, "d_head": 8, "d_inner": 16, "mem_len": L},
}


def small(name):
    torch.manual_seed(0)
    return build_model(name, V, seq_len=L, **SMALL[name]).eval()


def test_state_bytes_counts_every_storage_once():
    a = torch.zeros(4, 8)  # 128 bytes
    view = a[:2]  # same storage
    obj = type("Holder", (), {})()
    obj.inner = [torch.zeros(3, dtype=torch.float64), {"again": a}]  # 24 bytes, and a once more
    assert state_bytes({"a": a, "view": view, "obj": obj, "n": 3, "none": None, "name": "x"}) == 128 + 24
    obj.weights = nn.Parameter(torch.zeros(100))  # a model's parameter held by the state is the model's, not state
    assert state_bytes({"obj": obj}) == 128 + 24
    m = small("gpt2")
    _, state = m.prefill(random_ids(V, 2, 5))
    D, n_layer = 16, 2
    # transformers' DynamicCache: keys and values of 5 positions per layer, plus the 5 tokens of the context
    assert state_bytes(state) == 2 * n_layer * 2 * 5 * D * 4 + 2 * 5 * 8


@torch.no_grad()
def test_window_recompute_is_the_generic_fallback():
    m = small("gpt2")
    slow = WindowRecompute(m)
    assert not slow.incremental_decoding and slow.decode_beyond_context == "window" and slow.max_context == L
    idx = random_ids(V, 2, 3 * L)
    logits, state = slow.prefill(idx[:, :1])
    out = [logits]
    for t in range(1, idx.shape[1]):
        logits, state = slow.decode_step(idx[:, t], state)
        out.append(logits)
    assert list(state) == ["context"] and torch.equal(state["context"], idx[:, -L:])
    torch.testing.assert_close(torch.stack(out, dim=1), m.decode_reference(idx), rtol=1e-5, atol=1e-5)
    prompt = random_ids(V, 3, 2, seed=4)
    assert torch.equal(
        sample_autoregressive(slow, prompt, 2 * L, seed=5), sample_autoregressive(m, prompt, 2 * L, seed=5)
    )


def test_paths_of_each_model():
    assert list(decoding_paths(small("gpt2"))) == ["cache", "recompute"]
    assert list(decoding_paths(small("linformer_noncausal"))) == ["recompute"]  # no cache: its own path
    paths = decoding_paths(small("lstm"), {"backend": "eager"})
    assert list(paths) == ["cache", "recompute", "cache_compiled"] and isinstance(
        paths["cache_compiled"], CompiledSteps
    )


@pytest.mark.parametrize("name", ["lstm", pytest.param("gpt2", marks=pytest.mark.e2e)])  # gpt2: long torch.compile
@torch.no_grad()
def test_compiled_steps_decode_exactly_like_the_model(name):
    m = small(name)
    compiled = CompiledSteps(m, backend="eager")  # TorchDynamo's tracing without code generation
    idx = random_ids(V, 2, 2 * L)
    state, out = compiled.init_decode_state(2), []
    for t in range(idx.shape[1]):
        logits, state = compiled.decode_step(idx[:, t], state)
        out.append(logits)
    torch.testing.assert_close(torch.stack(out, dim=1), m.decode_reference(idx), rtol=1e-5, atol=1e-5)


def test_tokens_per_second_and_latency_on_a_fake_clock():
    """Every timed call lasts 0.5 s on the fake clock: tokens/s are the token counts times 2."""
    m = small("transformer_xl")
    res = measure_generation(
        m,
        TrainConfig(seq_len=L, device="cpu"),
        batch_sizes=(1, 3),
        new_tokens=5,
        context_multiple=3,
        repeats=3,
        warmup=1,
        sampler_interval_s=0.01,
        clock=itertools.count(0, 0.5).__next__,
    )
    assert res["own_path"] == "cache" and res["decode_beyond_context"] == "state" and res["max_context"] == L
    for path in ("cache", "recompute"):
        p = res["paths"][path]
        assert p["generate"]["b1"]["tokens_per_s"] == 5 * 2 and p["generate"]["b3"]["tokens_per_s"] == 15 * 2
        assert p["generate"]["b3"]["timing"]["times_s"] == [0.5, 0.5, 0.5]
        assert p["prefill"]["b3"]["timing"]["median_s"] == 0.5 and p["prefill"]["b3"]["prompt_tokens"] == L
        assert p["latency"]["positions"] == list(range(1, 3 * L + 1)) and set(p["latency"]["median_s"]) == {0.5}
        assert p["generate"]["b1"]["memory"]["cpu_rss_peak_bytes"] > 0
    # Transformer-XL's memory of mem_len = L positions, against the recompute's window of L tokens (int64)
    cache, window = res["paths"]["cache"]["state"], res["paths"]["recompute"]["state"]
    # keys and values, one layer, fp32: the memory is the last L of the step's L + 1 positions, a view that keeps
    # the storage of all L + 1
    kv = 2 * (L + 1) * 16 * 4
    r = (L + 1) * 16 * 4  # W_r R for distances 0 .. L, shared by the batch
    assert cache["b1"]["after_last_bytes"] == cache["b1"]["peak_bytes"] == kv + r and list(cache) == ["b1", "b3"]
    # the inference-memory measure: the state after a context of L plus one step's activations, above the weights
    assert cache["b1"]["step_peak_bytes"] >= kv + r and cache["b3"]["step_peak_bytes"] > cache["b1"]["step_peak_bytes"]
    assert cache["b3"]["context"] == L and cache["b3"]["fresh_process"] is False and cache["b3"]["steps"] == 1
    assert res["paths"]["cache"]["compile"] is False and res["paths"]["cache"]["fresh_process"] is False
    rec = {**res, "provenance": {"device": "cpu"}}  # the protocol the verdicts compare, every field recorded
    for at in ("paths.{own_path}.state.b3", "paths.{own_path}.latency"):
        assert NOT_RECORDED not in record_protocol(rec, "generation", at).values(), at
    # the window of L tokens (int64), past L a view of the L + 1 tokens it was cut from
    assert window["b1"]["after_max_context_bytes"] == L * 8 and window["b1"]["after_last_bytes"] == (L + 1) * 8
    assert window["b1"]["peak_bytes"] == (L + 1) * 8 and window["b1"]["peak_at_position"] == L + 1


def test_a_compiled_path_that_fails_is_recorded_not_raised():
    m = small("lstm")
    kw = {
        "device": torch.device("cpu"),
        "autocast": lambda: torch.autocast("cpu", enabled=False),
        "vocab_size": V,
        "batch_sizes": (1,),
        "new_tokens": 3,
        "context_multiple": 1,
        "repeats": 1,
        "warmup": 0,
        "seed": 0,
    }
    rec = measure_path(CompiledSteps(m, backend="no_such_backend"), **kw, allow_errors=True)
    assert rec["generate"]["b1"]["status"] == "error" and "no_such_backend" in rec["generate"]["b1"]["error"]
    assert rec["latency"]["status"] == "error" and rec["prefill"]["b1"]["status"] == "ok"  # prefill is not compiled
    with pytest.raises(Exception, match="no_such_backend"):  # unless errors are allowed (compiled paths): raised
        measure_path(CompiledSteps(m, backend="no_such_backend"), **kw)


# ---- the record of a trained run, its table and figure ----------------------------------------------------------
@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory, toy_tokens):
    root = tmp_path_factory.mktemp("gen")
    runs = {}
    for name in ("gpt2", "linformer_noncausal"):
        train_tiny(toy_tokens, root / name, name, "toy", SMALL[name], seq_len=L, batch_size=4, max_steps=2, epochs=1)
        runs[name] = root / name / "run"
    return runs


BENCH = {
    "repeats": 2,
    "warmup": 1,
    "sampler_interval_s": 0.01,
    "generation": {"batch_sizes": [1, 3], "new_tokens": 6, "context_multiple": 2, "compile": None},
}


def test_generation_record_table_and_figure(trained_runs, tmp_path):
    recs = []
    for name, run in trained_runs.items():
        out = tmp_path / "toy" / f"{name}.json"
        rec = generation_for_run(run, run / "metrics.json", out, BENCH)
        assert json.loads(out.read_text()) == rec
        assert rec["kind"] == "generation" and rec["provenance"]["torch"] == torch.__version__
        assert rec["settings"]["batch_sizes"] == [1, 3] and rec["config_hash"]
        assert rec["state_bytes_per_sequence_declared"] > 0 and rec["params"] > 0
        recs.append(rec)
    gpt2, leaky = recs
    assert gpt2["own_path"] == "cache" and set(gpt2["paths"]) == {"cache", "recompute"}
    assert leaky["own_path"] == "recompute" and set(leaky["paths"]) == {"recompute"}
    cache = gpt2["paths"]["cache"]["state"]["b1"]
    assert cache["peak_at_position"] == L  # the cache holds the whole window, then the window slides
    assert cache["after_last_bytes"] == (L + 1) * 8  # beyond L only the tokens of the window (a view of L + 1)

    table = generation_report.generation_table(recs)
    row = table[table.model == "gpt2"].iloc[0]
    assert row["decoding"] == "cache" and row["beyond_L"] == "window of L slides"
    for col in (
        "gen_b1_tok_s",
        "gen_b3_tok_s",
        "gen_b1_recompute_tok_s",
        "gen_b1_speedup",
        "prefill_b1_ms",
        "step_ms_first",
        "step_ms_at_L",
        "step_ms_at_2L",
        "recompute_step_ms_at_L",
        "state_kb_peak",
    ):
        assert float(row[col]) > 0, col
    row = table[table.model == "linformer_noncausal"].iloc[0]
    assert row["decoding"] == "recompute window" and row["gen_b1_speedup"] == "– (its own path)"
    assert float(row["gen_b3_tok_s"]) > 0
    written = generation_report.build_generation_report(
        sorted((tmp_path / "toy").glob("*.json")), tmp_path / "tables", tmp_path / "figures"
    )
    assert [p.name for p in written["generation"]] == ["generation.csv", "generation.md", "generation.tex"]
    assert all(p.stat().st_size > 10_000 for p in written["figure"])


@torch.no_grad()
def test_state_bytes_of_sdgm_counts_its_atom_stream():
    """SDGM's decoding state holds the atom stream (sin, cos, S and one rotation step: 5 K x D fp32, shared by the
    batch, and the fingerprint by which it sees its parameters change: a strided sample of each of A, F, Phi, here all
    K x D of them) beside the last kernel_size - 1 embeddings; its parameters and compiled kernels are not state."""
    from sdgm.spectral.model import SDGM, SDGMConfig
    from sdgm.spectral.ops.stream import AtomStream

    m = SDGM(SDGMConfig(vocab_size=V, d_model=16, n_atoms=8, seq_len=L)).eval()
    state = m.init_decode_state(1)
    for t in range(3):
        _, state = m.decode_step(torch.tensor([t]), state)
    assert 8 * 16 <= AtomStream.FINGERPRINT_VALUES
    assert state_bytes(state) == (5 + 3) * 8 * 16 * 4 + state["emb"].untyped_storage().nbytes()  # emb: a view of k rows
