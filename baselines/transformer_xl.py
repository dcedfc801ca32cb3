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

Generation is the same recurrence one token at a time (segments of one token, decode_beyond_context "state"):
each layer keeps the keys and values of the last mem_len positions (its memory, as keys and values instead of
the inputs they are projected from) and W_r R for distances 0 .. mem_len, computed once per generation. A new
token attends to itself and that memory, O(mem_len) per token, and the memory slides. Within the window (and
up to mem_len + 1 tokens) that is the full forward over every token so far, exactly; beyond it the oldest
positions leave the memory while the others keep the hidden states they were computed with, which is
Transformer-XL's memory and not the forward over the last L tokens that window models give (docs/generation.md).
This needs mem_len >= seq_len - 1; with a shorter memory the model decodes by the generic window recompute.

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

from sdgm.models.interface import LanguageModel


@dataclass
class TransformerXLConfig:
    vocab_size: int = 10000
    seq_len: int = 128  # L: segment length (tgt_len) and the shared evaluation window
    mem_len: int = 128  # hidden states kept per layer from earlier segments (authors' base: mem_len = tgt_len)
    n_layer: int = 8
    n_head: int = 10
    d_model: int = 410
    d_head: int = 41
    d_inner: int = 2100
    dropout: float = 0.1  # embeddings, positional encodings, attention output, feed-forward, before the head
    dropatt: float = 0.0  # on the attention probabilities
    tie_weights: bool = True
    init_std: float = 0.02  # N(0, init_std) for weights, embeddings and u, v (authors' default init)
    # evaluation options of the authors' published protocol (their eval scripts: --clamp_len 400 --same_length)
    clamp_len: int = -1  # relative distances above clamp_len use clamp_len's encoding; -1: no clamp
    same_length: bool = False  # every query attends to the same number of keys: its last mem_len positions

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "n_layer", "n_head", "d_model", "d_head", "d_inner"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.mem_len < 0:
            raise ValueError(f"mem_len must be >= 0, got {self.mem_len}")
        if self.clamp_len < -1:
            raise ValueError(f"clamp_len must be >= 0, or -1 for no clamp, got {self.clamp_len}")
        if self.same_length and self.mem_len == 0:
            raise ValueError("same_length needs mem_len > 0: each query attends to its last mem_len positions")
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
    padded = F.pad(x, (1, 0))  # (..., Q, K + 1): a zero column in front
    padded = padded.view(*lead, K + 1, Q)  # reinterpret the flat memory
    return padded[..., 1:, :].reshape(*lead, Q, K)


class RelMultiHeadAttention(nn.Module):
    def __init__(self, cfg: TransformerXLConfig):
        super().__init__()
        H, dh, D = cfg.n_head, cfg.d_head, cfg.d_model
        self.n_head, self.d_head = H, dh
        self.qkv = nn.Linear(D, 3 * H * dh, bias=False)
        self.r_net = nn.Linear(D, H * dh, bias=False)  # W_r: projects the positional encodings
        self.out = nn.Linear(H * dh, D, bias=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.dropatt = nn.Dropout(cfg.dropatt)
        self.norm = nn.LayerNorm(D)
        self.scale = 1.0 / math.sqrt(dh)

    def heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """h (B, K, D) -> q, k, v of every position, each (B, H, K, dh)."""
        B, K, _ = h.shape
        return self.qkv(h).view(B, K, 3, self.n_head, self.d_head).permute(2, 0, 3, 1, 4)

    def rel_keys(self, pos: torch.Tensor) -> torch.Tensor:
        """pos (K, D), the encodings of distances K - 1 ... 0 -> W_r R per head (H, K, dh)."""
        return self.r_net(pos).view(pos.shape[0], self.n_head, self.d_head).transpose(0, 1)

    def forward(self, x, mem, pos, u, v, mask):
        """x (B, L, D), mem (B, M, D), pos (M + L, D) for distances M + L - 1 ... 0, u, v (H, dh),
        mask (L, M + L) True where attention is forbidden -> (B, L, D)."""
        L = x.shape[1]
        q, k, val = self.heads(torch.cat([mem, x], dim=1))  # (B, H, K, dh) each, K = M + L
        return self.attend(x, q[:, :, -L:], k, val, self.rel_keys(pos), u, v, mask)

    def step(self, x, k_mem, v_mem, r, u, v):
        """One new position: x (B, 1, D), keys and values of the M remembered positions k_mem, v_mem (B, H, M, dh),
        r (H, >= M + 1, dh) W_r R for distances ... 1, 0 -> (B, 1, D), and the keys and values with x's appended."""
        q, k, val = self.heads(x)  # (B, H, 1, dh) each
        k, val = torch.cat([k_mem, k], dim=2), torch.cat([v_mem, val], dim=2)  # (B, H, M + 1, dh)
        return self.attend(x, q, k, val, r[:, -k.shape[2] :], u, v, None), k, val

    def attend(self, x, q, k, val, r, u, v, mask):
        """Queries q (B, H, L, dh) of the last L of K positions, keys and values k, val (B, H, K, dh), r (H, K, dh)
        for distances K - 1 ... 0, mask (L, K) or None -> LayerNorm(x + attention output) (B, L, D)."""
        B, H, L, dh = q.shape
        ac = (q + u[None, :, None]) @ k.transpose(-1, -2)  # (B, H, L, K): content terms (a) + (c)
        bd = rel_shift((q + v[None, :, None]) @ r.transpose(-1, -2))  # (B, H, L, K): position terms (b) + (d)
        scores = (ac + bd).to(torch.promote_types(ac.dtype, torch.float32)) * self.scale  # softmax in >= fp32
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        attn = scores.softmax(-1).to(val.dtype)
        y = (self.dropatt(attn) @ val).transpose(1, 2).reshape(B, L, H * dh)  # (B, L, H * dh)
        return self.norm(x + self.drop(self.out(y)))


class FeedForward(nn.Module):
    def __init__(self, cfg: TransformerXLConfig):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.d_inner),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.d_inner, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )
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

    def step(self, x, k_mem, v_mem, r, u, v):
        """One new position (RelMultiHeadAttention.step) -> (B, 1, D), and its keys and values appended."""
        h, k, val = self.attn.step(x, k_mem, v_mem, r, u, v)
        return self.ff(h), k, val


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
        x = self.drop(self.embed(idx) * math.sqrt(cfg.d_model))  # (B, L, D)
        K = M + L
        distances = torch.arange(K - 1, -1, -1.0, device=idx.device)
        if cfg.clamp_len >= 0:
            distances = distances.clamp(max=cfg.clamp_len)
        pos = self.drop(sinusoid(distances, cfg.d_model).to(x.dtype))
        # query t sits at position M + t of [memory ; segment]: it may see keys j <= M + t
        ones = torch.ones(L, K, dtype=torch.bool, device=idx.device)
        mask = ones.triu(M + 1)  # (L, K)
        if cfg.same_length:  # and only keys j > M + t - mem_len: its last mem_len positions, itself included
            mask |= ones.tril(M - cfg.mem_len)
        hidden = []
        for layer, mem in zip(self.layers, mems):
            hidden.append(x)
            mem = x[:, :0] if mem is None else mem.to(x.dtype)
            x = layer(x, mem, pos, self.r_w_bias, self.r_r_bias, mask)  # (B, L, D)
        logits = self.lm_head(self.drop(x))  # (B, L, V)
        new_mems = None
        if cfg.mem_len > 0:
            with torch.no_grad():
                new_mems = [
                    (h if m is None else torch.cat([m.to(h.dtype), h], dim=1))[:, -cfg.mem_len :].detach()
                    for m, h in zip(mems, hidden)
                ]  # (B, <= mem_len, D) each
        return logits, new_mems

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward_with_state(idx, None)[0]

    # ---- generation: state {"kv": per layer (keys, values) of the memory (B, H, <= mem_len, d_head) each,
    # "r": per layer W_r R for distances mem_len ... 0 (H, mem_len + 1, d_head), shared by the batch} ------------
    @property
    def incremental_decoding(self) -> bool:
        # the memory covers the window; the evaluation options (clamp, same length) decode by the window recompute
        cfg = self.cfg
        return cfg.mem_len >= max(1, cfg.seq_len - 1) and cfg.clamp_len < 0 and not cfg.same_length

    @property
    def decode_beyond_context(self) -> str:
        return "state" if self.incremental_decoding else "window"

    def init_decode_state(self, batch_size: int, device: torch.device | str | None = None) -> dict:
        if not self.incremental_decoding:
            return super().init_decode_state(batch_size, device)
        cfg, w = self.cfg, self.embed.weight
        device = w.device if device is None else device
        empty = torch.empty(batch_size, cfg.n_head, 0, cfg.d_head, dtype=w.dtype, device=device)  # (B, H, 0, dh)
        distances = torch.arange(cfg.mem_len, -1, -1.0, device=device)  # mem_len ... 0
        pos = self.drop(sinusoid(distances, cfg.d_model).to(w.dtype))  # (mem_len + 1, D)
        return {"kv": [(empty, empty)] * cfg.n_layer, "r": [layer.attn.rel_keys(pos) for layer in self.layers]}

    def decode_step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """tokens (B,) -> logits (B, V): attention over the memory of mem_len positions and the token itself."""
        if not self.incremental_decoding:
            return super().decode_step(tokens, state)
        M = self.cfg.mem_len
        x = self.drop(self.embed(tokens[:, None]) * math.sqrt(self.cfg.d_model))  # (B, 1, D)
        kv = []
        for layer, (k_mem, v_mem), r in zip(self.layers, state["kv"], state["r"]):
            x, k, val = layer.step(x, k_mem, v_mem, r, self.r_w_bias, self.r_r_bias)  # (B, 1, D)
            kv.append((k[:, :, -M:], val[:, :, -M:]))  # the memory slides: the last M positions stay
        return self.lm_head(self.drop(x))[:, 0], {"kv": kv, "r": state["r"]}

    def prefill(self, prompt: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        """prompt (B, P) -> logits (B, V) after its last token: one forward over its first mem_len + 1 tokens (each
        sees every token before it, as the steps would), whose memories give the keys and values; steps after."""
        if state is not None or not self.incremental_decoding:
            return super().prefill(prompt, state)
        n = min(prompt.shape[1], self.cfg.mem_len + 1)
        logits, mems = self.forward_with_state(prompt[:, :n], None)  # mems: inputs of each layer, last <= M positions
        state = self.init_decode_state(prompt.shape[0], prompt.device)
        state["kv"] = [tuple(layer.attn.heads(h)[1:]) for layer, h in zip(self.layers, mems)]  # (B, H, <= M, dh)
        if prompt.shape[1] > n:
            return super().prefill(prompt[:, n:], state)
        return logits[:, -1], state

    def flops_per_token(self) -> int:
        """Per token of a full segment of seq_len with a full memory (keys K = seq_len + mem_len)."""
        cfg = self.cfg
        D, H, dh, L = cfg.d_model, cfg.n_head, cfg.d_head, cfg.seq_len
        K = cfg.seq_len + cfg.mem_len
        per_layer = 2 * 3 * D * H * dh  # q, k, v projections (k, v of the memory are recomputed)
        per_layer = per_layer * K // L  # ... for M + L positions, amortised over the L queries
        per_layer += 2 * D * H * dh * K // L  # W_r R for K distances, amortised
        per_layer += 2 * 2 * K * H * dh  # (q + u) k and (q + v) W_r R
        per_layer += 2 * K * H * dh  # attention-weighted values
        per_layer += 2 * H * dh * D  # output projection
        per_layer += 2 * 2 * D * cfg.d_inner  # feed-forward
        return cfg.n_layer * per_layer + 2 * D * cfg.vocab_size

    def state_bytes_per_sequence(self) -> int:
        # incremental decoding keeps the keys and values of mem_len positions in every layer (fp32); W_r R for
        # mem_len + 1 distances is shared by the batch
        cfg = self.cfg
        return cfg.n_layer * cfg.mem_len * 2 * cfg.n_head * cfg.d_head * 4
