"""One trainer for every model: windows, optimizer, checkpoints and exact resume, early stopping, progress.

Training windows are the train stream cut into non-overlapping windows of L + 1 tokens' span (inputs
ids[iL : iL + L], targets shifted by one); each epoch visits every full batch of windows once, in an order
fixed by (seed, epoch), so a checkpoint only needs (epoch, batch) to resume the data exactly. The trailing
windows that do not fill a batch are skipped in that epoch (a different set each epoch).

Faults: a non-finite loss or weight stops the run with NonFiniteLoss naming the first bad step and the last good
checkpoint; the losses are checked before every checkpoint, so a checkpoint never holds a diverged state. A
checkpoint of another configuration or an unreadable one stops the run with CheckpointError, naming what differs.

With data_order "streams" (stateful training, as in the PyTorch word_language_model example) the train split is
instead cut into batch_size contiguous streams, read in consecutive windows of train_seq_len (the last one may be
shorter), and the model's state (`forward_with_state`) is carried, detached, from one step to the next; it starts
empty each epoch. The carried state is part of the checkpoint, so resuming stays exact.

Several processes (torch.distributed initialized, as sdgm.harness.distributed does under torchrun): every process (rank)
holds a full replica of the model, wrapped in DistributedDataParallel, and takes an equal, contiguous share of
every global batch of batch_size windows (or streams); the global batch is the same as with one process. Every
loss is a mean over equal shares, so DDP's gradient average is the gradient of the whole batch's loss, and the
optimizer step equals the one-process step up to floating-point rounding. Logged training statistics are
averaged over the ranks. Rank 0 alone validates and broadcasts the result, so every rank takes the same
early-stopping and learning-rate decisions; rank 0 alone writes the log, best.pt and the checkpoint, which holds
the RNG state (and carried model state) of every rank.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..common.atomic import remove_stale_temporaries, storage_errors
from ..models.interface import LanguageModel, detach_state
from .checkpoint import CheckpointError, Checkpoints, Preempted, save_atomic
from .evaluate import batchify, evaluate, evaluate_streams, stream_windows
from .memory import check_memory, estimate_training_bytes
from .recipe import TrainConfig, autocast_dtype, lr_factor, make_optimizer, rank_and_world, resolve_device

__all__ = ["CheckpointError", "NonFiniteLoss", "Preempted", "TrainConfig", "TrainState", "Trainer", "thin"]


class NonFiniteLoss(FloatingPointError):
    pass


class TrainingLoss(torch.nn.Module):
    """The model's training objective as a module: DistributedDataParallel wraps this, so it sees the loss
    computation (its forward) and averages the gradients of every parameter after backward."""

    def __init__(self, model: LanguageModel, with_state: bool):
        super().__init__()
        self.model, self.with_state = model, with_state

    def forward(self, x: torch.Tensor, y: torch.Tensor, state=None):
        if self.with_state:
            return self.model.training_loss_with_state(x, y, state)  # (loss, stats, next state)
        return self.model.training_loss(x, y)  # (loss, stats)


@dataclass
class TrainState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_val_ppl: float = math.inf
    best_step: int = -1
    evals_since_best: int = 0
    last_eval_step: int = -1
    train_seconds: float = 0.0
    train_tokens: int = 0
    plateau_scale: float = 1.0  # schedule "plateau": current lr multiplier
    stopped: str = ""
    history: dict = field(default_factory=lambda: {"train": [], "val": []})


class Trainer(Checkpoints):
    """Trains `model` on splits["train"], early-stops on splits["valid"]; state in ckpt_dir survives crashes."""

    def __init__(
        self,
        model: LanguageModel,
        train_ids: torch.Tensor,
        valid_ids: torch.Tensor,
        cfg: TrainConfig,
        ckpt_dir: str | Path,
        fingerprint: str = "",
        progress: bool = True,
        log_path: str | Path | None = None,
        fingerprint_source: dict | None = None,
    ):
        self.cfg = cfg
        self.distributed = dist.is_available() and dist.is_initialized()
        self.rank, self.world = rank_and_world()
        self.device = resolve_device(cfg.device)
        if self.distributed and self.device.type == "cuda":  # one GPU per process: the one torchrun assigns
            if self.device.index is not None:
                raise ValueError(
                    f"device {cfg.device!r} names one GPU, but each of the {self.world} training "
                    f"processes needs its own: use 'auto' or 'cuda'"
                )
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", self.rank)))
        self.model = model.to(self.device)
        self.train_ids, self.valid_ids = train_ids.to(self.device), valid_ids
        self.ckpt_dir = Path(ckpt_dir)
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.fingerprint = fingerprint
        self.fingerprint_source = fingerprint_source  # what the fingerprint hashes, to say what differs on a mismatch
        self.progress = progress
        self.log_path = Path(log_path) if log_path else self.ckpt_dir / "log.jsonl"
        self.amp = autocast_dtype(cfg, self.device)
        L, B = cfg.train_seq_len or cfg.seq_len, cfg.batch_size
        check = getattr(self.model, "check_decoder_for_run", None)
        if check is not None:  # SDGM on CUDA: the fused kernels at this run's batch shapes (training, evaluation, and
            # B = 1 for the short last batches), in a child process, before the first step
            check(
                {(B // self.world, L), (cfg.eval_batch_size, cfg.seq_len), (1, cfg.seq_len)},
                self.device,
                self.amp or torch.float32,
            )
        self.streams = cfg.data_order == "streams"
        if cfg.eval_carry_state and not model.stateful:
            raise ValueError(f"eval_carry_state needs a model that carries state; {type(model).__name__} does not")
        if B % self.world:
            raise ValueError(
                f"batch_size {B} is not divisible by the {self.world} training processes: each process "
                f"takes an equal share of the global batch"
            )
        self.share = B // self.world  # windows (or streams) of every batch that this process trains on
        if self.streams:  # this process's streams: rows [rank * share, (rank + 1) * share) of the B streams
            self.data = batchify(self.train_ids, B)[
                self.rank * self.share : (self.rank + 1) * self.share
            ]  # (share, rows)
            self.windows = stream_windows(self.data.shape[1], L)  # consecutive, the last one may be shorter
            self.n_windows = self.steps_per_epoch = len(self.windows)
        else:
            self.n_windows = (len(train_ids) - 1) // L
            self.steps_per_epoch = self.n_windows // B
        if self.steps_per_epoch == 0:
            raise ValueError(f"train split has {len(train_ids)} tokens: fewer than one batch of {B} x {L}")
        total = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        self.opt = make_optimizer(self.model, cfg, self.device)
        self.state = TrainState()
        self.ckpt_step: int | None = None  # step of the last checkpoint written or resumed from
        self._unchecked: list[torch.Tensor] = []  # per-step losses not yet checked for finiteness (on device)
        for p in (self.ckpt_path, self.best_path) if self.rank == 0 else ():
            remove_stale_temporaries(p)  # left by a killed earlier attempt; this trainer (rank 0) owns ckpt_dir
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: lr_factor(cfg, s, self.total_steps, self.state.plateau_scale)
        )
        loss = self.model.training_loss_with_state if self.streams else self.model.training_loss
        if self.distributed:  # broadcasts rank 0's weights now; averages the gradients in every backward
            loss = DistributedDataParallel(
                TrainingLoss(self.model, self.streams),
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
            if self.rank:  # dropout masks differ from rank to rank; rank 0 keeps the one-process random stream
                torch.manual_seed(cfg.seed * 100_003 + 1_000_000_007 * self.rank)
        self.loss_fn = torch.compile(loss) if cfg.compile else loss
        self.carry = None  # the model state carried between consecutive steps (data_order "streams")
        self._offsets = torch.arange(L + 1, device=self.device)

    def check_finite(self, weights: bool = False) -> None:
        """Raise NonFiniteLoss naming the first step since the last check whose loss was not finite (or, with
        `weights`, if a weight is not finite). Called at log intervals and, with `weights`, before every checkpoint."""
        st, losses = self.state, self._unchecked
        self._unchecked = []
        if losses:
            losses = torch.stack(losses).float()
            if self.distributed:  # summed over the ranks: a non-finite loss on any rank stops every rank
                dist.all_reduce(losses)
            bad = ~torch.isfinite(losses)
            if bad.any():
                first = st.step - len(losses) + 1 + int(bad.nonzero()[0, 0])
                raise NonFiniteLoss(
                    f"non-finite training loss at step {first} (detected at step {st.step}); {self.last_good()}"
                )
        if weights and not bool(torch.stack([torch.isfinite(p).all() for p in self.model.parameters()]).all()):
            raise NonFiniteLoss(f"non-finite weights after step {st.step}; {self.last_good()}")

    def check_memory(self, mem_mb: int | None) -> dict:
        """Estimate the peak memory of a training step (sdgm.harness.memory) and refuse, before the first step, a
        training that would not fit in `mem_mb` (CPU) or the GPU's free memory; returns the estimate and the limit."""
        cfg = self.cfg
        loss = self.model.training_loss_with_state if self.streams else self.model.training_loss
        parts = estimate_training_bytes(
            self.model,
            loss,
            self.share,
            cfg.train_seq_len or cfg.seq_len,
            self.model.cfg.vocab_size,
            cfg.optimizer,
            self.device,
            self.amp,
        )
        return {**check_memory(parts, self.device, mem_mb, f"training in {self.ckpt_dir}"), "parts": parts}

    # ---- pieces of the loop ---------------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> torch.Tensor:
        """The epoch's window order, drawn on the CPU (the same on every device), then moved to the device once:
        a host-to-device copy per step would make the host wait for the GPU at every step."""
        g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
        return torch.randperm(self.n_windows, generator=g).to(self.device)

    def batch(self, order: torch.Tensor | None, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.streams:  # the b-th consecutive window of every stream of this process
            s, n = self.windows[b]
            return self.data[:, s : s + n], self.data[:, s + 1 : s + n + 1]  # (share, n), (share, n)
        B, L = self.cfg.batch_size, self.cfg.train_seq_len or self.cfg.seq_len
        first = b * B + self.rank * self.share  # this process's share of the b-th global batch
        starts = order[first : first + self.share] * L  # (share,), on the device
        span = self.train_ids[starts[:, None] + self._offsets]  # (share, L + 1)
        return span[:, :-1], span[:, 1:]

    def sync(self) -> None:
        """Wait for queued device work, so that a wall-clock reading covers it (a no-op on CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def log(self, event: dict) -> None:
        """Append `event` to log.jsonl (closed at once, so a kill loses no logged line); a training or validation
        event also goes to stderr as one flushed line when stderr is not a terminal (the job's log under
        Snakemake), so the log shows the last step reached even after a SIGKILL."""
        if self.rank:  # rank 0 writes the log
            return
        with storage_errors(self.log_path), open(self.log_path, "a") as f:
            f.write(json.dumps(event) + "\n")
        if event.get("event") in ("train", "val") and self.progress and not sys.stderr.isatty():
            values = " ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                for k, v in event.items()
                if k not in ("event", "step", "epoch")
            )
            print(f"{event['event']} step {event['step']}/{self.total_steps}: {values}", file=sys.stderr, flush=True)

    def validate(self) -> float:
        st, cfg = self.state, self.cfg
        self.check_finite()  # a diverged step is named as such, not as a bad validation score
        ppl_nll = torch.zeros(2, dtype=torch.float64)
        if self.rank == 0:  # one process validates; the others wait for its result
            ev = evaluate_streams if cfg.eval_carry_state else evaluate
            res = ev(
                self.model,
                self.valid_ids,
                cfg.seq_len,
                cfg.eval_batch_size,
                self.device,
                max_windows=cfg.eval_max_windows or None,
                autocast_dtype=self.amp,
            )
            ppl_nll = torch.tensor([res["ppl"], res["nll"]], dtype=torch.float64)
        if self.distributed:  # every rank takes the same early-stopping and learning-rate decisions
            ppl_nll = ppl_nll.to(self.device)
            dist.broadcast(ppl_nll, src=0)
        ppl, nll = ppl_nll.tolist()
        if not math.isfinite(ppl):
            raise NonFiniteLoss(f"validation perplexity is {ppl} at step {st.step}; {self.last_good()}")
        epoch = st.step / self.steps_per_epoch
        point = {"step": st.step, "epoch": round(epoch, 4), "ppl": ppl, "nll": nll}
        st.history["val"].append(point)
        self.log({"event": "val", **point})
        st.last_eval_step = st.step
        if ppl < st.best_val_ppl:
            st.best_val_ppl, st.best_step, st.evals_since_best = ppl, st.step, 0
            if self.rank == 0:
                save_atomic(self.model.state_dict(), self.best_path)
        else:
            st.evals_since_best += 1
            if st.evals_since_best >= cfg.patience:
                st.stopped = "early_stop"
            if cfg.schedule == "plateau":  # anneal now: the next step already uses the lower rate
                st.plateau_scale /= cfg.plateau_factor
                for group, base in zip(self.opt.param_groups, self.sched.base_lrs):
                    group["lr"] = base * lr_factor(cfg, self.sched.last_epoch, self.total_steps, st.plateau_scale)
        return ppl

    # ---- the loop --------------------------------------------------------------------------------------------
    def fit(self) -> TrainState:
        """Train to the end (max_steps, epochs or early stop). A SIGTERM meanwhile ends it with Preempted after a
        checkpoint of the current step (sdgm.harness.checkpoint)."""
        with self.stop_on_sigterm():
            return self._fit()

    def _fit(self) -> TrainState:
        cfg, st = self.cfg, self.state
        # a bar on a terminal; elsewhere (a job's log) one flushed line per logged step instead (Trainer.log)
        bar = tqdm(
            total=self.total_steps,
            initial=st.step,
            unit="step",
            mininterval=0.5,
            dynamic_ncols=True,
            disable=not self.progress or self.rank > 0 or not sys.stderr.isatty(),
            file=sys.stderr,
        )
        self.model.train()
        acc, n_acc, t_window, tokens_window = {}, 0, time.perf_counter(), 0
        self._unchecked = []
        while not st.stopped:
            if st.step >= self.total_steps:
                st.stopped = "max_steps" if cfg.max_steps and st.step >= cfg.max_steps else "max_epochs"
                break
            order = None if self.streams else self.epoch_order(st.epoch)
            t_epoch = time.perf_counter()
            while st.batch_in_epoch < self.steps_per_epoch and st.step < self.total_steps and not st.stopped:
                if self.streams and st.batch_in_epoch == 0:
                    self.carry = None  # every epoch starts with an empty state
                x, y = self.batch(order, st.batch_in_epoch)  # views of the training tokens
                x, y = x.clone(), y.clone()  # the model's own copies: it cannot rewrite the data it trains on
                with torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None):
                    if self.streams:
                        loss, stats, carry = self.loss_fn(x, y, self.carry)
                        self.carry = detach_state(carry)
                    else:
                        loss, stats = self.loss_fn(x, y)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                self.opt.step()
                self.sched.step()
                st.step += 1
                st.batch_in_epoch += 1
                st.train_tokens += y.numel() * self.world  # every rank trains on an equal share
                tokens_window += y.numel() * self.world
                stats = {"loss": loss.detach(), **stats}
                self._unchecked.append(stats["loss"])
                for k, v in stats.items():  # stays on device: no host sync per step
                    acc[k] = acc.get(k, 0.0) + v.float()
                n_acc += 1
                if st.step % cfg.log_every_steps == 0 or st.step == self.total_steps:
                    self.check_finite()
                    means = torch.stack(list(acc.values())) / n_acc
                    if self.distributed:  # the mean over the ranks' equal shares: the global batch's mean
                        dist.all_reduce(means)
                        means /= self.world
                    means = dict(zip(acc, means.tolist()))  # one sync per log interval
                    if not all(math.isfinite(v) for v in means.values()):
                        raise NonFiniteLoss(
                            f"non-finite training statistics {means} in the steps up to step "
                            f"{st.step}; {self.last_good()}"
                        )
                    now = time.perf_counter()
                    tok_s = tokens_window / max(now - t_window, 1e-9)
                    point = {
                        "step": st.step,
                        "epoch": round(st.step / self.steps_per_epoch, 4),
                        **means,
                        "tokens_per_s": tok_s,
                        "lr": self.sched.get_last_lr()[0],
                    }
                    st.history["train"].append(point)
                    self.log({"event": "train", **point})
                    ppl = math.exp(min(means.get("nll", means["loss"]), 50))
                    bar.set_postfix(loss=f"{means['loss']:.3f}", ppl=f"{ppl:.1f}", tok_s=f"{tok_s:,.0f}", refresh=False)
                    acc, n_acc, t_window, tokens_window = {}, 0, now, 0
                bar.update(1)
                if cfg.eval_every_steps and st.step % cfg.eval_every_steps == 0:
                    self.sync()  # queued GPU work belongs to the training time
                    st.train_seconds += time.perf_counter() - t_epoch
                    self.validate()
                    t_epoch = t_window = time.perf_counter()
                    tokens_window = 0
                if cfg.checkpoint_every_steps and st.step % cfg.checkpoint_every_steps == 0:
                    self.save_checkpoint()
                if self.stop_signal is not None:  # SIGTERM: checkpoint this step and exit (Preempted)
                    self.stop_for_signal()
            self.sync()
            st.train_seconds += time.perf_counter() - t_epoch
            if st.batch_in_epoch >= self.steps_per_epoch:
                st.epoch += 1
                st.batch_in_epoch = 0
                if not cfg.eval_every_steps and not st.stopped:
                    self.validate()
            self.save_checkpoint()
        if st.last_eval_step != st.step:  # the final weights always get a validation score
            self.validate()
            self.save_checkpoint()
        bar.close()
        return st

    def tokens_per_second(self) -> float:
        return self.state.train_tokens / max(self.state.train_seconds, 1e-9)


def thin(points: list[dict], n: int) -> list[dict]:
    """At most n points, evenly spaced, always keeping the last."""
    if len(points) <= n:
        return points
    idx = np.linspace(0, len(points) - 1, n).round().astype(int)
    return [points[i] for i in sorted(set(idx))]
