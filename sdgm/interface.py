"""The one contract every sequence model in this project follows.

    logits = model(idx)                       # idx: (B, L) int64  ->  (B, L, V) next-token logits
    loss, stats = model.training_loss(idx, targets)
    model.diagnostics(idx)                    # extra evaluation numbers (e.g. SDGM's cosine), may be {}
    model.num_params(), model.flops_per_token(), model.state_bytes_per_sequence()
    model.max_context                         # longest window the model is trained/evaluated on
    model.causal                              # False for a model that is known to see later tokens

The trainer, evaluator, sampler and report only use these names; they never branch on a model's name.
Position t of the logits may depend on idx[:, :t+1] only (tests/test_causality.py checks every model); a model
that breaks this on purpose says so with `causal = False`, and the report marks its rows.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LanguageModel(nn.Module):
    max_context: int = 128
    # Capability flag: True when logits[:, t] depends on idx[:, :t+1] only. A model that sees later tokens (kept to
    # measure what leaking does) sets it False; sdgm.evaluate.causal_audit checks the flag against the model.
    causal: bool = True

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
