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
def causality_violation(
    model: LanguageModel, vocab_size: int, L: int, t: int | None = None, batch: int = 2, seed: int = 0
) -> float:
    """Largest change of logits[:, :t+1] when every token after position t is replaced (0.0 for a valid LM)."""
    was_training = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    t = L // 2 if t is None else t
    a = torch.randint(0, vocab_size, (batch, L), generator=g)
    b = a.clone()
    b[:, t + 1 :] = torch.randint(0, vocab_size, (batch, L - t - 1), generator=g)
    la = model(a.to(device))[:, : t + 1].float()
    lb = model(b.to(device))[:, : t + 1].float()
    model.train(was_training)
    return (la - lb).abs().max().item()


CAUSAL_TOLERANCE = 1e-4  # largest logit change (absolute, fp32) still counted as "unchanged"
AUDIT_CUTS = 16  # cut positions per window (every position of a window shorter than 17 tokens)
AUDIT_WINDOWS = 2  # windows of the text the audit reads
AUDIT_TOP_IDS = 32  # the most frequent ids, one of the replacements
AUDIT_REPLACEMENTS = ("corpus frequencies", "most frequent ids", "other text")
AUDIT_MODES = ("eval", "train")


def audit_positions(L: int) -> list[int]:
    """Where the audit cuts a window of L tokens: AUDIT_CUTS positions spread from 0 to L - 2, both included."""
    if L < 2:
        return []
    n = min(L - 1, AUDIT_CUTS)
    return sorted({round(i * (L - 2) / max(n - 1, 1)) for i in range(n)})


def _audit_inputs(
    text: torch.Tensor, vocab_size: int, L: int, g: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(reference rows (N, L), perturbed rows (N, L), cut of each row (N,)): AUDIT_WINDOWS windows of `text`, each
    cut at every audit position t, the tokens after t replaced in each of the AUDIT_REPLACEMENTS ways."""
    text = text.flatten().long().cpu()
    if len(text) < 2 * L:  # a short text is read round and round
        text = text.repeat(-(-2 * L // max(len(text), 1)))
    counts = torch.bincount(text.clamp(0, vocab_size - 1), minlength=vocab_size).double()  # (V,)
    top = torch.argsort(counts, descending=True, stable=True)[:AUDIT_TOP_IDS]  # (k,)
    positions = audit_positions(L)
    refs, perturbed, cuts = [], [], []
    for _ in range(AUDIT_WINDOWS):
        s, o = torch.randint(0, len(text) - L + 1, (2,), generator=g).tolist()
        if abs(s - o) < L:  # the other text: a window that does not overlap this one
            o = (s + L) % (len(text) - L + 1)
        a, other = text[s : s + L], text[o : o + L]  # (L,), (L,)
        by_freq = torch.multinomial(counts, L, replacement=True, generator=g)  # (L,)
        pick = torch.randint(0, len(top), (L,), generator=g)
        frequent = torch.where(top[pick] == a, top[(pick + 1) % len(top)], top[pick])  # a frequent id, never a's own
        for t in positions:
            for repl in (by_freq, frequent, other):
                b = a.clone()
                b[t + 1 :] = repl[t + 1 :]
                refs.append(a)
                perturbed.append(b)
                cuts.append(t)
    return torch.stack(refs), torch.stack(perturbed), torch.tensor(cuts)


@torch.no_grad()
def causal_audit(
    model: LanguageModel,
    vocab_size: int,
    L: int,
    tolerance: float = CAUSAL_TOLERANCE,
    seed: int = 0,
    text: torch.Tensor | None = None,
    batch: int = 16,
) -> dict:
    """Does any logit at a position <= t move when the tokens after t change?

    `text` (1-D token ids): real text, the validation split for a trained model; None: uniform random ids. Windows
    of L tokens of it are cut at audit_positions(L), and the tokens after each cut replaced by draws from the text's
    own frequencies, by its most frequent ids (always a different id) and by another window of the text. Each is run
    in eval mode and in train mode (dropout on: the reference and the perturbed rows get the same random numbers);
    the mode the model was in is restored.

    {"max_logit_change": largest change, "passed": change <= tolerance, "declared_causal": model.causal, ...}
    "passed" says whether the model behaved as a valid (causal) language model, whatever it declares.
    """
    positions = audit_positions(L)
    if not positions:
        raise ValueError(f"a window of {L} token(s) has no position with a later token to change")
    g = torch.Generator().manual_seed(seed)
    source = "random ids" if text is None else "given text"
    if text is None:
        text = torch.randint(0, vocab_size, (4 * L,), generator=g)
    refs, perturbed, cuts = _audit_inputs(text, vocab_size, L, g)  # (N, L), (N, L), (N,)
    device = next(model.parameters()).device
    was_training, change = model.training, 0.0
    try:
        for mode in AUDIT_MODES:
            model.train(mode == "train")
            for i in range(0, len(refs), batch):
                rows = slice(i, i + batch)
                la = _forward_seeded(model, refs[rows], vocab_size, device, seed + i)  # (b, L, V)
                lb = _forward_seeded(model, perturbed[rows], vocab_size, device, seed + i)  # (b, L, V)
                keep = torch.arange(L, device=device)[None, :] <= cuts[rows].to(device)[:, None]  # (b, L)
                c = torch.where(keep, (la - lb).abs().amax(-1), 0).max().item()
                change = max(change, math.inf if math.isnan(c) else c)
    finally:
        model.train(was_training)
    return {
        "max_logit_change": change,
        "passed": change <= tolerance,
        "tolerance": tolerance,
        "positions": positions,
        "windows": AUDIT_WINDOWS,
        "replacements": list(AUDIT_REPLACEMENTS),
        "modes": list(AUDIT_MODES),
        "text": source,
        "declared_causal": bool(model.causal),
    }


def _forward_seeded(
    model: LanguageModel, idx: torch.Tensor, vocab_size: int, device: torch.device, seed: int
) -> torch.Tensor:
    """model(idx) as fp32 (B, L, V), from a fresh copy of idx, with the random state set to `seed` (the same dropout
    masks for two inputs of one shape); the caller's random state is left as it was."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        logits = model(idx.to(device, copy=True))
    check_logits(logits, (*idx.shape, vocab_size), f"causality audit of {type(model).__name__}", finite=False)
    return logits.float()


class ContractError(AssertionError):
    pass


def _fail(name: str, what: str):
    raise ContractError(f"model {name!r}: {what}")


def check_logits(logits, shape: tuple[int, int, int | None], what: str, finite: bool = True) -> None:
    """`logits` must be a floating tensor of exactly `shape` (B, L, V) (V None: any width), every value finite (unless
    finite=False); otherwise ContractError, one line starting with `what`."""
    if not isinstance(logits, torch.Tensor):
        raise ContractError(f"{what}: the forward returned a {type(logits).__name__}, not a tensor of logits")
    if logits.dim() != 3 or any(want is not None and got != want for got, want in zip(logits.shape, shape)):
        raise ContractError(f"{what}: logits of shape {tuple(logits.shape)}, not (B, L, V) = {tuple(shape)}")
    if not logits.dtype.is_floating_point:
        raise ContractError(f"{what}: logits of dtype {logits.dtype}, not a floating-point type")
    if finite:
        bad = (~torch.isfinite(logits)).sum().item()
        if bad:
            raise ContractError(f"{what}: {bad} of {logits.numel()} logits are NaN or infinite")


def check_unchanged(given: torch.Tensor, original: torch.Tensor, what: str) -> None:
    """The copy of the tokens a model was given still equals the original: a model must not rewrite its input
    (the evaluation's targets come from the same tokens); otherwise ContractError, one line."""
    if not torch.equal(given, original):
        raise ContractError(
            f"{what}: the model changed its input tokens in place "
            f"({(given != original).sum().item()} of {given.numel()} ids); forward must not modify idx"
        )


@torch.no_grad()
def check_forward(model: LanguageModel, idx: torch.Tensor, vocab_size: int, what: str) -> None:
    """One forward of idx (B, L) in eval mode: finite floating logits of shape (B, L, vocab_size), idx untouched;
    otherwise ContractError, one line. The mode the model was in is restored."""
    was_training = model.training
    model.eval()
    try:
        given = idx.clone()
        check_logits(model(given), (*idx.shape, vocab_size), what)
        check_unchanged(given, idx, what)
    finally:
        model.train(was_training)


def check_shapes(name: str, model, vocab_size: int, seq_len: int) -> None:
    """forward (B, L) -> (B, L, V) floating and finite, its input left as it was; training_loss a finite scalar that
    has gradients."""
    idx = torch.randint(0, vocab_size, (2, seq_len))
    given = idx.clone()
    check_logits(model(given), (2, seq_len, vocab_size), f"model {name!r}: forward of (2, {seq_len}) tokens")
    check_unchanged(given, idx, f"model {name!r}: forward of (2, {seq_len}) tokens")
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
        _fail(
            name,
            f"declares causal = {audit['declared_causal']}, but the largest change of an earlier logit "
            f"when later tokens change is {audit['max_logit_change']:.3g} (tolerance {audit['tolerance']:g})",
        )
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
    model = build_model(name, vocab_size, seq_len=seq_len, **options)
    check_shapes(name, model.train(), vocab_size, seq_len)
    model.eval()
    audit = check_causal(name, model, vocab_size, seq_len)
    check_decoding(name, model, vocab_size)
    check_declared(name, model)
    return audit
