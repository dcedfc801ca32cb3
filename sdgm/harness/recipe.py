"""The training recipe shared by the trainer and the benchmarks: its settings (TrainConfig), the device and the
processes it runs on, the autocast precision, the learning-rate schedule and the optimizer.

The benchmarks (sdgm.bench) build their training steps from these, so that a benchmarked step is the trained one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["TrainConfig", "autocast_dtype", "lr_factor", "make_optimizer", "rank_and_world", "resolve_device"]


@dataclass
class TrainConfig:
    epochs: int = 10
    max_steps: int = 0  # 0: no limit besides epochs
    batch_size: int = 32
    seq_len: int = 128  # L, shared by every model
    optimizer: str = "adam"  # "adam" (L2 weight decay, as the paper's "Adam, weight decay") | "adamw" | "sgd"
    lr: float = 1e-3
    weight_decay: float = 1e-5
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "constant"  # "constant" | "cosine" (after linear warmup) | "plateau"
    plateau_factor: float = 4.0  # schedule "plateau": lr /= this after each evaluation without a better val PPL
    data_order: str = "shuffled"  # "shuffled" windows | "streams": contiguous streams, state carried across steps
    train_seq_len: int = 0  # tokens per training window; 0: seq_len
    warmup_steps: int = 0
    grad_clip: float = 1.0  # max global grad norm; 0 disables
    patience: int = 2  # early stop after this many evaluations without a better validation PPL
    eval_every_steps: int = 0  # 0: evaluate at the end of each epoch
    eval_max_windows: int = 0  # 0: the whole validation split; else its first N windows (periodic evals only)
    eval_batch_size: int = 32
    eval_carry_state: bool = False  # validations during training carry the state (evaluate_streams; stateful models)
    checkpoint_every_steps: int = 500
    log_every_steps: int = 20
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 on CPU) | "fp32" | "bf16"
    compile: bool = False  # torch.compile the training step
    history_max_points: int = 2000  # train-loss points kept in metrics (evenly thinned)
    ddp_backend: str = "auto"  # several processes: "auto" (nccl on CUDA, gloo on CPU) | "nccl" | "gloo"

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adam', 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.schedule not in ("constant", "cosine", "plateau"):
            raise ValueError(f"schedule must be 'constant', 'cosine' or 'plateau', got {self.schedule!r}")
        if self.plateau_factor <= 1:
            raise ValueError(f"plateau_factor must be > 1, got {self.plateau_factor}")
        if self.data_order not in ("shuffled", "streams"):
            raise ValueError(f"data_order must be 'shuffled' or 'streams', got {self.data_order!r}")
        if not 0 <= self.train_seq_len <= self.seq_len:
            raise ValueError(f"train_seq_len must be in [0, seq_len={self.seq_len}], got {self.train_seq_len}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.ddp_backend not in ("auto", "nccl", "gloo"):
            raise ValueError(f"ddp_backend must be 'auto', 'nccl' or 'gloo', got {self.ddp_backend!r}")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) without torch.distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def lr_factor(cfg: TrainConfig, step: int, total: int, plateau_scale: float = 1.0) -> float:
    """Multiplier of cfg.lr at `step`; plateau_scale is 1 / plateau_factor ** (evaluations without improvement)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps * plateau_scale
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "plateau":
        return plateau_scale
    return 1.0


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    kwargs = {"fused": True} if device.type == "cuda" else {}
    if cfg.optimizer == "sgd":  # plain SGD, no momentum: p -= lr * (grad + weight_decay * p)
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, **kwargs)
    cls = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    return cls(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **kwargs)
