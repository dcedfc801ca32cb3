"""The on-device check of the Triton kernels ('auto' on CUDA), on a CPU: the kernels run under Triton's interpreter
(TRITON_INTERPRET=1, conftest.py), and 'auto' on a CPU is pointed at them (spectral.AUTO) so that the path CUDA
takes runs here. The failing check is made by patching the one kernel entry point (wrong values, an error)."""
import json
import logging

import pytest
import torch

from sdgm.spectral.ops import spectral
from sdgm.spectral.ops.spectral import check_kernels, decoder_record, resolve_impl

CPU = torch.device("cpu")
pytestmark = pytest.mark.needs("triton")


@pytest.fixture
def triton_auto(monkeypatch):
    """'auto' on a CPU behaves as on CUDA (Triton, after the check); a fresh process's caches."""
    monkeypatch.setitem(spectral.AUTO, "cpu", "triton")
    monkeypatch.setattr(spectral, "_kernel_checks", {})
    monkeypatch.setattr(spectral, "_resolutions", {})
    monkeypatch.setattr(spectral, "_announced", set())


@pytest.fixture
def wrong_kernels(monkeypatch):
    """The Triton entry point gives the right shape and dtype with wrong values (its atoms' phase shifted)."""
    from sdgm.spectral.ops import spectral_triton

    real = spectral_triton.triton_spectral_decode

    def shifted(c, amplitude, frequency, phase, positions, period):
        return real(c, amplitude, frequency, phase + 0.5, positions, period)

    monkeypatch.setattr(spectral_triton, "triton_spectral_decode", shifted)


def test_correct_kernels_pass_the_check():
    ok, why = check_kernels(CPU, "triton")
    assert ok, why
    assert "matched chunked on 3 problems" in why
    ok, why = check_kernels(CPU, "rotation")  # any implementation can be checked the same way
    assert ok, why


def test_wrong_values_fail_the_check_naming_what_differs(wrong_kernels):
    ok, why = check_kernels(CPU, "triton")
    assert not ok
    assert why.startswith("triton differs from chunked in output by") and "tolerance" in why and "B=3" in why


def test_auto_takes_chunked_when_the_check_fails_and_says_so_once(triton_auto, wrong_kernels, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="sdgm.spectral.ops.spectral")
    calls = []
    real = spectral.check_kernels
    monkeypatch.setattr(spectral, "check_kernels", lambda *a: calls.append(a) or real(*a))  # counts the checks
    assert [resolve_impl("auto", CPU) for _ in range(3)] == ["chunked"] * 3
    assert len(calls) == 1  # once per process and device
    lines = [r for r in caplog.records if "spectral decoder 'auto'" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "chunked (triton unavailable: the Triton kernels failed their on-device check: triton differs" in \
        lines[0].getMessage()
    (rec,) = decoder_record()
    assert rec["requested"] == "auto" and rec["used"] == "chunked" and rec["device"] == "cpu"
    assert "failed their on-device check" in rec["reason"]
    # the decoder still gives the definition's values
    c, A = torch.randn(2, 5, 3), torch.randn(3, 4)
    y = spectral.spectral_decode(c, A, A.abs(), A, torch.arange(5), 8.0)
    torch.testing.assert_close(y, spectral.spectral_decode(c, A, A.abs(), A, torch.arange(5), 8.0, impl="naive"),
                               rtol=1e-5, atol=1e-5)


def test_a_kernel_error_also_falls_back(triton_auto, monkeypatch):
    from sdgm.spectral.ops import spectral_triton

    def broken(*args):
        raise RuntimeError("PTX JIT compilation failed\nmore detail")

    monkeypatch.setattr(spectral_triton, "triton_spectral_decode", broken)
    assert resolve_impl("auto", CPU) == "chunked"
    (rec,) = decoder_record()
    assert rec["used"] == "chunked" and "triton failed to run: RuntimeError: PTX JIT compilation failed" in rec["reason"]
    assert "more detail" not in rec["reason"]


def test_auto_takes_triton_once_the_check_passes(triton_auto):
    assert resolve_impl("auto", CPU) == "triton"
    (rec,) = decoder_record()
    assert rec["used"] == "triton" and "matched chunked" in rec["reason"]


def test_metrics_and_benchmark_records_name_the_decoder_actually_used(triton_auto, wrong_kernels, grammar_tokens,
                                                                      tmp_path):
    """A training run whose 'auto' fell back: metrics.json (valid against its schema) says chunked and why; a
    benchmark record of this process says the same."""
    from helpers import REPO
    from sdgm.bench.fresh import fresh_throughput
    from sdgm.common.schema import check_metrics
    from sdgm.harness.config import load_config
    from sdgm.harness.experiment import run_training

    run_training(grammar_tokens, tmp_path / "run", tmp_path / "ck", tmp_path / "run" / "metrics.json", corpus="tiny",
                 experiment="sdgm", model="sdgm", model_overrides={"d_model": 16, "n_atoms": 8, "decoder": "auto"},
                 train_overrides={"seq_len": 16, "batch_size": 8, "epochs": 1, "max_steps": 3, "device": "cpu",
                                  "eval_max_windows": 4, "eval_every_steps": 3},
                 progress=False)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    check_metrics(metrics)
    used = [r for r in metrics["provenance"]["spectral_decoder"] if r["requested"] == "auto"]
    assert [r["used"] for r in used] == ["chunked"] and "failed their on-device check" in used[0]["reason"]

    rec = fresh_throughput(load_config(REPO / "config" / "quick.yaml"), "sdgm", 50, [{"decoder": "auto"}],
                           compile_modes=(False,), device="cpu", repeats=1, warmup=0)
    assert [r["used"] for r in rec["provenance"]["spectral_decoder"] if r["requested"] == "auto"] == ["chunked"]


def test_a_bad_decoder_entry_in_metrics_is_refused_by_the_schema():
    from sdgm.common.schema import SchemaViolation, check_metrics

    doc = {"schema": 1, "experiment": "x", "corpus": "c", "seed": 0, "metrics": {},
           "provenance": {"git_commit": None, "device": "cpu",
                          "spectral_decoder": [{"device": "cpu", "requested": "auto", "used": "fast", "reason": ""}]}}
    with pytest.raises(SchemaViolation, match="spectral_decoder"):
        check_metrics(doc)
