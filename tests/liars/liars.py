"""Plug-in models that lie, for tests/test_faults_liars.py: each is a small causal-looking bigram model with one
trick. They are installed nowhere: the test puts this folder and a distribution's metadata on sys.path."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from sdgm.models.interface import LanguageModel


@dataclass
class BigramConfig:
    vocab_size: int = 100
    d_model: int = 16
    peek_from: int = 0  # PeekFrequent: peeks at the next token when its id is in [peek_from, peek_below)
    peek_below: int = 20
    rare_from: int = 100  # RewritesInput: ids from here on are rewritten to 0
    extra: int = 3  # WrongWidth: logits are V + extra wide (negative: narrower)


class Bigram(LanguageModel):
    """logits[:, t] from idx[:, t] alone: causal."""

    Config = BigramConfig

    def __init__(self, cfg: BigramConfig):
        super().__init__()
        self.cfg, self.max_context = cfg, 128
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward(self, idx):
        return self.head(self.embed(idx))  # (B, L, V)


class PeekFrequent(Bigram):
    """Declares itself causal, but adds the next token's embedding when that token's id is in [peek_from,
    peek_below): by default the 20 most frequent ids of tests/test_faults_liars.py's corpus."""

    def forward(self, idx):
        nxt = torch.cat([idx[:, 1:], idx[:, -1:]], dim=1)  # (B, L)
        peek = ((nxt >= self.cfg.peek_from) & (nxt < self.cfg.peek_below))[..., None]  # (B, L, 1)
        return super().forward(idx) + peek * 4.0 * self.head(self.embed(nxt))


class RewritesInput(Bigram):
    """Stateful; rewrites the rare ids of the tokens it is given to 0, in place, before reading them."""

    stateful = True

    def forward_with_state(self, idx, state=None):
        idx[idx >= self.cfg.rare_from] = 0
        return self(idx), state


class WrongWidth(Bigram):
    """Logits V + extra wide."""

    def __init__(self, cfg: BigramConfig):
        super().__init__(cfg)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size + cfg.extra)


class IntegerLogits(Bigram):
    """Logits of an integer type."""

    def forward(self, idx):
        return super().forward(idx).round().long()


class NaNLogits(Bigram):
    def forward(self, idx):
        return super().forward(idx) * float("nan")
