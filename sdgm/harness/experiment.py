"""One training run end to end: tokens -> trained model -> run directory + metrics.json.

The Snakemake rule `train` is a thin call of `run_training`; so is any script or test that wants one run.
Under torch.distributed (several processes, see sdgm.harness.distributed) every process calls it and trains its share;
rank 0 alone evaluates the result and writes the run directory and metrics.json, the others return None.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..common.atomic import write_json_atomic
from ..common.missing import NO_GPU, NO_RECONSTRUCTION, NO_STATE
from ..common.schema import METRICS_SCHEMA_VERSION, SchemaViolation, check_metrics
from ..common.timing import peak_rss_bytes
from ..data.checks import DataError
from ..data.tokens import load_tokens, vocab_sha256
from ..models.contract import causal_audit, check_forward
from ..models.interface import declared
from ..models.registry import build_model, model_options, save_run
from .evaluate import evaluate, evaluate_streams
from .provenance import config_hash, provenance
from .runlock import run_lock
from .train import NonFiniteLoss, TrainConfig, Trainer, rank_and_world, thin


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_training(
    tokens_dir: str | Path,
    run_dir: str | Path,
    ckpt_dir: str | Path,
    metrics_path: str | Path,
    *,
    corpus: str,
    experiment: str,
    model_name: str,
    model_overrides: dict | None = None,
    train_overrides: dict | None = None,
    seed: int = 0,
    progress: bool = True,
    run_hash: str | None = None,
    run_spec: dict | None = None,
    mem_mb: int | None = None,
    memory_check: bool = True,
) -> dict | None:
    """Train, evaluate and write one run. `run_hash`/`run_spec` (sdgm.harness.config.run_hash/run_spec: the run's
    identity in the experiment matrix) are stored in run.json and metrics.json as given; None outside the workflow.

    Before the first step the training's peak memory is estimated and a training that would not fit in `mem_mb`
    (the job's memory; on CUDA the GPU's free memory) is refused (sdgm.harness.memory; `memory_check=False`: not
    checked). The run's lock, `ckpt_dir/lock`, is held throughout: a second process training the same run (another
    pipeline on the same results directory) stops with RunLocked (sdgm.harness.runlock)."""
    with contextlib.ExitStack() as held:  # the run's lock, once the inputs are checked, until the end
        return _run_training(
            tokens_dir,
            run_dir,
            ckpt_dir,
            metrics_path,
            corpus=corpus,
            experiment=experiment,
            model_name=model_name,
            model_overrides=model_overrides,
            train_overrides=train_overrides,
            seed=seed,
            progress=progress,
            run_hash=run_hash,
            run_spec=run_spec,
            mem_mb=mem_mb,
            memory_check=memory_check,
            held=held,
        )


def _run_training(
    tokens_dir,
    run_dir,
    ckpt_dir,
    metrics_path,
    *,
    corpus,
    experiment,
    model_name,
    model_overrides,
    train_overrides,
    seed,
    progress,
    run_hash,
    run_spec,
    mem_mb,
    memory_check,
    held: contextlib.ExitStack,
) -> dict | None:
    tokens_dir, run_dir, ckpt_dir = Path(tokens_dir), Path(run_dir), Path(ckpt_dir)
    splits, vocab = load_tokens(tokens_dir)
    data_stats = json.loads((tokens_dir / "stats.json").read_text())
    for split in ("valid", "test"):  # found now, not after training
        if len(splits[split]) < 2:
            raise DataError(
                f"{tokens_dir / (split + '.pt')}: the {split} split has {len(splits[split])} token(s); "
                f"perplexity needs at least 2"
            )
    vocab_digest = vocab_sha256(vocab)
    tcfg = TrainConfig(**{**(train_overrides or {}), "seed": seed})
    overrides = model_options(model_name, model_overrides or {}, tcfg.seq_len)  # with the shared context length

    seed_everything(seed)
    net = build_model(model_name, len(vocab), **overrides)
    model_cfg = dataclasses.asdict(net.cfg)
    train_cfg = dataclasses.asdict(tcfg)
    semantic_train = {
        k: v
        for k, v in train_cfg.items()
        if k not in ("device", "log_every_steps", "history_max_points", "ddp_backend")
    }
    data_sha = {s: v["sha256"] for s, v in data_stats["splits"].items()}
    # what a checkpoint must match to be resumed: the vocabulary too, since token ids mean nothing without it
    fingerprint_source = {
        "model": model_name,
        "model_config": model_cfg,
        "train": semantic_train,
        "data": data_sha,
        "vocab_sha256": vocab_digest,
    }
    fingerprint = config_hash(fingerprint_source)

    if rank_and_world()[0] == 0:  # rank 0 speaks for every process of the run
        held.enter_context(run_lock(ckpt_dir / "lock", f"run {run_dir}"))
    trainer = Trainer(
        net,
        splits["train"],
        splits["valid"],
        tcfg,
        ckpt_dir,
        fingerprint=fingerprint,
        progress=progress,
        fingerprint_source=json.loads(json.dumps(fingerprint_source)),
    )
    if memory_check:  # before any step: refuse what the out-of-memory killer would end half-way
        mem = trainer.check_memory(mem_mb)
        if trainer.rank == 0 and progress:
            limit = f"{mem['limit_bytes'] / 2**20:.0f} MiB" if mem["limit_bytes"] else "no limit given"
            print(f"estimated peak memory {mem['estimate_bytes'] / 2**20:.0f} MiB ({limit})", file=sys.stderr)
    # the model's logits before its first step: (B, L, V) of a floating type and finite (one line, not an IndexError
    # in the loss or a wrong width published); the first window of the validation text
    check_forward(
        trainer.model, splits["valid"][None, : tcfg.seq_len].to(trainer.device), len(vocab), f"model {model_name!r}"
    )
    resumed = trainer.try_resume()
    if resumed and trainer.rank == 0:
        print(
            f"resuming {experiment} on {corpus} from step {trainer.state.step} ({trainer.ckpt_path})", file=sys.stderr
        )
        trainer.log({"event": "resume", "step": trainer.state.step})
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    t0 = time.perf_counter()
    state = trainer.fit()
    if trainer.rank > 0:  # rank 0 evaluates and writes the results
        return None
    trainer.load_best()

    ev = dict(L=tcfg.seq_len, batch_size=tcfg.eval_batch_size, device=trainer.device, autocast_dtype=trainer.amp)
    val = evaluate(trainer.model, splits["valid"], **ev)
    test = evaluate(trainer.model, splits["test"], **ev)
    mem = {}  # stateful models: the same splits again, state carried across the windows of eval_batch_size streams
    if net.stateful:
        mem = {
            "val": evaluate_streams(trainer.model, splits["valid"], **ev),
            "test": evaluate_streams(trainer.model, splits["test"], **ev),
        }
    wall = time.perf_counter() - t0
    for name, res in (("validation", val), ("test", test)):
        if not math.isfinite(res["ppl"]):  # never written as a result
            raise NonFiniteLoss(f"{name} perplexity of the best weights ({trainer.best_path}) is {res['ppl']}")

    # the trained weights, not just the architecture: does any logit move when later tokens change?
    # on real text (the validation split): windows cut at many positions, later tokens replaced from its frequencies
    audit = causal_audit(trainer.model, len(vocab), tcfg.seq_len, text=splits["valid"])
    if audit["passed"] != audit["declared_causal"]:
        print(
            f"causality audit of {experiment} on {corpus}: declared causal={audit['declared_causal']}, "
            f"measured largest logit change {audit['max_logit_change']:.3g}",
            file=sys.stderr,
        )

    na: dict[str, str] = {}
    flops, flops_na = declared(net, "flops_per_token")
    if flops_na:
        na["flops_per_token"] = flops_na
    metrics = {
        "val_ppl": val["ppl"],
        "test_ppl": test["ppl"],
        "val_nll": val["nll"],
        "test_nll": test["nll"],
        "val_tokens": val["tokens"],
        "test_tokens": test["tokens"],
        "params": net.num_params(),
        "flops_per_token": flops,
        "train_tokens_per_s": trainer.tokens_per_second(),
        "train_seconds": state.train_seconds,
        "train_wall_s": wall,
        "steps": state.step,
        "epochs_completed": round(state.step / trainer.steps_per_epoch, 4),
        "best_step": state.best_step,
        "best_val_ppl_during_training": state.best_val_ppl,
        "stopped": state.stopped,
        "resumed": resumed,
        "train_processes": trainer.world,
        "peak_rss_bytes": peak_rss_bytes(),
        "causal_audit": audit,
    }
    for split in ("val", "test"):
        for k in ("ppl", "nll", "tokens"):
            metrics[f"{split}_{k}_mem"] = mem[split][k] if mem else None
            if not mem:
                na[f"{split}_{k}_mem"] = NO_STATE
    for name in ("cosine",):
        metrics[f"{name}_val"] = val.get(name)
        metrics[f"{name}_test"] = test.get(name)
        if name not in val:
            na[f"{name}_val"] = na[f"{name}_test"] = NO_RECONSTRUCTION
    if trainer.device.type == "cuda":
        metrics["peak_mem_bytes"] = torch.cuda.max_memory_allocated(trainer.device)
        metrics["peak_mem_reserved_bytes"] = torch.cuda.max_memory_reserved(trainer.device)
    else:
        metrics["peak_mem_bytes"] = metrics["peak_mem_reserved_bytes"] = None
        na["peak_mem_bytes"] = na["peak_mem_reserved_bytes"] = NO_GPU

    save_run(
        run_dir,
        model_name,
        trainer.model.cpu(),
        vocab,
        extra={
            "experiment": experiment,
            "corpus": corpus,
            "seed": seed,
            "fingerprint": fingerprint,
            "vocab_sha256": vocab_digest,
            "run_hash": run_hash,
            "run_spec": run_spec,
        },
    )
    record = {
        "schema": METRICS_SCHEMA_VERSION,
        "run_id": f"{corpus}/{run_dir.name}",
        "experiment": experiment,
        "model": model_name,
        "corpus": corpus,
        "seed": seed,
        "fingerprint": fingerprint,
        "run_hash": run_hash,
        "run_spec": run_spec,  # the run's identity in the experiment matrix (its directory)
        "model_config": model_cfg,
        "train_config": train_cfg,
        "data": {
            "vocab_size": len(vocab),
            "vocab_sha256": vocab_digest,
            "sha256": data_sha,
            "tokens": {s: v["tokens"] for s, v in data_stats["splits"].items()},
        },
        "provenance": provenance(trainer.device),
        "metrics": metrics,
        "na": na,
        "history": {"train": thin(state.history["train"], tcfg.history_max_points), "val": state.history["val"]},
    }
    record = json.loads(json.dumps(record))  # exactly what a reader of the file gets (tuples become lists)
    try:  # the report refuses a record that breaks the schema; writing one is a bug here
        check_metrics(record)
    except SchemaViolation as e:
        raise SchemaViolation(
            e.field, f"{metrics_path}: not written, the record breaks sdgm/common/schemas/metrics.schema.json: {e}"
        ) from e
    write_json_atomic(metrics_path, record)  # last: its existence means the run is complete
    trainer.ckpt_path.unlink(missing_ok=True)  # optimizer state is no longer needed; best.pt stays
    return record
