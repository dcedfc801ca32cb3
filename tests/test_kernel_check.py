"""The on-device check of the Triton kernels ('auto' on CUDA), on a CPU: the kernels run under Triton's interpreter
(TRITON_INTERPRET=1, conftest.py), and 'auto' on a CPU is pointed at them (dispatch.AUTO) so that the path CUDA
takes runs here. The failing check is made by patching the one kernel entry point (wrong values, an error)."""

import json
import logging
import sys

import pytest
import torch
from helpers import train_tiny

from sdgm.spectral.ops import dispatch
from sdgm.spectral.ops.dispatch import (
    check_kernels,
    check_kernels_for_run,
    check_kernels_in_child,
    decoder_record,
    resolve_impl,
    run_check_cases,
)

CPU = torch.device("cpu")
pytestmark = pytest.mark.needs("triton")


@pytest.fixture
def triton_auto(monkeypatch):
    """'auto' on a CPU behaves as on CUDA (Triton, after the check); a fresh process's caches."""
    monkeypatch.setitem(dispatch.AUTO, "cpu", "triton")
    monkeypatch.setattr(dispatch, "_kernel_checks", {})
    monkeypatch.setattr(dispatch, "_resolutions", {})
    monkeypatch.setattr(dispatch, "_announced", set())


@pytest.fixture
def wrong_kernels(monkeypatch):
    """The Triton entry point gives the right shape and dtype with wrong values (its atoms' phase shifted)."""
    from sdgm.spectral.ops import rotation_triton

    real = rotation_triton.triton_spectral_decode

    def shifted(c, amplitude, frequency, phase, positions, period):
        return real(c, amplitude, frequency, phase + 0.5, positions, period)

    monkeypatch.setattr(rotation_triton, "triton_spectral_decode", shifted)


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
    caplog.set_level(logging.INFO, logger="sdgm.spectral.ops.dispatch")
    calls = []
    real = dispatch.check_kernels
    monkeypatch.setattr(dispatch, "check_kernels", lambda *a: calls.append(a) or real(*a))  # counts the checks
    assert [resolve_impl("auto", CPU) for _ in range(3)] == ["chunked"] * 3
    assert len(calls) == 1  # once per process and device
    lines = [r for r in caplog.records if "spectral decoder 'auto'" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert (
        "chunked (triton unavailable: the Triton kernels failed their on-device check: triton differs"
        in lines[0].getMessage()
    )
    (rec,) = decoder_record()
    assert rec["requested"] == "auto" and rec["used"] == "chunked" and rec["device"] == "cpu"
    assert "failed their on-device check" in rec["reason"]
    # the decoder still gives the definition's values
    c, A = torch.randn(2, 5, 3), torch.randn(3, 4)
    y = dispatch.spectral_decode(c, A, A.abs(), A, torch.arange(5), 8.0)
    torch.testing.assert_close(
        y, dispatch.spectral_decode(c, A, A.abs(), A, torch.arange(5), 8.0, impl="naive"), rtol=1e-5, atol=1e-5
    )


def test_a_kernel_error_also_falls_back(triton_auto, monkeypatch):
    from sdgm.spectral.ops import rotation_triton

    def broken(*args):
        raise RuntimeError("PTX JIT compilation failed\nmore detail")

    monkeypatch.setattr(rotation_triton, "triton_spectral_decode", broken)
    assert resolve_impl("auto", CPU) == "chunked"
    (rec,) = decoder_record()
    assert (
        rec["used"] == "chunked"
        and ("triton failed to run at B=3, L=96, K=16, D=24, bfloat16: RuntimeError: PTX JIT compilation failed")
        in rec["reason"]
    )
    assert "more detail" not in rec["reason"]


def test_auto_takes_triton_once_the_check_passes(triton_auto):
    assert resolve_impl("auto", CPU) == "triton"
    (rec,) = decoder_record()
    assert rec["used"] == "triton" and "matched chunked" in rec["reason"]


def test_metrics_and_benchmark_records_name_the_decoder_actually_used(
    triton_auto, wrong_kernels, grammar_tokens, tmp_path
):
    """A training run whose 'auto' fell back: metrics.json (valid against its schema) says chunked and why; a
    benchmark record of this process says the same."""
    from helpers import REPO

    from sdgm.bench.untrained import untrained_throughput
    from sdgm.common.schema import check_metrics
    from sdgm.harness.config import load_config

    train = {"seq_len": 16, "batch_size": 8, "epochs": 1, "max_steps": 3, "eval_max_windows": 4, "eval_every_steps": 3}
    train_tiny(grammar_tokens, tmp_path, "sdgm", "tiny", {"d_model": 16, "n_atoms": 8, "decoder": "auto"}, **train)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    check_metrics(metrics)
    used = [r for r in metrics["provenance"]["spectral_decoder"] if r["requested"] == "auto"]
    assert [r["used"] for r in used] == ["chunked"] and "failed their on-device check" in used[0]["reason"]

    rec = untrained_throughput(
        load_config(REPO / "config" / "quick.yaml"),
        "sdgm",
        50,
        [{"decoder": "auto"}],
        compile_modes=(False,),
        device="cpu",
        repeats=1,
        warmup=0,
    )
    assert [r["used"] for r in rec["provenance"]["spectral_decoder"] if r["requested"] == "auto"] == ["chunked"]


def test_a_bad_decoder_entry_in_metrics_is_refused_by_the_schema():
    from sdgm.common.schema import SchemaViolation, check_metrics

    doc = {
        "schema": 1,
        "experiment": "x",
        "corpus": "c",
        "seed": 0,
        "metrics": {},
        "provenance": {
            "git_commit": None,
            "device": "cpu",
            "spectral_decoder": [{"device": "cpu", "requested": "auto", "used": "fast", "reason": ""}],
        },
    }
    with pytest.raises(SchemaViolation, match="spectral_decoder"):
        check_metrics(doc)


# ---- the check at a run's sizes, in a child process ----------------------------------------------------------------
def test_which_launches_a_run_makes_at_its_sizes():
    """launch_configs (what the dispatch of rotation_triton launches) for the paper's K = 256, D = 512 on a GPU: the
    rotation mix kernels for bf16 batches up to 16 (R = 256 forward, 512 for dC), the direct kernel above 16, for
    fp32 operands, for rows past 512 and for positions without a constant step; the parameter kernel's tile by B."""
    from sdgm.spectral.ops.rotation_triton import launch_configs

    def kinds(*args, **kw):
        return [
            (
                c["pass"],
                c["kernel"],
                c["meta"].get("R_PAD", c["meta"].get("BLOCK_R")),
                c["meta"]["BLOCK_B"],
                c["meta"]["num_warps"],
            )
            for c in launch_configs(*args, interpreting=False, **kw)
        ]

    assert kinds(3, 128, 256, 512, torch.bfloat16) == [
        ("forward", "mix_rot", 256, 16, 4),
        ("dC", "mix_rot", 512, 16, 8),
        ("params", "param", None, 16, 8),
    ]
    assert kinds(32, 128, 256, 512, torch.bfloat16) == [
        ("forward", "mix", 32, 32, 8),
        ("dC", "mix", 32, 32, 8),
        ("params", "param", None, 64, 8),
    ]
    assert [k[1] for k in kinds(3, 128, 256, 512, torch.float32)] == ["mix", "mix", "param"]  # fp32 spills mix_rot
    assert [k[1] for k in kinds(1, 64, 256, 1024, torch.bfloat16)] == ["mix_rot", "mix", "param"]  # dC: R = 1024
    uneven = launch_configs(3, 128, 256, 512, torch.bfloat16, uniform=False, interpreting=False)
    assert [c["kernel"] for c in uneven] == ["mix", "mix", "param"] and not uneven[2]["meta"]["ROTATE"]
    uneven64 = launch_configs(64, 128, 256, 512, torch.bfloat16, uniform=False, interpreting=False)
    assert uneven64[2]["meta"]["BLOCK_B"] == 32  # the direct parameter kernel's tile above 16
    big = launch_configs(1, 1 << 20, 256, 512, torch.bfloat16, interpreting=False)
    assert big[0]["grid"] == (1 << 15, 32, 1) and big[0]["t_per"] == 32  # an anchor of positions per program
    assert launch_configs(3, 128, 256, 512, torch.float32, interpreting=True)[0]["kernel"] == "mix_rot"
    assert run_check_cases([(32, 128, 256, 512, torch.bfloat16)])[-1] == (32, 128, 256, 512, 0, torch.bfloat16)


@pytest.mark.e2e  # two fresh processes, about 20 s
def test_the_check_in_a_child_process_passes_and_reports_its_problems():
    """The real child (python -m sdgm.spectral.ops.kernel_check; Triton under the interpreter): a run's size, and a
    problem large enough to be checked at a sample of positions."""
    ok, why = check_kernels_in_child(CPU, "triton", run_check_cases([(2, 40, 16, 24, torch.bfloat16)])[-1:])
    assert ok and "triton matched chunked on 1 problems" in why, why
    # above CHECK_FULL_ELEMENTS (the rotation decoder: the interpreter would take minutes)
    ok, why = check_kernels_in_child(CPU, "rotation", ((1, 70000, 16, 16, 0, torch.float32),))
    assert ok and "rotation matched chunked on 1 problems" in why, why


@pytest.mark.parametrize(
    "code,expected",
    [
        ("import os; os.abort()", "was killed by signal 6"),  # as a CUDA fault kills the process
        ("import sys; sys.exit('illegal memory access')", "exited with code 1 after"),
        ("print('no json')", "gave no answer"),
        ("import time; time.sleep(60)", "ran past 2 s"),
    ],
)
def test_a_child_that_dies_or_hangs_fails_the_check_and_says_why(code, expected):
    ok, why = check_kernels_in_child(
        CPU, "triton", CHECK_CASES_SMALL, timeout_s=2, command=[sys.executable, "-c", code]
    )
    assert not ok and expected in why, why


CHECK_CASES_SMALL = ((2, 40, 16, 24, 0, torch.float32),)


def test_a_crash_at_the_runs_sizes_sends_auto_to_chunked_with_the_reason(triton_auto, monkeypatch):
    """check_kernels_for_run with the check in a child (as on CUDA) whose process dies: 'auto' takes chunked and the
    record says why; the run's sizes reach the child."""
    seen = []
    monkeypatch.setattr(dispatch, "CHECK_IN_CHILD", {"cuda", "cpu"})
    monkeypatch.setattr(dispatch, "_run_sizes", [])
    monkeypatch.setattr(
        dispatch,
        "CHECK_CHILD_COMMAND",
        [sys.executable, "-c", "import os, sys; sys.stderr.write(sys.stdin.read() + '\\n'); os.abort()"],
    )
    real = dispatch.check_kernels_in_child
    monkeypatch.setattr(dispatch, "check_kernels_in_child", lambda *a, **kw: seen.append(a) or real(*a, **kw))
    ok, why = check_kernels_for_run(CPU, [(32, 128, 256, 512, torch.bfloat16)])
    assert not ok and "killed by signal 6" in why and '[32, 128, 256, 512, 0, "bfloat16"]' in why, why
    assert seen[0][2][-1] == (32, 128, 256, 512, 0, torch.bfloat16)
    assert resolve_impl("auto", CPU) == "chunked"
    (rec,) = decoder_record()
    assert (
        rec["used"] == "chunked"
        and "failed their on-device check: the kernel check's child process was killed" in rec["reason"]
    )


def test_a_failure_at_the_runs_sizes_only_is_found_in_process(triton_auto, monkeypatch):
    """A kernel that fails only at the run's size (a configuration the small problems do not compile) fails the
    check, naming that size."""
    from sdgm.spectral.ops import rotation_triton

    monkeypatch.setattr(dispatch, "_run_sizes", [])
    real = rotation_triton.triton_spectral_decode

    def fails_at_l_50(c, *args):
        if c.shape[1] == 50:
            raise RuntimeError("out of resource: shared memory")
        return real(c, *args)

    monkeypatch.setattr(rotation_triton, "triton_spectral_decode", fails_at_l_50)
    assert resolve_impl("auto", CPU) == "triton"  # the small problems pass
    ok, why = check_kernels_for_run(CPU, [(4, 50, 16, 24, torch.float32)])
    assert not ok and "at B=4, L=50, K=16, D=24, float32: RuntimeError: out of resource" in why, why
    assert resolve_impl("auto", CPU) == "chunked"
    (rec,) = decoder_record()
    assert "at B=4, L=50" in rec["reason"]


def test_a_training_run_checks_the_kernels_at_its_shapes(grammar_tokens, tmp_path, monkeypatch):
    """The trainer hands SDGM its batch shapes before the first step (training, evaluation, B = 1); the model checks
    the kernels at them on CUDA with 'auto' only (here the check itself is recorded, not run)."""
    from helpers import SMALL

    from sdgm.data.tokens import load_tokens
    from sdgm.harness.train import TrainConfig, Trainer
    from sdgm.models.registry import build_model
    from sdgm.spectral import model as sdgm_model

    asked = []
    monkeypatch.setattr(sdgm_model, "check_kernels_for_run", lambda device, sizes: asked.append((device, sizes)))
    splits, vocab = load_tokens(grammar_tokens)
    m = build_model("sdgm", len(vocab), seq_len=16, **SMALL["sdgm"])
    shapes = []
    real = m.check_decoder_for_run
    monkeypatch.setattr(m, "check_decoder_for_run", lambda s, d, t: shapes.append((set(s), t)) or real(s, d, t))
    Trainer(
        m,
        splits["train"],
        splits["valid"],
        TrainConfig(seq_len=16, batch_size=8, eval_batch_size=4, device="cpu"),
        tmp_path,
        progress=False,
    )
    assert shapes == [({(8, 16), (4, 16), (1, 16)}, torch.float32)] and asked == []  # on a CPU: nothing to check
    K, D = m.cfg.n_atoms, m.cfg.d_model
    m.check_decoder_for_run([(8, 16)], "cuda", torch.bfloat16)
    assert asked == [(torch.device("cuda"), [(8, 16, K, D, torch.bfloat16)])]
    m.cfg.decoder = "chunked"
    assert m.check_decoder_for_run([(8, 16)], "cuda", torch.bfloat16) is None and len(asked) == 1
