"""Causal Linformer: Linformer's low-rank sequence projection (Wang et al., 2020) restricted to earlier blocks.

Linformer projects the L keys and values of a window along the sequence to k rows (K' = E^T K with E: (L, k)).
Every projected row mixes all L positions, so position t would see tokens after t. Here the window is cut into
blocks of `block_size` (b) positions, and a query in block j attends, in one softmax, to

    - the k rows  S_j = sum_{i < j} E_i^T K_i  (and likewise F for values): Linformer's projection of exactly
      the positions in blocks strictly before j (E_i: the b rows of E that belong to block i), and
    - the keys of its own block at positions <= itself, exactly (ordinary causal attention inside the block).

Neither part contains a position after the query, so logits[:, t] depend on idx[:, :t+1] only
(tests/test_causality.py checks it, and tests/test_baselines.py checks this code against a per-query reference).
Per token the attention costs k + b key rows instead of L, and incremental decoding keeps k + b rows per layer.

    X      = wte(idx) + wpe(0 .. L-1)                        (B, L, D)
    q, k, v per head, padded to N = ceil(L / b) blocks      (B, H, N, b, d)
    P_i    = E_i^T K_i                                       (B, H, N, k, d)   one projection per block
    S_j    = P_0 + ... + P_{j-1}                             (B, H, N, k, d)   exclusive prefix sum
    A      = softmax([q S_j^T | q K_j^T masked to s <= t]) [S^v_j | V_j]      (B, H, N, b, d)
    blocks: pre-LayerNorm attention + GELU MLP (4D), final LayerNorm, head tied to wte  -> logits (B, L, V)

The block layout (GPT-2's) is shared with baselines/gpt2.py, so the two differ only in how attention reaches
earlier positions.

Generation (t < L) keeps, per layer, the summaries S_j of the completed blocks (k rows for keys, k for values)
and the keys and values of the current block (<= b rows): a token attends to both in one softmax, exactly as the
full forward's last position, and when its block completes, E_j^T K_j is added to the summaries and the block is
emptied. Nothing of it is recomputed. Beyond the window the contract is the forward over the last L tokens, whose
absolute positions and block boundaries move with every new token, so that no summary stays valid: from position
L on every token costs a forward over the window, as for GPT-2 (docs/generation.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from sdgm.models.interface import LanguageModel, append_to_window


@dataclass
class LinformerConfig:
    vocab_size: int = 10000
    seq_len: int = 128  # L: rows of the projections E, F and of the position embedding
    d_model: int = 512  # D
    n_layer: int = 6
    n_head: int = 8
    k: int = 64  # projected length: all earlier blocks together are seen as k key/value rows
    block_size: int = 32  # b: exact causal attention inside a block of b positions
    share_kv: bool = False  # one projection (E = F) for keys and values
    dropout: float = 0.1  # embedding, attention-weight and residual dropout
    tie_weights: bool = True  # the LM head shares the token embedding matrix

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "d_model", "n_layer", "n_head", "k", "block_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_head={self.n_head}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class CausalLinformerAttention(nn.Module):
    def __init__(self, cfg: LinformerConfig):
        super().__init__()
        self.cfg = cfg
        D, b = cfg.d_model, cfg.block_size
        n_rows = math.ceil(cfg.seq_len / b) * b  # E, F cover whole blocks
        self.qkv = nn.Linear(D, 3 * D)
        self.out = nn.Linear(D, D)
        bound = 1 / math.sqrt(cfg.k)  # the linformer package's initialisation of E and F
        self.proj_k = nn.Parameter(torch.empty(n_rows, cfg.k).uniform_(-bound, bound))
        self.proj_v = None if cfg.share_kv else nn.Parameter(torch.empty(n_rows, cfg.k).uniform_(-bound, bound))

    def mask(self, n_blocks: int, device) -> torch.Tensor:
        """(N, b, k + b) bool, True = may attend: the summary rows from block 1 on, own block at s <= t."""
        b, k = self.cfg.block_size, self.cfg.k
        j = torch.arange(n_blocks, device=device)[:, None, None]
        summary = (j > 0).expand(n_blocks, b, k)  # block 0 has no earlier block
        local = torch.ones(b, b, dtype=torch.bool, device=device).tril()[None].expand(n_blocks, b, b)
        return torch.cat([summary, local], dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, n, D) -> (B, n, D), n <= seq_len."""
        cfg = self.cfg
        B, n, D = x.shape
        H, b, k = cfg.n_head, cfg.block_size, cfg.k
        N = math.ceil(n / b)
        x = F.pad(x, (0, 0, 0, N * b - n))  # pad the last block; padding sits after every real position
        q, key, val = self.qkv(x).view(B, N, b, 3, H, D // H).permute(3, 0, 4, 1, 2, 5)  # each (B, H, N, b, d)
        E = self.proj_k[: N * b].view(N, b, k)
        Fv = E if self.proj_v is None else self.proj_v[: N * b].view(N, b, k)
        p_key = torch.einsum("bhnsd,nsc->bhncd", key, E.to(key.dtype))  # (B, H, N, k, d): each block projected
        p_val = torch.einsum("bhnsd,nsc->bhncd", val, Fv.to(val.dtype))
        # exclusive prefix sum by shifting (not cumsum minus the block's own term, whose rounding would carry
        # a trace of block j, later tokens included, into S_j)
        s_key = F.pad(p_key.cumsum(2), (0, 0, 0, 0, 1, 0))[:, :, :N]  # (B, H, N, k, d): blocks < j
        s_val = F.pad(p_val.cumsum(2), (0, 0, 0, 0, 1, 0))[:, :, :N]
        keys = torch.cat([s_key, key], dim=3)  # (B, H, N, k + b, d)
        vals = torch.cat([s_val, val], dim=3)
        y = F.scaled_dot_product_attention(
            q, keys, vals, attn_mask=self.mask(N, x.device), dropout_p=cfg.dropout if self.training else 0.0
        )  # (B, H, N, b, d)
        y = y.permute(0, 2, 3, 1, 4).reshape(B, N * b, D)[:, :n]
        return self.out(y)

    def step(self, x: torch.Tensor, cache: dict, t: int) -> tuple[torch.Tensor, dict]:
        """x (B, 1, D) at position t < seq_len, cache of positions < t -> (B, 1, D), cache including t.

        cache: "s_key", "s_val" (B, H, k, d) the summaries of the blocks before t's block (None in block 0),
        "key", "val" (B, H, t mod b, d) the keys and values of t's block so far.
        """
        cfg = self.cfg
        B, _, D = x.shape
        H, b = cfg.n_head, cfg.block_size
        q, key, val = self.qkv(x).view(B, 1, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each (B, H, 1, d)
        key = torch.cat([cache["key"], key], dim=2)  # (B, H, t mod b + 1, d): own block, positions <= t
        val = torch.cat([cache["val"], val], dim=2)
        keys, vals = key, val
        if cache["s_key"] is not None:  # the k summary rows of the earlier blocks
            keys, vals = torch.cat([cache["s_key"], key], dim=2), torch.cat([cache["s_val"], val], dim=2)
        y = F.scaled_dot_product_attention(q, keys, vals)  # (B, H, 1, d): every row may be attended
        s_key, s_val = cache["s_key"], cache["s_val"]
        if t % b == b - 1:  # the block is complete: fold its projection into the summaries, as the prefix sum does
            rows = slice(t - b + 1, t + 1)
            E = self.proj_k[rows]
            Fv = E if self.proj_v is None else self.proj_v[rows]
            p_key = torch.einsum("bhsd,sc->bhcd", key, E.to(key.dtype))  # (B, H, k, d)
            p_val = torch.einsum("bhsd,sc->bhcd", val, Fv.to(val.dtype))
            s_key = p_key if s_key is None else s_key + p_key
            s_val = p_val if s_val is None else s_val + p_val
            key, val = key[:, :, :0], val[:, :, :0]
        cache = {"s_key": s_key, "s_val": s_val, "key": key, "val": val}
        return self.out(y.transpose(1, 2).reshape(B, 1, D)), cache


def attention_reference(att: CausalLinformerAttention, x: torch.Tensor) -> torch.Tensor:
    """The same attention by its definition, one query at a time, in float64 (slow; for tests)."""
    cfg = att.cfg
    B, n, D = x.shape
    H, b, d = cfg.n_head, cfg.block_size, D // cfg.n_head
    q, key, val = att.qkv(x.to(att.qkv.weight.dtype)).double().split(D, dim=-1)  # (B, n, D)
    E = att.proj_k.double()
    Fv = E if att.proj_v is None else att.proj_v.double()
    out = torch.zeros(B, n, D, dtype=torch.float64)
    for t in range(n):
        start = (t // b) * b  # first position of t's block
        for h in range(H):
            sl = slice(h * d, (h + 1) * d)
            rows_k = [key[:, start : t + 1, sl]]  # own block, positions <= t
            rows_v = [val[:, start : t + 1, sl]]
            if start > 0:  # k projected rows of every position before the block
                rows_k.insert(0, torch.einsum("bsd,sc->bcd", key[:, :start, sl], E[:start]))
                rows_v.insert(0, torch.einsum("bsd,sc->bcd", val[:, :start, sl], Fv[:start]))
            K, V = torch.cat(rows_k, 1), torch.cat(rows_v, 1)  # (B, rows, d)
            w = torch.softmax(torch.einsum("bd,brd->br", q[:, t, sl], K) / math.sqrt(d), dim=-1)
            out[:, t, sl] = torch.einsum("br,brd->bd", w, V)
    return out @ att.out.weight.double().T + att.out.bias.double()


class Block(nn.Module):
    def __init__(self, cfg: LinformerConfig):
        super().__init__()
        D = cfg.d_model
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = CausalLinformerAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(D, 4 * D), nn.GELU(), nn.Linear(4 * D, D))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))

    def step(self, x: torch.Tensor, cache: dict, t: int) -> tuple[torch.Tensor, dict]:
        """x (B, 1, D) at position t -> (B, 1, D), the attention cache updated (CausalLinformerAttention.step)."""
        a, cache = self.attn.step(self.ln1(x), cache, t)
        x = x + self.drop(a)
        return x + self.drop(self.mlp(self.ln2(x))), cache


class Linformer(LanguageModel):
    incremental_decoding = True  # block summaries and the current block inside the window; the window forward beyond

    def __init__(self, cfg: LinformerConfig):
        super().__init__()
        self.cfg = cfg
        self.max_context = cfg.seq_len
        D, V = cfg.d_model, cfg.vocab_size
        self.wte = nn.Embedding(V, D)
        self.wpe = nn.Embedding(cfg.seq_len, D)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(D)
        self.lm_head = nn.Linear(D, V, bias=False)
        # GPT-2's initialisation: N(0, 0.02), zero biases, residual output projections scaled by 1/sqrt(2 n_layer)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        for blk in self.blocks:
            for proj in (blk.attn.out, blk.mlp[2]):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.tie_weights:
            self.lm_head.weight = self.wte.weight

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, L) -> the final LayerNorm's output (B, L, D), what the head reads."""
        n = idx.shape[1]
        if n > self.cfg.seq_len:
            raise ValueError(f"sequence of {n} tokens exceeds seq_len={self.cfg.seq_len}")
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(n, device=idx.device)))  # (B, L, D)
        for blk in self.blocks:
            x = blk(x)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, L) -> logits (B, L, V)."""
        return self.lm_head(self.hidden(idx))

    # ---- generation: state {"context": the last <= L tokens (B, n), "layers": one attention cache per layer, or
    # None once the window slides} ---------------------------------------------------------------------------------
    def init_decode_state(self, batch_size: int, device: torch.device | str | None = None) -> dict:
        if device is None:
            device = self.wte.weight.device
        cfg = self.cfg
        empty = torch.empty(
            batch_size, cfg.n_head, 0, cfg.d_model // cfg.n_head, dtype=self.wte.weight.dtype, device=device
        )  # (B, H, 0, d)
        return {
            "context": torch.empty(batch_size, 0, dtype=torch.long, device=device),
            "layers": [{"s_key": None, "s_val": None, "key": empty, "val": empty} for _ in self.blocks],
        }

    def decode_step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """tokens (B,) -> logits (B, V): one cached step at position t < L, a forward over the window beyond."""
        t = state["context"].shape[1]
        context = append_to_window(state["context"], tokens, self.max_context)  # (B, <= L)
        if t == self.max_context:  # the window slides: positions and block boundaries move by one
            return self.lm_head(self.hidden(context)[:, -1]), {"context": context, "layers": None}
        x = self.drop(self.wte(tokens) + self.wpe.weight[t])[:, None]  # (B, 1, D)
        layers = []
        for blk, cache in zip(self.blocks, state["layers"]):
            x, cache = blk.step(x, cache, t)
            layers.append(cache)
        return self.lm_head(self.ln_f(x))[:, 0], {"context": context, "layers": layers}

    def prefill(self, prompt: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        """prompt (B, P) -> logits (B, V) after its last token: one decode_step per token (P < L), or one forward
        over the last L tokens (P >= L: the next token is past the window, no cache is needed)."""
        if state is None and prompt.shape[1] >= self.max_context:
            context = prompt[:, -self.max_context :]  # (B, L)
            return self.lm_head(self.hidden(context)[:, -1]), {"context": context, "layers": None}
        return super().prefill(prompt, state)

    def flops_per_token(self) -> int:
        cfg = self.cfg
        D, k, b, V = cfg.d_model, cfg.k, cfg.block_size, cfg.vocab_size
        per_layer = 2 * 4 * D * D  # q, k, v and output projections
        per_layer += 2 * 2 * k * D  # projecting the token's key and value into its block's k rows
        per_layer += 2 * 2 * (k + b) * D  # scores against k summary rows + the block, and weighted sum
        per_layer += 2 * 8 * D * D  # MLP D -> 4D -> D
        return cfg.n_layer * per_layer + 2 * D * V

    def state_bytes_per_sequence(self) -> int:
        # incremental decoding keeps, per layer, the k summary rows of earlier blocks and the current block's
        # b keys and values (fp32): k + b rows instead of the L rows of a full-attention cache
        cfg = self.cfg
        return 2 * cfg.n_layer * (cfg.k + cfg.block_size) * cfg.d_model * 4
