"""Perplexity and model diagnostics, identical for every model. (The causality audit, which every trained model
undergoes too, is part of the model contract: sdgm.models.contract.)

Perplexity = exp(mean NLL over every predicted token) of a whole split, read in non-overlapping windows of
L tokens: window i feeds tokens [iL, iL + L) and predicts [iL + 1, iL + L + 1), so each token after the first
is predicted exactly once, with the context available inside its window. The last window may be shorter.

A model is scored against tokens it cannot touch: it is given a copy of its input, and a model that rewrites that
copy in place, or returns logits not of shape (B, L, V) or not of a floating type, is refused (ContractError, one
line) rather than scored.

`evaluate_streams` is the second mode, for models that carry state (`stateful`): the split is cut into
`batch_size` contiguous streams (as `batchify` in the PyTorch word_language_model example), each read in
consecutive windows of L, and the state (hidden state, memory) is carried, detached, from one window to the
next. Each stream's tokens after its first are predicted once; the `len % batch_size` trailing tokens of the
split are dropped. Perplexity is again exp(mean NLL over every predicted token).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..models.contract import check_logits, check_unchanged
from ..models.interface import LanguageModel, detach_state


def model_vocab_size(model: LanguageModel) -> int | None:
    """V of the logits the model must return: its config's vocab_size (None for a model without a config)."""
    return getattr(getattr(model, "cfg", None), "vocab_size", None)


def perplexity(nll: float) -> float:
    """exp(mean NLL); inf where exp overflows (NLL past 709 nats: a diverged model), never OverflowError."""
    return math.inf if nll > 709.0 else math.exp(nll)


def checked_nll_sum(
    model: LanguageModel, logits: torch.Tensor, given: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> float:
    """Summed NLL of the targets y (b, n) under logits (b, n, V), once the logits have the model's shape and the
    model has left its copy `given` of the input x as it was (ContractError otherwise)."""
    what = f"evaluation of {type(model).__name__}"
    check_logits(logits, (*x.shape, model_vocab_size(model)), what, finite=False)
    check_unchanged(given, x, what)
    return F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()


def windows(ids: torch.Tensor, L: int) -> list[tuple[int, int]]:
    """(start, length) of the non-overlapping evaluation windows of a 1-D token stream."""
    n_pred = len(ids) - 1
    return [(s, min(L, n_pred - s)) for s in range(0, n_pred, L)]


@torch.no_grad()
def evaluate(
    model: LanguageModel,
    ids: torch.Tensor,
    L: int,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    max_windows: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict:
    """{"nll", "ppl", "tokens", **diagnostics} over a split (or its first `max_windows` windows)."""
    was_training = model.training
    model.eval()
    wins = windows(ids, L)
    if max_windows is not None:
        wins = wins[:max_windows]
    full = [s for s, n in wins if n == L]
    parts = [(s, n) for s, n in wins if n < L]
    nll_sum, n_tok, diag_sums = 0.0, 0, {}
    device = torch.device(device)

    def run(starts: list[int], n: int):
        nonlocal nll_sum, n_tok
        x = torch.stack([ids[s : s + n] for s in starts]).to(device)  # (b, n)
        y = torch.stack([ids[s + 1 : s + n + 1] for s in starts]).to(device)  # (b, n)
        given = x.clone()  # the model's own copy: x and y stay what they were
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = model(given)  # (b, n, V)
            diag = model.diagnostics(given)
        nll_sum += checked_nll_sum(model, logits, given, x, y)
        n_tok += y.numel()
        for k, v in diag.items():
            diag_sums[k] = diag_sums.get(k, 0.0) + float(v) * y.numel()

    for i in range(0, len(full), batch_size):
        run(full[i : i + batch_size], L)
    for s, n in parts:
        run([s], n)
    model.train(was_training)
    if n_tok == 0:
        raise ValueError("nothing to evaluate: the split has fewer than 2 tokens")
    nll = nll_sum / n_tok
    out = {"nll": nll, "ppl": perplexity(nll), "tokens": n_tok}
    out.update({k: v / n_tok for k, v in diag_sums.items()})
    return out


def batchify(ids: torch.Tensor, n_streams: int) -> torch.Tensor:
    """1-D stream (N,) -> (n_streams, N // n_streams): row b is the b-th contiguous chunk; the rest is dropped."""
    rows = len(ids) // n_streams
    if rows == 0:
        raise ValueError(f"{len(ids)} tokens cannot fill {n_streams} streams")
    return ids[: rows * n_streams].view(n_streams, rows)


def stream_windows(rows: int, L: int) -> list[tuple[int, int]]:
    """(start, length) of consecutive windows over streams of `rows` tokens: inputs [s, s + n), targets + 1."""
    return [(s, min(L, rows - 1 - s)) for s in range(0, rows - 1, L)]


@torch.no_grad()
def evaluate_streams(
    model: LanguageModel,
    ids: torch.Tensor,
    L: int,
    batch_size: int = 10,
    device: str | torch.device = "cpu",
    max_windows: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict:
    """{"nll", "ppl", "tokens"} with state carried across consecutive windows of `batch_size` streams."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    data = batchify(ids, batch_size).to(device)  # (b, rows)
    wins = stream_windows(data.shape[1], L)
    if max_windows is not None:
        wins = wins[:max_windows]
    nll_sum, n_tok, state = 0.0, 0, None
    for s, n in wins:
        x, y = data[:, s : s + n], data[:, s + 1 : s + n + 1]  # (b, n), views of one tensor
        given = x.clone()  # the model's own copy: the targets y stay what they were
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits, state = model.forward_with_state(given, state)  # (b, n, V)
        nll_sum += checked_nll_sum(model, logits, given, x, y)
        state = detach_state(state)
        n_tok += y.numel()
    model.train(was_training)
    if n_tok == 0:
        raise ValueError("nothing to evaluate: the streams have fewer than 2 tokens")
    nll = nll_sum / n_tok
    return {"nll": nll, "ppl": perplexity(nll), "tokens": n_tok}
