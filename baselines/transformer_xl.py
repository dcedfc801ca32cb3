"""Transformer-XL (Dai et al. 2019, arXiv:1901.02860): relative positions and segment-level recurrence.

    X_0    = Dropout(Embed(idx) * sqrt(D))                                   (B, L, D)
    for each layer i, with memory M_i of the last mem_len inputs of layer i  (B, M, D), stop-gradient:
        K, V from [M_i ; X_i], Q from X_i                                    (B, H, M + L, d_head)
        score(t, j) = (q_t + u) . k_j  +  (q_t + v) . W_r R_{t - j}          (B, H, L, M + L)
                      key j allowed iff j <= M + t (causal over memory + current segment)
        X_{i+1} = FF(LN(X_i + Attn))  (post-norm, as the authors' default)
    logits = Linear(Dropout(X_n))                                            (B, L, V)   tied to Embed

R_d is the sinusoid of the distance d; u, v (`r_w_bias`, `r_r_bias`) are shared by all layers, as in the
authors' PyTorch code (attn_type 0). The B.D term is computed for distances M + L - 1 ... 0 and aligned with the
"relative shift" (pad one zero column, reshape, drop a row). The next memory of layer i is the last mem_len of
[M_i ; X_i], detached. `forward(idx)` starts with empty memory; `forward_with_state(idx, mems)` continues.

Sizes: the authors released no PTB configuration (their PTB model has 24M parameters, trained with variational
dropout and weight averaging, neither released). Defaults keep the layer shape of their WikiText-103 base
script (d_model 410, 10 heads of 41, d_inner 2100, dropout 0.1, dropatt 0) with 8 layers, which gives 24.6M
parameters at PTB's 10,000 words; see docs/paper-choices.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from sdgm.interface import LanguageModel


@dataclass
class TransformerXLConfig:
    vocab_size: int = 10000
    seq_len: int = 128       # L: segment length (tgt_len) and the shared evaluation window
    mem_len: int = 128       # hidden states kept per layer from earlier segments (authors' base: mem_len = tgt_len)
    n_layer: int = 8
    n_head: int = 10
    d_model: int = 410
    d_head: int = 41
    d_inner: int = 2100
    dropout: float = 0.1     # embeddings, positional encodings, attention output, feed-forward, before the head
    dropatt: float = 0.0     # on the attention probabilities
    tie_weights: bool = True
    init_std: float = 0.02   # N(0, init_std) for weights, embeddings and u, v (authors' default init)

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "n_layer", "n_head", "d_model", "d_head", "d_inner"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.mem_len < 0:
            raise ValueError(f"mem_len must be >= 0, got {self.mem_len}")
        for name in ("dropout", "dropatt"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")


def sinusoid(distances: torch.Tensor, d_model: int) -> torch.Tensor:
    """distances (K,) float -> (K, d_model): [sin(d * f_i), cos(d * f_i)], f_i = 10000^(-2i / d_model)."""
    inv_freq = 1.0 / (10000 ** (torch.arange(0.0, d_model, 2.0, device=distances.device) / d_model))
    arg = distances[:, None] * inv_freq[None]  # (K, ceil(D / 2))
    return torch.cat([arg.sin(), arg.cos()], dim=-1)[:, :d_model]


def rel_shift(x: torch.Tensor) -> torch.Tensor:
    """x (..., Q, K) with column c holding distance K - 1 - c  ->  out[..., t, j] = x[..., t, j + Q - 1 - t].

    After the shift, entry (t, j) holds the score for key j at distance (K - Q + t) - j, the query's distance to
    the key, wherever j <= K - Q + t; entries beyond are garbage and must be masked.
    """
    *lead, Q, K = x.shape
    padded = F.pad(x, (1, 0))                     # (..., Q, K + 1): a zero column in front
    padded = padded.view(*lead, K + 1, Q)         # reinterpret the flat memory
    return padded[..., 1:, :].reshape(*lead, Q, K)


class RelMultiHeadAttention(nn.Module):
    def __init__(self, cfg: TransformerXLConfig):
        super().__init__()
        H, dh, D = cfg.n_head, cfg.d_head, cfg.d_model
        self.n_head, self.d_head = H, dh
        self.qkv = nn.Linear(D, 3 * H * dh, bias=False)
        self.r_net = nn.Linear(D, H * dh, bias=False)   # W_r: projects the positional encodings
        self.out = nn.Linear(H * dh, D, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.dropatt = nn.Dropout(cfg.dropatt)
        self.norm = nn.LayerNorm(D)
        self.scale = 1.0 / math.sqrt(dh)

    def forward(self, x, mem, pos, u, v, mask):
        """x (B, L, D), mem (B, M, D), pos (M + L, D) for distances M + L - 1 ... 0, u, v (H, dh),
        mask (L, M + L) True where attention is forbidden -> (B, L, D)."""
        B, L, _ = x.shape
        H, dh = self.n_head, self.d_head
        cat = torch.cat([mem, x], dim=1)                              # (B, K, D), K = M + L
        K = cat.shape[1]
        q, k, val = self.qkv(cat).chunk(3, dim=-1)                    # (B, K, H * dh) each
        q = q[:, -L:].view(B, L, H, dh).transpose(1, 2)               # (B, H, L, dh)
        k = k.view(B, K, H, dh).transpose(1, 2)                       # (B, H, K, dh)
        val = val.view(B, K, H, dh).transpose(1, 2)                   # (B, H, K, dh)
        r = self.r_net(pos).view(K, H, dh).transpose(0, 1)            # (H, K, dh)
        ac = (q + u[None, :, None]) @ k.transpose(-1, -2)             # (B, H, L, K): content terms (a) + (c)
        bd = rel_shift((q + v[None, :, None]) @ r.transpose(-1, -2))  # (B, H, L, K): position terms (b) + (d)
        scores = (ac + bd).to(torch.promote_types(ac.dtype, torch.float32)) * self.scale  # softmax in >= fp32
        attn = scores.masked_fill(mask, float("-inf")).softmax(-1).to(val.dtype)
        y = (self.dropatt(attn) @ val).transpose(1, 2).reshape(B, L, H * dh)  # (B, L, H * dh)
        return self.norm(x + self.drop(self.out(y)))


class FeedForward(nn.Module):
    def __init__(self, cfg: TransformerXLConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_inner), nn.ReLU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.d_inner, cfg.d_model), nn.Dropout(cfg.dropout))
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x):
        return self.norm(x + self.net(x))  # (B, L, D)


class Layer(nn.Module):
    def __init__(self, cfg: TransformerXLConfig):
        super().__init__()
        self.attn = RelMultiHeadAttention(cfg)
        self.ff = FeedForward(cfg)

    def forward(self, x, mem, pos, u, v, mask):
        return self.ff(self.attn(x, mem, pos, u, v, mask))


class TransformerXL(LanguageModel):
    stateful = True

    def __init__(self, cfg: TransformerXLConfig):
        super().__init__()
        self.cfg = cfg
        self.max_context = cfg.seq_len
        D, V = cfg.d_model, cfg.vocab_size
        self.embed = nn.Embedding(V, D)
        self.drop = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_layer))
        self.r_w_bias = nn.Parameter(torch.empty(cfg.n_head, cfg.d_head))  # u
        self.r_r_bias = nn.Parameter(torch.empty(cfg.n_head, cfg.d_head))  # v
        self.lm_head = nn.Linear(D, V)
        self.reset_parameters()
        if cfg.tie_weights:
            self.lm_head.weight = self.embed.weight

    def reset_parameters(self):
        std = self.cfg.init_std
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.normal_(m.weight, 1.0, std)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.r_w_bias, 0.0, std)
        nn.init.normal_(self.r_r_bias, 0.0, std)

    def forward_with_state(self, idx: torch.Tensor, state=None):
        """idx (B, L); state None or a list of n_layer memories (B, M, D), M <= mem_len
        -> logits (B, L, V), the next memories (detached)."""
        cfg = self.cfg
        B, L = idx.shape
        mems = state if state is not None else [None] * cfg.n_layer
        M = 0 if mems[0] is None else mems[0].shape[1]
        if L > cfg.seq_len + cfg.mem_len:
            raise ValueError(f"segment of {L} tokens exceeds seq_len + mem_len = {cfg.seq_len + cfg.mem_len}")
        x = self.drop(self.embed(idx) * math.sqrt(cfg.d_model))                  # (B, L, D)
        K = M + L
        pos = self.drop(sinusoid(torch.arange(K - 1, -1, -1.0, device=idx.device), cfg.d_model).to(x.dtype))
        # query t sits at position M + t of [memory ; segment]: it may see keys j <= M + t
        mask = torch.ones(L, K, dtype=torch.bool, device=idx.device).triu(M + 1)  # (L, K)
        hidden = []
        for layer, mem in zip(self.layers, mems):
            hidden.append(x)
            mem = x[:, :0] if mem is None else mem.to(x.dtype)
            x = layer(x, mem, pos, self.r_w_bias, self.r_r_bias, mask)           # (B, L, D)
        logits = self.lm_head(self.drop(x))                                       # (B, L, V)
        new_mems = None
        if cfg.mem_len > 0:
            with torch.no_grad():
                new_mems = [(h if m is None else torch.cat([m.to(h.dtype), h], dim=1))[:, -cfg.mem_len:].detach()
                            for m, h in zip(mems, hidden)]                        # (B, <= mem_len, D) each
        return logits, new_mems

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward_with_state(idx, None)[0]

    def flops_per_token(self) -> int:
        """Per token of a full segment of seq_len with a full memory (keys K = seq_len + mem_len)."""
        cfg = self.cfg
        D, H, dh, L = cfg.d_model, cfg.n_head, cfg.d_head, cfg.seq_len
        K = cfg.seq_len + cfg.mem_len
        per_layer = 2 * 3 * D * H * dh          # q, k, v projections (k, v of the memory are recomputed)
        per_layer = per_layer * K // L         # ... for M + L positions, amortised over the L queries
        per_layer += 2 * D * H * dh * K // L   # W_r R for K distances, amortised
        per_layer += 2 * 2 * K * H * dh        # (q + u) k and (q + v) W_r R
        per_layer += 2 * K * H * dh            # attention-weighted values
        per_layer += 2 * H * dh * D            # output projection
        per_layer += 2 * 2 * D * cfg.d_inner   # feed-forward
        return cfg.n_layer * per_layer + 2 * D * cfg.vocab_size

    def state_bytes_per_sequence(self) -> int:
        # generation keeps the inputs of every layer over the attention span (memory + current segment), fp32
        return self.cfg.n_layer * (self.cfg.mem_len + self.cfg.seq_len) * self.cfg.d_model * 4
