"""Measurement: sampler without a GPU, timing on a fake clock, tokens/s, slope fits, scaling benchmark, tables."""

import json
import math
import subprocess
import sys
import time

import pytest
import torch
import yaml
from helpers import REPO, train_tiny

from sdgm.bench.nvml import GPU_FIELDS, NvmlSampler
from sdgm.bench.scaling import (
    default_layers,
    device_rates,
    fit_loglog_slope,
    floor_of,
    scaling_benchmark,
    scaling_from_config,
)
from sdgm.bench.throughput import match_peak_flops, measure_throughput, peak_flops, throughput_for_run
from sdgm.common.missing import OUT_OF_MEMORY, na
from sdgm.common.timing import peak_call_memory, time_calls, tokens_per_second
from sdgm.harness.train import TrainConfig
from sdgm.models.registry import build_model
from sdgm.reporting import bench_report
from sdgm.reporting.protocol import record_protocol

ONCE = ["--repeats", "1", "--warmup", "0", "--device", "cpu"]  # a benchmark command timed once, on the CPU


# ---- sampler -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_sampler_records_rss_and_nulls_what_it_cannot_measure(device):
    """'cpu' is no GPU: every GPU field null with its reason. 'cuda' without a GPU: no CUDA device, no NVML driver
    (nvmlInit raises), same nulls; with a GPU, torch's peaks are measured and each NVML field is a number or has
    its reason."""
    with NvmlSampler(device, interval_s=0.01) as s:
        assert s._thread.is_alive()
        junk = torch.ones(2_000_000)  # 8 MB the RSS samples can see
        time.sleep(0.1)
    assert not s._thread.is_alive()
    r = s.result()
    json.dumps(r)  # JSON-able
    if device == "cuda" and torch.cuda.is_available():
        assert r["torch_max_memory_allocated_bytes"] >= 0 and r["torch_max_memory_reserved_bytes"] >= 0
        for f in GPU_FIELDS:
            assert (r[f] is not None) != (f in r["na"]), f
    else:
        for f in GPU_FIELDS:
            assert r[f] is None and r["na"][f], f
    if device == "cuda" and not torch.cuda.is_available():
        assert "NVML unavailable" in r["na"]["power_mean_w"]
        assert "no CUDA device" in r["na"]["torch_max_memory_allocated_bytes"]
    assert r["cpu_rss_peak_bytes"] > junk.numel() * 4
    assert r["cpu_maxrss_lifetime_bytes"] > 0
    assert r["n_samples"] >= 4 and r["duration_s"] >= 0.1


def test_sampler_result_only_after_the_block_and_positive_interval():
    s = NvmlSampler("cpu", interval_s=0.5)
    with pytest.raises(RuntimeError, match="after the with-block"):
        s.result()
    with pytest.raises(ValueError, match="interval_s"):
        NvmlSampler("cpu", interval_s=0)
    with pytest.raises(KeyError):  # an error inside the block propagates and still stops the thread
        with s:
            raise KeyError("boom")
    assert not s._thread.is_alive() and s.result()["n_samples"] >= 2


# ---- timing --------------------------------------------------------------------------------------------------------
class FakeClock:
    """A clock that moves only when told to (or by `tick` on every read)."""

    def __init__(self, tick: float = 0.0):
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_time_calls_excludes_warmup_and_takes_the_median():
    clock = FakeClock()
    durations = iter([50.0, 40.0, 3.0, 1.0, 2.0, 10.0, 0.5])  # 2 warmup calls, then 5 timed
    entered = []

    class Ctx:
        def __enter__(self):
            entered.append(clock.now)

        def __exit__(self, *exc):
            entered.append(clock.now)

    def fn():
        clock.now += next(durations)

    t = time_calls(fn, repeats=5, warmup=2, clock=clock, timed_context=Ctx())
    assert t["times_s"] == [3.0, 1.0, 2.0, 10.0, 0.5]
    assert t["median_s"] == 2.0 and t["min_s"] == 0.5 and t["max_s"] == 10.0
    assert entered == [90.0, 106.5]  # the context spans the timed calls only
    assert tokens_per_second(4096, t) == 2048.0
    with pytest.raises(ValueError):
        time_calls(fn, repeats=0, warmup=0)


def test_throughput_tokens_per_second_on_a_fake_clock():
    """Every timed call lasts exactly 0.5 s on the fake clock: tokens/s are the token counts times 2."""
    torch.manual_seed(0)
    V, L = 40, 16
    model = build_model("sdgm", V, d_model=8, n_atoms=4, seq_len=L)
    cfg = TrainConfig(seq_len=L, batch_size=4, device="cpu")
    res = measure_throughput(
        model,
        cfg,
        repeats=3,
        warmup=1,
        score_batch_size=6,
        generate_new_tokens=5,
        generate_batch_sizes=(1, 3),
        sampler_interval_s=0.01,
        clock=FakeClock(tick=0.5),
    )
    m = res["modes"]
    assert m["train"]["tokens_per_s"] == 4 * L * 2
    assert m["score"]["tokens_per_s"] == 6 * L * 2
    assert m["generate_b1"]["tokens_per_s"] == 5 * 2 and m["generate_b3"]["tokens_per_s"] == 15 * 2
    assert m["train"]["timing"]["times_s"] == [0.5, 0.5, 0.5]
    assert m["train"]["model_flops_per_token"] == 3 * model.flops_per_token()
    assert m["train"]["mfu"] is None and m["train"]["na"]["mfu"] == "no known peak for this CPU"
    assert m["train"]["energy_j_per_token"] is None and "no GPU" in m["train"]["na"]["energy_j_per_token"]
    assert m["train"]["memory"]["cpu_rss_peak_bytes"] > 0
    assert res["incremental_decoding"] is True and res["precision"] == "fp32"
    # every field of the protocol the verdicts compare is in the record (the device comes with its provenance)
    proto = record_protocol({**res, "provenance": {"device": "cpu"}}, "throughput", "modes.train")
    assert proto == {
        "device": "cpu",
        "precision": "fp32",
        "compile": False,
        "batch_size": 4,
        "seq_len": L,
        "steps": 3,
        "fresh_process": False,
    }


# ---- peaks and memory -------------------------------------------------------------------------------------------------
def test_peak_table():
    assert match_peak_flops("NVIDIA H100 80GB HBM3", "bf16") == (989e12, None)
    assert match_peak_flops("NVIDIA H200", "bf16") == (989e12, None)
    assert match_peak_flops("NVIDIA H100 PCIe", "fp32") == (51e12, None)
    value, why = match_peak_flops("NVIDIA H200 NVL", "bf16")
    assert value is None and "H200 NVL" in why
    assert peak_flops("cpu", "fp32") == (None, "no known peak for this CPU")


def test_cpu_peak_memory_is_the_peak_of_the_running_sum():
    def fn():
        a = torch.ones(1_000_000)  # 4 MB
        del a
        b = torch.ones(500_000)  # 2 MB, after a was freed: the peak stays 4 MB
        return b.sum()

    peak, why = peak_call_memory(fn, "cpu")
    assert why is None
    assert 4_000_000 <= peak < 4_100_000


def test_peak_rss_is_this_process_own_not_its_parents():
    """A job started by a large parent (Snakemake, pytest) must not report the parent's memory: getrusage's
    ru_maxrss in a forked child starts at the parent's peak; VmHWM starts afresh at exec."""
    ballast = bytearray(1_500_000_000)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: the parent's RSS is now > 1.5 GB
    code = "from sdgm.common.timing import peak_rss_bytes; print(peak_rss_bytes())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    child = int(out.stdout.strip().splitlines()[-1])
    assert 10e6 < child < 1.0e9, child  # the child imports torch, a few hundred MB: below the parent's 1.5 GB
    del ballast


# ---- slope fit ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("power", [1.0, 2.0, 1.5, 0.0])
def test_slope_of_an_exact_power_law_is_exact(power):
    L = [64, 128, 256, 512, 1024, 4096]
    t = [3e-6 * x**power for x in L]
    fit = fit_loglog_slope(L, t)
    assert fit["slope"] == pytest.approx(power, abs=1e-9)
    assert fit["intercept"] == pytest.approx(math.log(3e-6), abs=1e-9)
    assert fit["n_points"] == len(L)


def test_slope_fit_uses_lengths_from_min_length_only():
    L = [16, 32, 64, 128, 256]
    t = [max(64**2, x**2) for x in L]  # flat (overhead-bound) up to 64, quadratic from 64
    assert fit_loglog_slope(L, t, min_length=64)["slope"] == pytest.approx(2.0, abs=1e-9)
    assert fit_loglog_slope(L, t)["slope"] < 1.5
    none = fit_loglog_slope(L, t, min_length=256)
    assert none["slope"] is None and "fewer than 2" in none["na"]["slope"]
    assert fit_loglog_slope([64, 128, 256], [1.0, None, 4.0])["n_points"] == 2  # a missing point is skipped


# ---- scaling benchmark ------------------------------------------------------------------------------------------------
RATES = {"matmul_flops_per_s": 1e10, "sines_per_s": 1e8, "bytes_per_s": 1e10}
SIZES = dict(d_model=16, n_atoms=8, kernel_size=3, n_heads=2, linformer_k=4)  # every layer tiny
TINY = dict(SIZES, repeats=1, warmup=0, slope_min_length=8, device="cpu", rates=RATES, log=lambda *a: None)
LAYERS = ("sdgm_naive", "sdgm_chunked", "sdgm_rotation", "sdgm_triton", "attention", "linformer")


@pytest.mark.e2e  # long: every layer, both views, both modes (about 11 s)
def test_scaling_benchmark_on_a_tiny_range(tmp_path):
    rec = scaling_benchmark([8, 16, 32], 64, batch_lengths=[16, 64], batch_size=2, **TINY)
    rec = json.loads(json.dumps(rec))
    assert {(r["view"], r["model"], r["L"], r["mode"]) for r in rec["results"]} == {
        (v, m, L, mode)
        for v, lengths in (("tokens", (8, 16, 32)), ("batch", (16, 64)))
        for m in LAYERS
        for L in lengths
        for mode in ("forward", "forward_backward")
    }
    for r in rec["results"]:
        if r["model"] == "sdgm_triton":  # timed on CUDA only
            assert r["status"] == "skipped" and "CUDA" in r["reason"]
            continue
        assert r["status"] == "ok" and r["B"] == (64 // r["L"] if r["view"] == "tokens" else 2)
        assert r["time_per_sequence_s"] == pytest.approx(r["time_per_batch_s"] / r["B"])
        assert r["peak_mem_bytes"] > 0
        fl = r["floor"]
        assert fl["time_s"] == max(fl["parts_s"].values())
        assert fl["bound"] in ("flops", "sines", "bytes") + (("vector_flops",) if r["model"] == "sdgm_rotation" else ())
        assert r["over_floor"] == pytest.approx(r["time_per_batch_s"] / fl["time_s"])
    for view in ("tokens", "batch"):
        for model in ("sdgm_naive", "sdgm_chunked", "sdgm_rotation", "attention", "linformer"):
            for mode in ("forward", "forward_backward"):
                fits = rec["slopes"][view][model][mode]
                assert math.isfinite(fits["time"]["slope"]) and math.isfinite(fits["memory"]["slope"])
        assert rec["slopes"][view]["sdgm_triton"]["forward"]["time"]["slope"] is None
    # each SDGM implementation against attention, per view, length and mode
    assert len(rec["ratios"]) == 4 * 2 * (3 + 2)
    assert all(r["over_attention_time"] > 0 for r in rec["ratios"] if r["model"] != "sdgm_triton")
    assert "Linformer baseline trains" in rec["notes"]["linformer"] and "GPT2Attention" in rec["notes"]["attention"]
    assert rec["rates"] == RATES
    assert rec["provenance"]["git_commit"] is not None and len(rec["config_hash"]) == 12
    assert rec["memory_method"].startswith("torch.profiler")

    # tables and figure from this record (the bench_report rule's work, without throughput records)
    table = bench_report.scaling_table(rec)
    assert set(table["view"]) == {"tokens", "batch"} and "over_floor" in table and "floor_ms" in table
    naive = table[(table.model == "sdgm_naive") & (table["view"] == "tokens")]
    assert (naive["over_attention_time"] != "–").all()
    assert table[table.model == "sdgm_triton"]["ms_per_batch"].str.startswith("n/a (").all()
    slopes = bench_report.slopes_table(rec)
    assert {"time_slope", "memory_slope"} <= set(slopes.columns) and len(slopes) == 2 * 6 * 2
    paths = bench_report.write_table(table, tmp_path / "scaling", "x")
    assert all(p.stat().st_size > 100 for p in paths)
    png, pdf = bench_report.plot_scaling(rec, tmp_path / "scaling")
    assert png.stat().st_size > 10_000 and pdf.stat().st_size > 5_000


def test_scaling_command_runs_the_benchmark_alone_and_renders_it(tmp_path, capsys):
    """python -m sdgm.bench.scaling: the floor table without arguments; with --configfile and --out the record,
    tables and figure of rule scaling, the flags overriding the config's lengths, batch and decoders."""
    from sdgm.bench.scaling.cli import main

    assert main([]) == 0
    assert "| tokens | 8,192 | 8 | 0.895 | sines | 0.339 | vector_flops |" in capsys.readouterr().out  # as in the docs
    flags = "--lengths 16,32 --tokens-per-batch 64 --batch-lengths 32 --decoders chunked"
    assert main(["--configfile", str(REPO / "config/quick.yaml"), "--out", str(tmp_path), *flags.split(), *ONCE]) == 0
    rec = json.loads((tmp_path / "bench/scaling.json").read_text())
    st = rec["settings"]
    assert (st["lengths"], st["tokens_per_batch"], st["batch_lengths"], st["repeats"], st["warmup"]) == (
        [16, 32],
        64,
        [32],
        1,
        0,
    )
    assert st["models"] == ["sdgm_chunked", "attention", "linformer"] and rec["device"] == "cpu"
    for name in ("tables/scaling.md", "tables/scaling_slopes.csv", "figures/scaling.png"):
        assert (tmp_path / name).stat().st_size > 100, name
    for bad in (["--out", str(tmp_path)], ["--configfile", "config/quick.yaml"], ["--lengths", "a,b"]):
        with pytest.raises(SystemExit) as e:
            main(bad)
        assert e.value.code == 2


def test_untrained_throughput_command_times_each_variant_and_refuses_bad_options(tmp_path):
    """python -m sdgm.bench.untrained: the training step of a fresh model per option variant, with provenance."""
    from sdgm.bench.untrained import main, parse_variant

    assert parse_variant("decoder=naive,n_atoms=16") == {"decoder": "naive", "n_atoms": 16}
    out = tmp_path / "fresh.json"
    flags = "--model sdgm --vocab-size 50 --variant decoder=chunked --variant decoder=naive --compile eager"
    assert main(["--configfile", str(REPO / "config/quick.yaml"), *flags.split(), *ONCE, "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert [(c["options"], c["compile"]) for c in rec["cases"]] == [
        ({"decoder": "chunked"}, False),
        ({"decoder": "naive"}, False),
    ]
    assert all(c["train_tokens_per_s"] > 0 and c["score_tokens_per_s"] > 0 for c in rec["cases"])
    quick = yaml.safe_load((REPO / "config/quick.yaml").read_text())
    assert rec["settings"]["model_options"]["seq_len"] == quick["train"]["seq_len"]
    assert rec["settings"]["train"]["batch_size"] == quick["train"]["batch_size"] and rec["provenance"]["git_commit"]
    for bad in (
        ["--model", "nosuch"],
        ["--model", "sdgm", "--variant", "colour=red"],
        ["--model", "sdgm", "--variant", "decoder=bogus"],
        ["--model", "sdgm", "--variant", "decoder"],
    ):
        with pytest.raises(SystemExit) as e:
            main(["--configfile", str(REPO / "config/quick.yaml"), "--out", str(tmp_path / "x.json"), *bad])
        assert e.value.code == 2, bad
    assert not (tmp_path / "x.json").exists()


def test_floor_picks_the_bound_that_takes_longest():
    fl = floor_of({"flops": 4e10, "sines": 1e8, "bytes": 5e10}, RATES)
    assert fl["parts_s"] == {"flops": 4.0, "sines": 1.0, "bytes": 5.0}
    assert (fl["time_s"], fl["bound"]) == (5.0, "bytes")


def test_device_rates_on_this_cpu_are_positive_and_say_how():
    r = device_rates("cpu")
    assert r["matmul_flops_per_s"] > 1e8 and r["sines_per_s"] > 1e6 and r["bytes_per_s"] > 1e8
    assert "torch.sin" in r["sine_method"] and "copy" in r["bandwidth_method"]


@pytest.mark.e2e  # long: memory of both decoders up to L = 2048 (about 10 s)
def test_chunked_decoder_memory_grows_slower_than_naive():
    """At a fixed batch the naive decoder holds L x K x D atoms; the chunked one a block of them."""
    kw = {**TINY, "d_model": 128, "n_atoms": 128}  # chunked blocks of 256 positions
    # the two SDGM layers only (attention and Linformer at these lengths took most of the time, and are not
    # asserted on); at L = 2048 the naive decoder holds 8 blocks' worth of atoms: the chunked one's peak measured
    # about 1/6 of its
    decoders = ("naive", "chunked")
    layers = {
        name: make
        for name, make in default_layers(128, 128, 3, 2, 4, False, decoders).items()
        if name.startswith("sdgm_")
    }
    rec = scaling_benchmark(
        [64, 128], 128, batch_lengths=[512, 2048], batch_size=1, decoders=decoders, layers=layers, **kw
    )
    assert set(rec["settings"]["models"]) == {"sdgm_naive", "sdgm_chunked"}
    mem = {
        (r["model"], r["L"]): r["peak_mem_bytes"]
        for r in rec["results"]
        if r["view"] == "batch" and r["mode"] == "forward_backward" and r["model"].startswith("sdgm")
    }
    assert mem[("sdgm_chunked", 2048)] < mem[("sdgm_naive", 2048)] / 5
    assert rec["slopes"]["batch"]["sdgm_naive"]["forward_backward"]["memory"]["slope"] > 0.9


def test_memory_cap_turns_cases_into_oom_entries(tmp_path):
    bench = {
        "repeats": 1,
        "warmup": 0,
        "sampler_interval_s": 0.05,
        "energy_min_s": 0.1,
        "scaling": {
            "lengths": [8, 16],
            "tokens_per_batch": 32,
            "slope_min_length": 8,
            "d_model": 16,
            "n_atoms": 8,
            "kernel_size": 3,
            "n_heads": 2,
            "linformer_k": 4,
            "sdgm_decoders": ["chunked"],
            "batch_view": {"batch_size": 1, "lengths": [8, 16]},
        },
    }
    out = tmp_path / "scaling.json"
    scaling_from_config(bench, {"device": "cpu"}, out, memory_cap_bytes=1, rates=RATES, log=lambda *a: None)
    rec = json.loads(out.read_text())
    assert rec["settings"]["memory_cap_bytes"] == 1 and rec["settings"]["models"] == [
        "sdgm_chunked",
        "attention",
        "linformer",
    ]
    first = {(r["view"], r["model"], r["mode"]): r for r in reversed(rec["results"])}  # each one's shortest L
    assert all(r["status"] == "oom" and "memory cap" in r["error"] for r in first.values())
    # after an OOM the longer lengths of that layer are not tried
    assert all(r["status"] == "skipped" and "shorter length" in r["reason"] for r in rec["results"] if r["L"] == 16)
    assert all(
        f["time"]["slope"] is None
        for models in rec["slopes"].values()
        for modes in models.values()
        for f in modes.values()
    )
    assert all(
        r["over_attention_time"] is None and "oom" in r["na"]["over_attention_time"]
        for r in rec["ratios"]
        if r["L"] == 8
    )
    table = bench_report.scaling_table(rec)
    assert set(table["status"]) == {"oom", "skipped"}
    assert table["ms_per_sequence"].str.startswith("n/a (").all()
    bench_report.plot_scaling(rec, tmp_path / "scaling")  # an all-OOM record still plots


class Hungry(torch.nn.Module):
    """A layer that runs out of memory from L = 16 on, as a real allocator would say it."""

    def __init__(self, L):
        super().__init__()
        self.L = L
        self.w = torch.nn.Parameter(torch.ones(16))

    def forward(self, x):
        if self.L >= 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 TiB")
        return x * self.w


def test_a_real_out_of_memory_is_recorded_not_raised():
    rec = scaling_benchmark([8, 16, 32], 64, layers={"hungry": Hungry}, **TINY)
    status = {(r["L"], r["mode"]): r["status"] for r in rec["results"]}
    assert status == {
        (8, "forward"): "ok",
        (8, "forward_backward"): "ok",
        (16, "forward"): "oom",
        (16, "forward_backward"): "oom",
        (32, "forward"): "skipped",
        (32, "forward_backward"): "skipped",
    }
    ok = next(r for r in rec["results"] if r["status"] == "ok")
    assert "no cost model" in ok["na"]["floor"] and "floor" not in ok  # a layer without cost(): no floor, a reason
    assert rec["slopes"]["tokens"]["hungry"]["forward"]["time"]["slope"] is None
    assert rec["ratios"] == []  # no attention in this run


def test_predicted_peak_extrapolates_log_log_with_a_clamped_exponent():
    from sdgm.bench.scaling import predicted_peak

    assert predicted_peak([], 64, 1) is None
    assert predicted_peak([(8, 1, 100)], 16, 1) == (400, "quadratic in L from L = 8")  # one point: the worst case
    assert predicted_peak([(8, 1, 100), (16, 1, 200)], 64, 1)[0] == 800  # linear
    assert predicted_peak([(8, 1, 100), (16, 1, 150)], 64, 1)[0] == 600  # flatter than linear: linear assumed
    assert predicted_peak([(8, 1, 100), (16, 1, 1600)], 32, 1)[0] == 6400  # steeper than quadratic: quadratic
    assert "B * L^1.00 from L = 8 and 16" in predicted_peak([(8, 1, 100), (16, 1, 200)], 64, 1)[1]
    # fixed tokens per batch (B * L constant): linear per sequence is flat per batch, quadratic is linear
    assert predicted_peak([(8, 8, 100), (16, 4, 100)], 64, 1)[0] == 100
    assert predicted_peak([(8, 8, 100)], 64, 1)[0] == 800


class Growing(torch.nn.Module):
    """Holds an (L, L) buffer per call: its peak grows quadratically."""

    def __init__(self, L):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return x * self.w + torch.ones(x.shape[1], x.shape[1]).sum() * 0


def test_a_cpu_case_predicted_past_the_host_memory_is_not_run(monkeypatch):
    """A CPU allocator does not refuse: the case would get the process killed. The benchmark extrapolates each
    layer's measured peaks and records a case that would not fit as oom (predicted) without running it."""
    from sdgm.bench.scaling import measure

    runs = []
    real_case = measure._case
    monkeypatch.setattr(measure, "_case", lambda f, L, *a: runs.append(L) or real_case(f, L, *a))
    monkeypatch.setattr(measure, "available_host_memory", lambda: 3 * 64 * 64 * 4)  # room for (64, 64) fp32 x 3
    rec = scaling_benchmark([], 1, batch_lengths=[32, 64, 256, 512], layers={"growing": Growing}, **TINY)
    by_l = {r["L"]: r for r in rec["results"] if r["mode"] == "forward"}
    assert by_l[32]["status"] == by_l[64]["status"] == "ok"
    assert by_l[256]["status"] == "oom" and by_l[256]["predicted"] is True
    assert "predicted peak" in by_l[256]["error"] and "from L = 32 and 64" in by_l[256]["error"]
    assert by_l[512]["status"] == "skipped"
    assert 256 not in runs and 512 not in runs


# ---- throughput of a trained run, and its table -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, toy_tokens):
    root = tmp_path_factory.mktemp("tp")
    train_tiny(
        toy_tokens, root, "sdgm", "toy", {"d_model": 8, "n_atoms": 4}, seq_len=16, batch_size=4, max_steps=2, epochs=1
    )
    return root / "run"


def test_throughput_record_of_a_trained_run(trained_run, tmp_path):
    bench = {
        "repeats": 2,
        "warmup": 1,
        "sampler_interval_s": 0.01,
        "energy_min_s": 0.1,
        "throughput": {"score_batch_size": 4, "generate_new_tokens": 20, "generate_batch_sizes": [1, 2]},
    }
    out = tmp_path / "toy" / "sdgm-s0.json"
    rec = throughput_for_run(trained_run, trained_run / "metrics.json", out, bench)
    assert json.loads(out.read_text()) == rec
    m, na = rec["metrics"], rec["na"]
    for key in ("train_tokens_per_s", "score_tokens_per_s", "generate_b1_tokens_per_s", "generate_b2_tokens_per_s"):
        assert m[key] > 0, key
    assert m["mfu_train"] is None and na["mfu_train"] == "no known peak for this CPU"
    assert m["train_peak_gpu_mem_bytes"] is None and "no GPU" in na["train_peak_gpu_mem_bytes"]
    assert m["train_peak_rss_bytes"] > 0 and m["flops_per_token"] > 0
    assert rec["run_id"] == "toy/run" and rec["provenance"]["torch"] == torch.__version__
    assert rec["modes"]["train"]["timing"]["repeats"] == 2 and len(rec["modes"]["score"]["timing"]["times_s"]) == 2

    table = bench_report.throughput_table([rec])
    row = table.iloc[0]
    assert row["mfu_train"] == "n/a (no known peak for this CPU)" and row["decoding"] == "cache"
    assert float(row["train_tok_s"]) > 0
    assert not any(str(v) in ("0", "0.0", "") for k, v in row.items() if k != "seed")


def test_bench_report_refuses_a_foreign_file(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"schema": 2, "kind": "scaling"}))
    with pytest.raises(bench_report.BenchReportError, match="throughput"):
        bench_report.load_record(p, "throughput")
    with pytest.raises(bench_report.BenchReportError, match="provenance"):
        bench_report.load_record(p, "scaling")
    p.write_text(json.dumps({"schema": 1, "kind": "scaling"}))  # before the floors and the two views
    with pytest.raises(bench_report.BenchReportError, match="schema-2 'scaling' record .an older record"):
        bench_report.load_record(p, "scaling")


def test_energy_per_token_refuses_a_counter_that_did_not_advance():
    """NVML's energy counter moves in coarse steps: 0 J over a window is no reading, never 0 J per token."""
    from sdgm.bench.throughput import energy_per_token

    assert energy_per_token(6.0, calls=3, window_s=2.1, tokens_per_call=4096) == (6.0 / (3 * 4096), None)
    value, why = energy_per_token(0.0, calls=3, window_s=0.027, tokens_per_call=4096)
    assert value is None and "did not advance" in why and "0.027" in why
    assert energy_per_token(None, calls=1, window_s=2.0, tokens_per_call=8) == (None, "no energy reading")


def test_table_cells_shorten_cuda_out_of_memory_messages():
    msg = (
        "CUDA out of memory. Tried to allocate 32.00 GiB. GPU 0 has a total capacity of 79.18 GiB of which "
        "14.17 GiB is free. Including non-PyTorch memory, this process has 65.00 GiB memory in use."
    )
    assert bench_report._fmt(None, 3, msg) == "n/a (out of memory, allocating 32.00 GiB)"
    assert bench_report._fmt(None, 3, OUT_OF_MEMORY) == na(OUT_OF_MEMORY)
    assert bench_report._fmt(None, 3, "no GPU") == "n/a (no GPU)"


def test_scaling_times_the_mixers_the_baselines_train_with():
    """The attention and Linformer rows time the baselines' own layers, and give what those layers give inside the
    trained models."""
    from transformers.models.gpt2.modeling_gpt2 import GPT2Attention as HFAttention

    from baselines.linformer import CausalLinformerAttention
    from sdgm.bench.scaling import default_layers

    torch.manual_seed(0)
    layers = default_layers(16, 8, 3, 2, 4, False, ("chunked",), linformer_block_size=4)
    attn, lin = layers["attention"](12), layers["linformer"](12)
    assert isinstance(attn.layer.attn, HFAttention) and isinstance(lin.layer, CausalLinformerAttention)
    gpt = build_model("gpt2", 11, seq_len=12, n_layer=1, n_embd=16, n_head=2, dropout=0.0).eval()
    attn.layer.attn.load_state_dict(gpt.gpt.transformer.h[0].attn.state_dict())
    x = torch.randn(2, 12, 16)
    assert torch.allclose(attn(x), gpt.gpt.transformer.h[0].attn(x)[0])
    # causal: a change at position 7 leaves every earlier output alone, in both layers
    y = x.clone()
    y[:, 7] += 1.0
    for layer in (attn, lin):
        assert torch.equal(layer(x)[:, :7], layer(y)[:, :7]) and not torch.equal(layer(x)[:, 7:], layer(y)[:, 7:])
