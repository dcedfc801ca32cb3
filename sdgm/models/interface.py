"""The one contract every sequence model in this project follows.

    logits = model(idx)                       # idx: (B, L) int64  ->  (B, L, V) next-token logits
    loss, stats = model.training_loss(idx, targets)
    model.diagnostics(idx)                    # extra evaluation numbers (e.g. SDGM's cosine), may be {}
    model.num_params(), model.flops_per_token(), model.state_bytes_per_sequence()
    model.max_context                         # longest window the model is trained/evaluated on
    model.causal                              # False for a model that is known to see later tokens
    logits, state = model.prefill(prompt)     # generation: prompt (B, P) -> next-token logits (B, V), state
    logits, state = model.decode_step(tokens, state)   # then one token at a time: tokens (B,) -> (B, V)
    model.incremental_decoding, model.decode_beyond_context   # how it decodes (see "incremental decoding" below)

Models that carry information from one window to the next (an LSTM's hidden state, Transformer-XL's memory)
set `stateful = True` and implement

    logits, state = model.forward_with_state(idx, state)   # state None: start afresh; returns the next state

The default, for every other model, ignores the state and returns `(model(idx), None)`. The trainer
(data_order "streams") and sdgm.harness.evaluate.evaluate_streams carry the state, detached, from window to window.

The trainer, evaluator, sampler and report only use these names; they never branch on a model's name.
Position t of the logits may depend on idx[:, :t+1] only (tests/test_causality.py checks every model); a model
that breaks this on purpose says so with `causal = False`, and the report marks its rows.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def detach_state(state):
    """The state with every tensor detached (tuples, lists and None are walked)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


class LanguageModel(nn.Module):
    max_context: int = 128
    # Capability flag: True when logits[:, t] depends on idx[:, :t+1] only. A model that sees later tokens (kept to
    # measure what leaking does) sets it False; sdgm.models.contract.causal_audit checks the flag against the model.
    causal: bool = True

    stateful: bool = False  # capability: forward_with_state carries information across consecutive windows

    def forward_with_state(self, idx: torch.Tensor, state=None):
        """(logits (B, L, V), next state). Stateless models: the state is ignored and None comes back."""
        return self(idx), None

    def training_loss_with_state(self, idx: torch.Tensor, targets: torch.Tensor, state=None):
        """(loss, stats, next state) for training on consecutive windows. Stateless models: training_loss."""
        if not self.stateful:
            loss, stats = self.training_loss(idx, targets)
            return loss, stats, None
        logits, state = self.forward_with_state(idx, state)  # (B, L, V)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return nll, {"nll": nll.detach()}, state

    def training_loss(self, idx: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Default objective: mean next-token NLL. Models with more terms override this."""
        logits = self(idx)  # (B, L, V)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return nll, {"nll": nll.detach()}

    @torch.no_grad()
    def diagnostics(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-window evaluation extras as scalar tensors averaged over tokens; none by default."""
        return {}

    def num_params(self) -> int:
        # parameters() already yields a tied weight once
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        """Forward-pass FLOPs per token (multiply-add = 2 FLOPs); training is about 3x this."""
        raise NotImplementedError

    def state_bytes_per_sequence(self) -> int:
        """Bytes of recurrent/decoding state one sequence needs during generation."""
        raise NotImplementedError

    # ---- incremental decoding ---------------------------------------------------------------------------------
    # The contract: after feeding x_0 .. x_t (a prompt through prefill, then one decode_step per token), the
    # logits are decode_reference(x[:, :t + 1])[:, -1]:
    #   t < max_context: model(x[:, :t + 1])[:, -1], for every model;
    #   t >= max_context, decode_beyond_context "window" (the default): model(x[:, t - max_context + 1:t + 1])[:, -1],
    #       the forward over the last max_context tokens, the window slides;
    #   t >= max_context, "state" (stateful models only): the model continues with its own state, i.e. what
    #       forward_with_state gives when fed x one token at a time from an empty state (an LSTM keeps its whole
    #       history; Transformer-XL attends to its memory, which slides).
    # The default below keeps the window and recomputes a forward over it, so its cost per token grows with the
    # context; a model with a cheaper exact recurrence or cache overrides init_decode_state and decode_step (and
    # prefill where one forward over the prompt builds its state) and says so in `incremental_decoding`.
    # A step may update the state it is given in place (transformers' cache does): continue from the state it
    # returns, never from an earlier one. tests/test_decode.py checks every registered model against
    # decode_reference, which follows the definition; docs/generation.md says what each model does.
    incremental_decoding: bool = False
    decode_beyond_context: str = "window"  # "window" | "state", as above

    def init_decode_state(self, batch_size: int, device: torch.device | str | None = None) -> dict:
        """Empty decoding state for `batch_size` sequences."""
        if device is None:
            device = next(self.parameters()).device
        return {"context": torch.empty(batch_size, 0, dtype=torch.long, device=device)}

    def decode_step(self, tokens: torch.Tensor, state: dict) -> tuple[torch.Tensor, dict]:
        """tokens (B,) -> (next-token logits (B, V), new state). Default: forward over the last max_context tokens."""
        context = append_to_window(state["context"], tokens, self.max_context)  # (B, <= L)
        return self(context)[:, -1], {"context": context}

    def prefill(self, prompt: torch.Tensor, state: dict | None = None) -> tuple[torch.Tensor, dict]:
        """prompt (B, P), P >= 1, fed after `state` (None: from the start) -> (next-token logits (B, V), state).

        Default: one decode_step per token; without incremental decoding, one forward over the last max_context
        tokens (what the last of those steps would compute)."""
        if state is None and not self.incremental_decoding:
            context = prompt[:, -self.max_context :]  # (B, <= L)
            return self(context)[:, -1], {"context": context}
        if state is None:
            state = self.init_decode_state(prompt.shape[0], prompt.device)
        for i in range(prompt.shape[1]):
            logits, state = self.decode_step(prompt[:, i], state)
        return logits, state

    @torch.no_grad()
    def decode_reference(self, idx: torch.Tensor) -> torch.Tensor:
        """idx (B, T) -> (B, T, V): the logits the contract above asks for after each token, computed by the
        definition (a forward per position; slow, for tests and as the sampler's specification)."""
        if self.decode_beyond_context == "state":
            state, out = None, []
            for t in range(idx.shape[1]):
                logits, state = self.forward_with_state(idx[:, t : t + 1], state)  # (B, 1, V)
                out.append(logits[:, -1])
            return torch.stack(out, dim=1)
        L = self.max_context
        return torch.stack([self(idx[:, max(0, t - L + 1) : t + 1])[:, -1] for t in range(idx.shape[1])], dim=1)


def declared(model: LanguageModel, method: str) -> tuple[int | float | None, str | None]:
    """(value, None) of an optional number a model declares (flops_per_token, state_bytes_per_sequence), or
    (None, the reason) when it does not implement it: shown as "n/a (reason)", never a crash."""
    try:
        return getattr(model, method)(), None
    except NotImplementedError:
        return None, f"{type(model).__name__} does not implement {method}"


def append_to_window(context: torch.Tensor, tokens: torch.Tensor, max_context: int) -> torch.Tensor:
    """context (B, n), tokens (B,) -> the last max_context tokens of both, (B, <= max_context)."""
    return torch.cat([context, tokens[:, None]], dim=1)[:, -max_context:]
