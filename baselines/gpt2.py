"""GPT-2 small (Radford et al., 2019) from Hugging Face transformers, trained from scratch on our vocabulary.

    X      = wte(idx) + wpe(0 .. L-1)                  (B, L, D)
    X      = Block_n(X), n = 1 .. n_layer              (B, L, D)   pre-LayerNorm causal self-attention + GELU MLP
    logits = LayerNorm(X) @ wte^T                      (B, L, V)   head tied to the token embedding by default

`GPT2LMHeadModel` built from a `GPT2Config` (no pretrained weights, no GPT-2 tokenizer): our vocabulary, our
context length (n_positions = seq_len), attention through torch's scaled_dot_product_attention
(attn_implementation="sdpa"), which applies GPT-2's causal mask. transformers is imported when a model is built,
so importing sdgm.models.registry stays light.

Generation uses transformers' own key/value cache (`past_key_values`, a `DynamicCache`): a prompt of P < L tokens
is one forward that fills the cache, then each new token is one forward of that token at position t against the
cached keys and values of positions 0 .. t-1, exactly the full forward's last position. The learned absolute
positions stop at L - 1, and the contract beyond the window is the forward over the last L tokens, where every
token sits one position earlier than in the step before: no cached key stays valid, so from position L on each
token costs a forward over the window (the cache is rebuilt from the last L tokens at every step, which is that
forward). Exact at every position; see docs/generation.md for why no cheaper scheme is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from sdgm.models.interface import LanguageModel, append_to_window


@dataclass
class GPT2Options:
    vocab_size: int = 10000
    seq_len: int = 128  # L: n_positions (learned position embeddings for 0 .. L-1)
    n_layer: int = 12  # GPT-2 small
    n_embd: int = 768  # D
    n_head: int = 12
    dropout: float = 0.1  # embedding, residual and attention dropout (GPT-2's resid/embd/attn_pdrop)
    tie_weights: bool = True  # the LM head shares the token embedding matrix, as in GPT-2

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "n_layer", "n_embd", "n_head"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def hf_config(cfg: GPT2Options):
    """transformers' GPT2Config for our options: SDPA attention (flash where the device has it), no cache."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=cfg.vocab_size,
        n_positions=cfg.seq_len,
        n_embd=cfg.n_embd,
        n_layer=cfg.n_layer,
        n_head=cfg.n_head,
        resid_pdrop=cfg.dropout,
        embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout,
        tie_word_embeddings=cfg.tie_weights,
        use_cache=False,
        attn_implementation="sdpa",
        bos_token_id=None,
        eos_token_id=None,  # GPT-2's 50256 does not exist in our vocabulary
    )


class GPT2Attention(nn.Module):
    """One of GPT-2's token-mixing layers as GPT2 below trains it (transformers' GPT2Attention: QKV and output
    projections, causal SDPA), alone: (B, L, D) -> (B, L, D). The scaling benchmark times it."""

    def __init__(self, d_model: int, n_head: int, seq_len: int, dropout: float = 0.0):
        super().__init__()
        from transformers.models.gpt2.modeling_gpt2 import GPT2Attention as HFAttention

        cfg = GPT2Options(vocab_size=1, seq_len=seq_len, n_layer=1, n_embd=d_model, n_head=n_head, dropout=dropout)
        self.attn = HFAttention(hf_config(cfg), layer_idx=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)[0]  # no mask given: causal


class GPT2(LanguageModel):
    incremental_decoding = True  # transformers' key/value cache inside the window; the window forward beyond it

    def __init__(self, cfg: GPT2Options):
        super().__init__()
        from transformers import GPT2LMHeadModel

        self.cfg = cfg
        self.max_context = cfg.seq_len
        self.gpt = GPT2LMHeadModel(hf_config(cfg))  # GPT-2's initialisation: N(0, 0.02), residual projections scaled

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, L) -> logits (B, L, V)."""
        if idx.shape[1] > self.cfg.seq_len:
            raise ValueError(f"sequence of {idx.shape[1]} tokens exceeds seq_len={self.cfg.seq_len}")
        return self.gpt(input_ids=idx, use_cache=False).logits

    def last_logits(self, context: torch.Tensor) -> torch.Tensor:
        """context (B, n <= L) -> logits at its last position (B, V), the head applied to that position only."""
        return self.gpt(input_ids=context, use_cache=False, logits_to_keep=1).logits[:, -1]

    # ---- generation: state {"context": the last <= L tokens (B, n), "cache": DynamicCache of them, or None} -----
    def init_decode_state(self, batch_size: int, device: torch.device | str | None = None) -> dict:
        return {**super().init_decode_state(batch_size, device), "cache": None}  # transformers makes the cache

    def decode_step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """tokens (B,) -> logits (B, V): one cached step at position t < L, a forward over the window beyond."""
        context = append_to_window(state["context"], tokens, self.max_context)  # (B, <= L)
        if state["context"].shape[1] == self.max_context:  # the window slides: every position shifts by one
            return self.last_logits(context), {"context": context, "cache": None}
        out = self.gpt(input_ids=tokens[:, None], past_key_values=state["cache"], use_cache=True)
        return out.logits[:, -1], {"context": context, "cache": out.past_key_values}

    def prefill(self, prompt: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        """prompt (B, P) -> logits (B, V) after its last token: one forward that fills the cache (P < L), or one
        forward over the last L tokens (P >= L: the next token is past the window, no cache is needed)."""
        if state is not None:
            return super().prefill(prompt, state)
        context = prompt[:, -self.max_context :]  # (B, <= L)
        if prompt.shape[1] >= self.max_context:
            return self.last_logits(context), {"context": context, "cache": None}
        out = self.gpt(input_ids=prompt, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1], {"context": context, "cache": out.past_key_values}

    def flops_per_token(self) -> int:
        cfg = self.cfg
        D, L, V = cfg.n_embd, cfg.seq_len, cfg.vocab_size
        per_layer = 2 * 4 * D * D  # q, k, v and output projections
        per_layer += 2 * 8 * D * D  # MLP D -> 4D -> D
        per_layer += 2 * 2 * L * D  # scores and weighted sum over the full window (as computed, then masked)
        return cfg.n_layer * per_layer + 2 * D * V

    def state_bytes_per_sequence(self) -> int:
        # incremental decoding keeps keys and values of every layer for the whole window (fp32)
        return 2 * self.cfg.n_layer * self.cfg.seq_len * self.cfg.n_embd * 4
