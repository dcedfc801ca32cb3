"""Linformer as published in the `linformer` package (0.2.3): NOT a valid language model, kept to measure leaking.

    X      = tok_emb(idx) + pos_emb(0 .. L-1)                       (B, L, D)
    K', V' = E^T K, F^T V      E, F: (seq_len, k)                   (B, k, D)   every position mixed into k rows
    A      = softmax(Q K'^T / sqrt(d_head)) V'                      (B, L, D)
    logits = Linear(X after n_layer pre-LayerNorm blocks)           (B, L, V)

The package's LinformerLM projects keys and values along the whole sequence before attention and applies no mask,
so logits[:, t] depend on tokens after t: the model is labelled non-causal (`causal = False`), the causality audit
detects it, and the report never compares its perplexity with anything. The causal variant is
baselines/linformer.py. This file is a thin wrapper: the architecture, initialisation and untied head are the
package's own.

Generation has no cache here (incremental_decoding stays False): every projected row mixes all positions of the
window, so a new token changes the output at every earlier position, and each token is the generic forward over
the last seq_len tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sdgm.models.interface import LanguageModel


@dataclass
class LinformerNonCausalConfig:
    vocab_size: int = 10000
    seq_len: int = 128  # L: rows of the projections E, F and of the position embedding
    d_model: int = 512  # D
    n_layer: int = 6
    n_head: int = 8
    k: int = 64  # projected length: the L keys/values of a window become k rows
    share_kv: bool = False  # one projection for keys and values
    dropout: float = 0.1  # attention weights and MLP hidden layer (the package's places)

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "d_model", "n_layer", "n_head", "k"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class LinformerNonCausal(LanguageModel):
    causal = False  # the sequence projection mixes later tokens into every position

    def __init__(self, cfg: LinformerNonCausalConfig):
        super().__init__()
        from linformer import LinformerLM

        self.cfg = cfg
        self.max_context = cfg.seq_len
        self.lm = LinformerLM(
            num_tokens=cfg.vocab_size,
            dim=cfg.d_model,
            seq_len=cfg.seq_len,
            depth=cfg.n_layer,
            k=cfg.k,
            heads=cfg.n_head,
            share_kv=cfg.share_kv,
            dropout=cfg.dropout,
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, L) -> logits (B, L, V); a shorter window uses the first rows of the projections."""
        if idx.shape[1] > self.cfg.seq_len:
            raise ValueError(f"sequence of {idx.shape[1]} tokens exceeds seq_len={self.cfg.seq_len}")
        return self.lm(idx)

    def flops_per_token(self) -> int:
        cfg = self.cfg
        D, k, V = cfg.d_model, cfg.k, cfg.vocab_size
        per_layer = 2 * 4 * D * D  # q, k, v and output projections
        per_layer += 2 * 2 * k * D  # projecting keys and values along the sequence (amortised per token)
        per_layer += 2 * 2 * k * D  # scores against k rows and weighted sum
        per_layer += 2 * 8 * D * D  # MLP D -> 4D -> D
        return cfg.n_layer * per_layer + 2 * D * V

    def state_bytes_per_sequence(self) -> int:
        # no incremental decoding: a new token changes every projected row, so each step recomputes the window
        # and holds keys and values of every layer for all of it (fp32)
        return 2 * self.cfg.n_layer * self.cfg.seq_len * self.cfg.d_model * 4
