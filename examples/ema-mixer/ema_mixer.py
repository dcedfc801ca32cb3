"""A causal language model whose token mixing is one learned exponential moving average per channel.

    h_t = sum_{s <= t} (1 - a) a^(t - s) x_s         a = sigmoid(decay logit), one per channel of x (B, L, D)

then a residual MLP and a linear head. Position t sees tokens 0 .. t only: the weights of later tokens are zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from sdgm.models.interface import LanguageModel


@dataclass
class EMAMixerConfig:
    vocab_size: int = 10000
    seq_len: int = 128  # L: the window the model is trained and evaluated on
    d_model: int = 64  # D
    decay: float = 0.9  # initial a of every channel, in (0, 1)

    def __post_init__(self):
        if not 0 < self.decay < 1:
            raise ValueError(f"decay must be in (0, 1), got {self.decay}")


class EMAMixer(LanguageModel):
    Config = EMAMixerConfig  # what the benchmark builds the model from

    def __init__(self, cfg: EMAMixerConfig):
        super().__init__()
        self.cfg, self.max_context = cfg, cfg.seq_len
        D = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, D)
        self.decay_logit = nn.Parameter(torch.full((D,), math.log(cfg.decay / (1 - cfg.decay))))
        self.mlp = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))
        self.head = nn.Linear(D, cfg.vocab_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed(idx)  # (B, L, D)
        t = torch.arange(idx.shape[1], device=idx.device)
        lag = t[:, None] - t[None, :]  # (L, L): t - s
        a = torch.sigmoid(self.decay_logit)[:, None, None]  # (D, 1, 1)
        w = torch.where(lag >= 0, (1 - a) * a ** lag.clamp(min=0), 0)  # (D, L, L): zero for s > t
        h = torch.einsum("dts,bsd->btd", w, x)  # (B, L, D)
        return self.head(h + self.mlp(h))  # (B, L, V)
