"""The model contract as checks anyone can run on a model, built in or from an installed package.

    from sdgm.models.contract import check_model
    def test_my_model():                       # in the plug-in's own tests
        check_model("my_model", vocab_size=50, seq_len=16, d_model=32)

Each check builds the model by its registered name (sdgm.build_model), so it also checks the registration, and
raises ContractError saying what is wrong. The project's own tests run them on every registered model.

The causality audit (check_causal here; sdgm.harness.experiment runs it on every trained model) replaces every token
after a position t and measures how far the logits at positions <= t move; a valid language model moves them by 0
(up to floating-point noise, CAUSAL_TOLERANCE).
"""
from __future__ import annotations

import math

import torch

from .interface import LanguageModel, declared
from .registry import build_model


# ---- the causality audit ---------------------------------------------------------------------------------------
@torch.no_grad()
def causality_violation(model: LanguageModel, vocab_size: int, L: int, t: int | None = None, batch: int = 2,
                        seed: int = 0) -> float:
    """Largest change of logits[:, :t+1] when every token after position t is replaced (0.0 for a valid LM)."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    t = L // 2 if t is None else t
    a = torch.randint(0, vocab_size, (batch, L), generator=g)
    b = a.clone()
    b[:, t + 1:] = torch.randint(0, vocab_size, (batch, L - t - 1), generator=g)
    la = model(a.to(device))[:, :t + 1].float()
    lb = model(b.to(device))[:, :t + 1].float()
    model.train(was_training)
    return (la - lb).abs().max().item()


CAUSAL_TOLERANCE = 1e-4  # largest logit change (absolute, fp32) still counted as "unchanged"


def audit_positions(L: int) -> list[int]:
    """Where the audit cuts a window of L tokens: the start, a quarter, the middle and the last position but one."""
    return sorted({t for t in (0, L // 4, L // 2, L - 2) if 0 <= t <= L - 2})


@torch.no_grad()
def causal_audit(model: LanguageModel, vocab_size: int, L: int, tolerance: float = CAUSAL_TOLERANCE,
                 seed: int = 0) -> dict:
    """causality_violation at several positions of a window of L tokens.

    {"max_logit_change": largest change, "passed": change <= tolerance, "declared_causal": model.causal, ...}
    "passed" says whether the model behaved as a valid (causal) language model, whatever it declares.
    """
    positions = audit_positions(L)
    if not positions:
        raise ValueError(f"a window of {L} token(s) has no position with a later token to change")
    change = max(causality_violation(model, vocab_size, L, t=t, seed=seed + i) for i, t in enumerate(positions))
    return {"max_logit_change": change, "passed": change <= tolerance, "tolerance": tolerance,
            "positions": positions, "declared_causal": bool(model.causal)}


class ContractError(AssertionError):
    pass


def _fail(name: str, what: str):
    raise ContractError(f"model {name!r}: {what}")


def check_shapes(name: str, model, vocab_size: int, seq_len: int) -> None:
    """forward (B, L) -> (B, L, V) finite; training_loss a finite scalar that has gradients."""
    idx = torch.randint(0, vocab_size, (2, seq_len))
    logits = model(idx)
    if tuple(logits.shape) != (2, seq_len, vocab_size):
        _fail(name, f"forward of (2, {seq_len}) tokens gave logits of shape {tuple(logits.shape)}, "
                    f"not (2, {seq_len}, {vocab_size})")
    if not torch.isfinite(logits).all():
        _fail(name, "forward gave non-finite logits")
    loss, stats = model.training_loss(idx[:, :-1], idx[:, 1:])
    if loss.dim() != 0 or not math.isfinite(loss.item()) or not loss.requires_grad:
        _fail(name, f"training_loss must be a finite scalar with gradients, got {loss!r}")
    if not isinstance(stats, dict):
        _fail(name, f"training_loss must return (loss, dict), got a {type(stats).__name__}")
    if model.max_context < 1:
        _fail(name, f"max_context is {model.max_context}")


def check_causal(name: str, model, vocab_size: int, seq_len: int) -> dict:
    """The model behaves as it declares: `causal = True` only if no logit moves when later tokens change."""
    audit = causal_audit(model, vocab_size, seq_len)
    if audit["passed"] != audit["declared_causal"]:
        _fail(name, f"declares causal = {audit['declared_causal']}, but the largest change of an earlier logit "
                    f"when later tokens change is {audit['max_logit_change']:.3g} (tolerance {audit['tolerance']:g})")
    return audit


@torch.no_grad()
def check_decoding(name: str, model, vocab_size: int, tol: float = 1e-4) -> None:
    """prefill, then decode_step one token at a time, gives decode_reference's logits, within and past the
    window (sdgm.models.interface: incremental decoding)."""
    T = 2 * model.max_context + 3
    idx = torch.randint(0, vocab_size, (2, T))
    ref = model.decode_reference(idx)  # (2, T, V)
    logits, state = model.prefill(idx[:, :1])
    got = [logits]
    for t in range(1, T):
        logits, state = model.decode_step(idx[:, t], state)
        got.append(logits)
    err = (torch.stack(got, 1) - ref).abs().max().item()
    if not err <= tol * max(1.0, ref.abs().max().item()):
        _fail(name, f"decoding token by token differs from decode_reference by {err:.3g}")


def check_declared(name: str, model) -> None:
    """flops_per_token and state_bytes_per_sequence: a positive number, or not implemented (then "n/a")."""
    for method in ("flops_per_token", "state_bytes_per_sequence"):
        value, _ = declared(model, method)
        if value is not None and not value > 0:
            _fail(name, f"{method}() returned {value!r}")


def check_model(name: str, vocab_size: int = 50, seq_len: int = 16, seed: int = 0, **options) -> dict:
    """Every check above on a fresh model `name` (built with `options`); returns its causality audit."""
    torch.manual_seed(seed)
    model = build_model(name, vocab_size, seq_len=seq_len, **options) if _takes_seq_len(name) else \
        build_model(name, vocab_size, **options)
    check_shapes(name, model.train(), vocab_size, seq_len)
    model.eval()
    audit = check_causal(name, model, vocab_size, seq_len)
    check_decoding(name, model, vocab_size)
    check_declared(name, model)
    return audit


def _takes_seq_len(name: str) -> bool:
    import dataclasses

    from .registry import model_classes

    return "seq_len" in {f.name for f in dataclasses.fields(model_classes(name)[0])}
