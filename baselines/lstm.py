"""LSTM language model: the RNNModel of the PyTorch word_language_model example, with its LSTM defaults.

    X      = Dropout(Embed(idx))                 (L, B, E)   time-major inside, as the example
    H, s'  = LSTM(X, s)                          (L, B, H)   n_layers, dropout between layers; s = (h, c)
    logits = Linear(Dropout(H))                  (L, B, V) -> returned as (B, L, V); next token at t + 1

The hidden state s is what the model carries from one window to the next (`forward_with_state`); `forward(idx)`
starts from zeros. Generation steps the recurrence one token at a time, O(1) per token, and never forgets: beyond
the shared context L it keeps its whole history (decode_beyond_context "state"), so after x_0 .. x_t it gives
model(x[:, :t + 1])[:, -1], not the forward over the last L tokens that window models give (docs/generation.md). Defaults are the example's command-line defaults (emsize 200, nhid 200, nlayers 2,
dropout 0.2, untied); its training recipe (SGD lr 20, clip 0.25, lr / 4 when validation does not improve,
bptt 35, batch 20, eval batch 10, 40 epochs) lives in the config (experiments.lstm.train).

The example computes time-major; so do we, so that with the same seed our initial weights and every dropout
mask equal the example's draw for draw (config/lstm_crosscheck.yaml compares the two runs seed by seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from sdgm.models.interface import LanguageModel


@dataclass
class LSTMConfig:
    vocab_size: int = 10000
    seq_len: int = 128  # L: the shared context length (evaluation windows, sampling context)
    d_embed: int = 200  # emsize
    d_hidden: int = 200  # nhid
    n_layers: int = 2  # nlayers
    dropout: float = 0.2  # on the embeddings, between LSTM layers and on the LSTM output
    tie_weights: bool = False  # decoder shares the embedding matrix (needs d_embed == d_hidden)

    def __post_init__(self):
        for name in ("vocab_size", "seq_len", "d_embed", "d_hidden", "n_layers"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tie_weights and self.d_embed != self.d_hidden:
            raise ValueError(f"tie_weights needs d_embed == d_hidden, got {self.d_embed} and {self.d_hidden}")


class LSTMLM(LanguageModel):
    stateful = True
    incremental_decoding = True
    decode_beyond_context = "state"  # the recurrence carries the whole history, past max_context too

    def __init__(self, cfg: LSTMConfig):
        super().__init__()
        self.cfg = cfg
        self.max_context = cfg.seq_len
        V, E, H = cfg.vocab_size, cfg.d_embed, cfg.d_hidden
        self.drop = nn.Dropout(cfg.dropout)
        self.embed = nn.Embedding(V, E)
        self.rnn = nn.LSTM(E, H, cfg.n_layers, dropout=cfg.dropout if cfg.n_layers > 1 else 0.0)
        self.decoder = nn.Linear(H, V)
        if cfg.tie_weights:
            self.decoder.weight = self.embed.weight
        # the example's init_weights: embedding and decoder U(-0.1, 0.1), decoder bias 0; LSTM keeps torch's init
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if not cfg.tie_weights:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward_with_state(self, idx: torch.Tensor, state=None):
        """idx (B, L), state None or (h, c) each (n_layers, B, H) -> logits (B, L, V), (h, c)."""
        x = self.drop(self.embed(idx.t()))  # (L, B, E)
        out, state = self.rnn(x, state)  # (L, B, H)
        return self.decoder(self.drop(out)).transpose(0, 1), state  # (B, L, V)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.forward_with_state(idx, None)[0]

    def init_decode_state(self, batch_size: int, device: torch.device | str | None = None) -> dict:
        if device is None:
            device = self.embed.weight.device
        zeros = torch.zeros(
            self.cfg.n_layers, batch_size, self.cfg.d_hidden, dtype=self.embed.weight.dtype, device=device
        )  # (n_layers, B, H): what nn.LSTM starts from
        return {"hc": (zeros, zeros.clone())}

    def decode_step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """tokens (B,) -> logits (B, V): one step of the recurrence."""
        logits, hc = self.forward_with_state(tokens[:, None], state["hc"])  # (B, 1, V)
        return logits[:, 0], {"hc": hc}

    def prefill(self, prompt: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        """prompt (B, P) -> logits (B, V) after its last token: one pass of nn.LSTM over the prompt."""
        logits, hc = self.forward_with_state(prompt, None if state is None else state["hc"])  # (B, P, V)
        return logits[:, -1], {"hc": hc}

    def flops_per_token(self) -> int:
        cfg = self.cfg
        E, H, V = cfg.d_embed, cfg.d_hidden, cfg.vocab_size
        flops = 0
        for layer in range(cfg.n_layers):
            d_in = E if layer == 0 else H
            flops += 2 * 4 * H * (d_in + H)  # the four gates' input and recurrent matmuls
            flops += 4 * 4 * H  # gate biases, nonlinearities, cell and hidden updates (approx.)
        flops += 2 * H * V  # decoder
        return flops

    def state_bytes_per_sequence(self) -> int:
        # (h, c) per layer, fp32
        return 2 * self.cfg.n_layers * self.cfg.d_hidden * 4
