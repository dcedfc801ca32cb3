"""The GPU tier: what only a CUDA device can show, in under 3 minutes on one H100 (`python -m pytest -m gpu`).

Every model's training step with the trainer's fast settings (bf16 autocast, fused optimizer, data on the device)
and its checkpoint/resume; each model's decode_step against its forward; the Triton kernels against the chunked op
in fp32 and bf16 (values and all four gradients; B < 16, B = 1 at L = 65,536, position offsets) and the on-device
kernel check, also at the paper's sizes in a child process; the NVML sampler; torch.compile of SDGM with the Triton
op inside; DDP with NCCL at world size one; one tiny campaign wave. Without CUDA every test here is skipped with
its reason (SDGM_REQUIRE_GPU=1: failed).
`python -m sdgm.campaign.window` runs this tier first in a GPU window (docs/campaign.md).
"""

import json
import math
import time

import pytest
import torch
import yaml
from helpers import REPO, SMALL, random_ids

from sdgm.models.registry import MODELS, build_model

pytestmark = pytest.mark.gpu

CUDA = torch.device("cuda")
V, L = 50, 12


# ---- training, checkpoint and resume ------------------------------------------------------------------------------
def trainer(name, tokens, ckpt_dir, **train):
    from sdgm.data.tokens import load_tokens
    from sdgm.harness.train import TrainConfig, Trainer

    splits, vocab = load_tokens(tokens)
    torch.manual_seed(0)
    model = build_model(
        name, len(vocab), seq_len=16, **{**SMALL[name], **({"mem_len": 16} if name == "transformer_xl" else {})}
    )
    cfg = TrainConfig(
        **{
            "seq_len": 16,
            "batch_size": 8,
            "epochs": 1,
            "max_steps": 4,
            "lr": 3e-3,
            "eval_every_steps": 4,
            "eval_max_windows": 4,
            "checkpoint_every_steps": 2,
            "log_every_steps": 2,
            "device": "cuda",
            **train,
        }
    )
    return Trainer(model, splits["train"], splits["valid"], cfg, ckpt_dir, progress=False)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_on_cuda_with_the_fast_settings_and_resumes(name, grammar_tokens, tmp_path):
    from sdgm.harness.train import autocast_dtype

    tr = trainer(name, grammar_tokens, tmp_path)
    assert autocast_dtype(tr.cfg, tr.device) == torch.bfloat16  # precision auto on CUDA
    assert all(g.get("fused") for g in tr.opt.param_groups), "the optimizer is not fused on CUDA"
    assert tr.train_ids.device.type == "cuda"
    st = tr.fit()
    assert st.step == 4 and all(math.isfinite(p["ppl"]) for p in st.history["val"])
    assert all(p.device.type == "cuda" and torch.isfinite(p).all() for p in tr.model.parameters())
    again = trainer(name, grammar_tokens, tmp_path)
    assert again.try_resume() and again.state.step == st.step
    for (k, a), b in zip(tr.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), f"{name}: {k} differs after resume"


# ---- incremental decoding on the device -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(MODELS))
@torch.no_grad()
def test_decode_step_matches_the_forward_on_cuda(name):
    torch.manual_seed(0)
    m = build_model(name, V, seq_len=L, **{**SMALL[name], **({"mem_len": L} if name == "transformer_xl" else {})})
    m = m.to(CUDA).eval()
    idx = random_ids(V, 3, L).to(CUDA)
    state = m.init_decode_state(3)
    for t in range(L):
        logits, state = m.decode_step(idx[:, t], state)
        # cuDNN's TF32 convolutions and the GPU's reductions: agreement to about 1e-3, not bit for bit
        torch.testing.assert_close(logits, m(idx[:, : t + 1])[:, -1], rtol=2e-3, atol=2e-3, msg=f"{name} at {t}")


# ---- the Triton kernels against the chunked op ---------------------------------------------------------------------
KERNEL_CASES = [  # B, L, K, D, first position
    (3, 300, 64, 100, 5),  # B < 16: the rotation kernels
    (15, 1000, 256, 512, 0),  # the paper's K and D
    (17, 257, 64, 96, 0),  # B > 16: the direct kernel
    (1, 65536, 64, 128, 0),  # B = 1 at L = 65,536
    (2, 512, 32, 64, 10**6),  # positions far from 0 (decoding past a long prefix)
]
TOLERANCE = {torch.float32: 5e-3, torch.bfloat16: 5e-2}  # relative to the largest value, against float64


def _decode_with_grads(impl, c, params, positions, G):
    from sdgm.spectral.ops.dispatch import spectral_decode

    leaves = [c.detach().clone().requires_grad_()] + [p.detach().clone().requires_grad_() for p in params]
    y = spectral_decode(*leaves, positions, 128.0, impl=impl)
    (y.to(G.dtype) * G).sum().backward()
    return [y.double()] + [t.grad.double() for t in leaves]


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.needs("triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("B,Lk,K,D,first", KERNEL_CASES)
def test_triton_matches_chunked_on_cuda(B, Lk, K, D, first, dtype):
    """Triton against chunked in float64 on the device: no worse than 4x chunked's own fp32 error (fp32 angles
    far from position 0 are coarse in both), and within TOLERANCE in any case."""
    g = torch.Generator(device="cuda").manual_seed(B * 7 + K)
    c = torch.randn(B, Lk, K, device=CUDA, generator=g).to(dtype).float()  # what the bf16 run sees, exactly
    params = (
        torch.randn(K, D, device=CUDA, generator=g) / math.sqrt(K),
        torch.rand(K, D, device=CUDA, generator=g) * 64,
        torch.rand(K, D, device=CUDA, generator=g) * 2 * math.pi,
    )
    positions = torch.arange(first, first + Lk, device=CUDA)
    G = torch.randn(B, Lk, D, device=CUDA, generator=g)
    got = _decode_with_grads("triton", c.to(dtype), params, positions, G)
    fp32 = _decode_with_grads("chunked", c, params, positions, G)
    exact = _decode_with_grads("chunked", c.double(), [p.double() for p in params], positions, G.double())
    for name, a, r, e in zip(("output", "dC", "dA", "dF", "dPhi"), got, fp32, exact):
        assert torch.isfinite(a).all(), name
        assert rel_err(a, e) <= max(4 * rel_err(r, e), TOLERANCE[dtype]), (name, rel_err(a, e), rel_err(r, e))


@pytest.mark.needs("triton")
def test_the_kernel_check_passes_on_this_device_within_seconds():
    from sdgm.spectral.ops.dispatch import check_kernels, decoder_record, resolve_impl

    assert resolve_impl("auto", CUDA) == "triton"
    rec = [r for r in decoder_record() if r["requested"] == "auto" and r["device"].startswith("cuda")]
    assert rec and rec[0]["used"] == "triton" and "matched chunked" in rec[0]["reason"]
    t0 = time.perf_counter()
    ok, why = check_kernels(CUDA)  # compiled already: what a second process with a warm Triton cache pays
    assert ok, why
    assert time.perf_counter() - t0 < 3.0


@pytest.mark.needs("triton")
def test_the_kernel_check_at_the_runs_sizes_in_a_child_process():
    """What a run at the paper's sizes launches (training B = 32, L = 128; B = 1 at L = 65,536; a batch of 3; bf16 and
    fp32), compiled and checked in a child process: every configuration passes, and the parent survives whatever
    the child meets."""
    from sdgm.spectral.ops.dispatch import check_kernels_in_child, run_check_cases

    sizes = [
        (32, 128, 256, 512, torch.bfloat16),
        (3, 128, 256, 512, torch.bfloat16),
        (1, 65536, 256, 512, torch.bfloat16),
        (32, 128, 256, 512, torch.float32),
    ]
    ok, why = check_kernels_in_child(CUDA, "triton", run_check_cases(sizes), timeout_s=300)
    assert ok, why


# ---- NVML, torch.compile, NCCL ---------------------------------------------------------------------------------------
def test_the_nvml_sampler_reads_power_and_memory():
    from sdgm.bench.nvml import NvmlSampler

    x = torch.randn(4096, 4096, device=CUDA)
    with NvmlSampler(CUDA, interval_s=0.02) as s:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            x = (x @ x).tanh_()
        torch.cuda.synchronize()
    r = s.result()
    assert r["n_samples"] > 5, r
    assert r["power_mean_w"] and r["power_mean_w"] > 0, r.get("na")
    assert r["device_mem_used_peak_bytes"] and r["device_mem_used_peak_bytes"] > 0, r.get("na")


@pytest.mark.needs("triton")
def test_torch_compile_of_sdgm_with_the_triton_op_inside():
    torch.manual_seed(0)
    m = build_model("sdgm", V, seq_len=64, d_model=64, n_atoms=32, decoder="triton", dropout=0.0).to(CUDA)
    idx = random_ids(V, 4, 64).to(CUDA)
    eager = m(idx)
    compiled = torch.compile(m)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = compiled(idx)
        out.float().logsumexp(-1).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters() if p.requires_grad)
    torch.testing.assert_close(out.float(), eager.float(), rtol=5e-2, atol=5e-2)


def test_ddp_with_nccl_at_world_size_one(grammar_tokens, tmp_path):
    from sdgm.harness.distributed import launch

    kw = dict(
        tokens_dir=str(grammar_tokens),
        run_dir=str(tmp_path / "run"),
        ckpt_dir=str(tmp_path / "ck"),
        metrics_path=str(tmp_path / "run" / "metrics.json"),
        corpus="tiny",
        experiment="sdgm",
        model_name="sdgm",
        model_overrides={"d_model": 16, "n_atoms": 8},
        seed=0,
        progress=False,
        train_overrides={
            "seq_len": 16,
            "batch_size": 8,
            "epochs": 1,
            "max_steps": 6,
            "eval_every_steps": 6,
            "eval_max_windows": 4,
            "checkpoint_every_steps": 3,
            "device": "cuda",
            "ddp_backend": "nccl",
        },
    )
    launch(1, kw, log_path=tmp_path / "train.log")
    log = (tmp_path / "train.log").read_text()
    assert "nccl backend" in log, log[-2000:]
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["metrics"]["steps"] == 6 and m["provenance"]["cuda"], m["provenance"]


# ---- one campaign wave -----------------------------------------------------------------------------------------------
def test_one_tiny_campaign_wave_on_cuda(tmp_path):
    from sdgm.campaign import archive, store, waves

    cfg = yaml.safe_load((REPO / ".test" / "config" / "config.yaml").read_text())
    cfg["experiments"] = {"sdgm": cfg["experiments"]["sdgm"]}
    cfg["gmm"]["experiments"] = []
    cfg["train"].update(
        max_steps=6, eval_every_steps=6, checkpoint_every_steps=6, log_every_steps=2, eval_max_windows=8, device="cuda"
    )
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = waves.run_campaign(
        tmp_path / "config.yaml",
        2.5,
        directory=tmp_path,
        parallel=1,
        cores=4,
        overhead_min=0.5,
        bench_min=0.0,
        archive_dir=tmp_path,
    )
    assert res["published"] and not res["failed"], res
    m = store.verify_record(res["published"][0])
    metrics = json.loads((res["published"][0] / "metrics.json").read_text())
    assert "NVIDIA" in metrics["provenance"]["device"]
    used = {r["used"] for r in metrics["provenance"]["spectral_decoder"] if r["requested"] == "auto"}
    assert used == {"triton"}, metrics["provenance"]["spectral_decoder"]
    assert res["archive"].stat().st_size <= archive.ARCHIVE_LIMIT and m["device_slug"].startswith("nvidia")
