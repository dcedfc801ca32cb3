"""The device benchmark's memory measurements (sdgm.bench.device): each peak of torch's allocator in a fresh
process (python -m sdgm.bench.device --probe EXPERIMENT MODE), counted from before the model is built."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

MEMORY_MODES = ("train", "score")


def experiment_setup(config: dict, experiment: str, device: str | None) -> tuple[str, dict, dict]:
    """(model name, model options, TrainConfig fields) of an experiment as the trainer builds it."""
    from ..harness.config import experiment_spec
    from ..harness.recipe import TrainConfig
    from ..models.registry import model_options

    spec = experiment_spec(config, experiment)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    train = {k: v for k, v in spec["train"].items() if k in fields}
    if device:
        train["device"] = device
    options = model_options(spec["model"], spec["model_overrides"], train.get("seq_len", TrainConfig().seq_len))
    return spec["model"], options, train


def memory_probe(
    config: dict, experiment: str, vocab_size: int, mode: str, device: str | None, score_batch_size: int
) -> dict:
    """The allocator peak of one mode in this process, counted from before the model is built: "train" builds the
    model and its optimizer and takes two training steps (the first creates the optimizer's state), "score" builds
    the model and scores score_batch_size windows without gradients."""
    import torch
    import torch.nn.functional as F

    from ..common.timing import CPU_MEMORY_METHOD, CUDA_MEMORY_METHOD, peak_call_memory
    from ..harness.recipe import TrainConfig, autocast_dtype, make_optimizer, resolve_device
    from ..models.registry import build_model

    model_name, options, train = experiment_setup(config, experiment, device)
    tcfg = TrainConfig(**train)
    dev = resolve_device(tcfg.device)
    amp = autocast_dtype(tcfg, dev)
    g = torch.Generator().manual_seed(0)
    B = tcfg.batch_size if mode == "train" else score_batch_size
    x = torch.randint(0, vocab_size, (B, tcfg.seq_len), generator=g)
    y = torch.randint(0, vocab_size, (B, tcfg.seq_len), generator=g)

    def run():
        torch.manual_seed(0)
        net = build_model(model_name, vocab_size, **options).to(dev)
        xs, ys = x.to(dev), y.to(dev)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            if mode == "train":
                net.train()
                opt = make_optimizer(net, tcfg, dev)
                for _ in range(2):
                    loss, _ = net.training_loss(xs, ys)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if tcfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(net.parameters(), tcfg.grad_clip)
                    opt.step()
            else:
                net.eval()
                with torch.no_grad():
                    F.cross_entropy(net(xs).flatten(0, 1).float(), ys.flatten())

    peak, why = peak_call_memory(run, dev)  # from before the model is built: parameters count
    what = {
        "train": f"build the model and its optimizer, two training steps of ({B}, {tcfg.seq_len})",
        "score": f"build the model, score ({B}, {tcfg.seq_len}) without gradients",
    }[mode]
    return {
        "mode": mode,
        "peak_bytes": peak,
        "na": why,
        "what": what,
        "batch_size": B,
        "seq_len": tcfg.seq_len,
        # the protocol the verdicts compare (docs/claims.md); this probe never compiles
        "precision": "bf16" if amp == torch.bfloat16 else "fp32",
        "compile": False,
        "steps": 2 if mode == "train" else 1,
        "fresh_process": True,
        "method": (CUDA_MEMORY_METHOD if dev.type == "cuda" else CPU_MEMORY_METHOD)
        + "; a fresh process, counted from before the model is built",
    }


def fresh_process_probe(
    configfile: Path, experiment: str, vocab_size: int, mode: str, device: str | None, score_batch_size: int
) -> dict:
    """memory_probe in a new Python process, so that nothing else this process did counts."""
    cmd = [
        sys.executable,
        "-m",
        "sdgm.bench.device",
        "--configfile",
        str(Path(configfile).resolve()),
        "--probe",
        experiment,
        mode,
        "--vocab-size",
        str(vocab_size),
        "--score-batch-size",
        str(score_batch_size),
    ]
    if device:
        cmd += ["--device", device]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    if out.returncode != 0:
        raise RuntimeError(f"the memory probe of {experiment} ({mode}) failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
