"""The readings of the paper measured (docs/readings.md): what a trained run gives under other readings of a
measurement, and what each architecture reading counts in parameters. Each writes one JSON record; the tables
are rendered from those records alone (sdgm.reporting.readings).

measure_run(run_dir, tokens_dir, ...) -> {"run_id", "experiment", "corpus", "cosine", "evaluations"}
    cosine (SDGM runs): cos(X_hat_t, target) over the validation split read in windows of L (as evaluate does),
      target   "current": X_t, the embedding of the token at t (the record's cosine_val), or
               "next":    X_{t+1}, the embedding of the token the head predicts at t;
      vectors  "raw", or "standardized": every embedding channel of X_hat and of the target minus its mean over the
               split's tokens, divided by its standard deviation (each of the two with its own statistics);
      pooled   "mean": the mean over tokens of the per-token cosine, or
               "pooled": one cosine of the whole (tokens x D) matrices, sum_t <a_t, b_t> / (||A||_F ||B||_F).
    evaluations: per entry of readings.evaluations naming this run's experiment, the validation perplexity of the
      trained weights with the model options replaced for evaluation only (Transformer-XL's published protocol:
      mem_len 640, clamp_len 400, same_length), read in batch_size streams with the state carried (evaluate_streams).
parameter_readings(grid, vocab_sizes, base) -> {"rows": [...]}: every combination of the grid's options, built on
    torch's meta device (no memory, no arithmetic) and counted as the model counts itself (a tied weight once).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ..data.tokens import load_tokens
from ..models.registry import build_model, load_run
from .evaluate import evaluate_streams, windows

TARGETS = ("current", "next")
VECTORS = ("raw", "standardized")
POOLING = ("mean", "pooled")
PARAMETER_OPTIONS = ("tie_weights", "head", "n_atoms", "kernel_size", "d_model")


def cosine_key(target: str, vectors: str, pooling: str) -> str:
    return f"{target}/{vectors}/{pooling}"


@torch.no_grad()
def _sdgm_windows(model, ids: torch.Tensor, L: int, batch_size: int):
    """Yield (X_hat, X, X_next), each (n, D) fp64, over the split's non-overlapping windows of L tokens."""
    wins = windows(ids, L)
    for i in range(0, len(wins), batch_size):
        group = wins[i : i + batch_size]
        for n in sorted({n for _, n in group}):  # the last window may be shorter
            starts = [s for s, m in group if m == n]
            x_idx = torch.stack([ids[s : s + n] for s in starts])  # (b, n)
            y_idx = torch.stack([ids[s + 1 : s + n + 1] for s in starts])  # (b, n)
            x, _, x_hat = model.parts(x_idx)  # (b, n, D) each
            yield (x_hat.flatten(0, 1).double(), x.flatten(0, 1).double(), model.embed(y_idx).flatten(0, 1).double())


def cosine_readings(model, ids: torch.Tensor, L: int, batch_size: int = 32) -> dict[str, float]:
    """{cosine_key(target, vectors, pooling): value} over the split (two passes: the channel statistics, then the
    cosines), accumulated in float64."""
    n, sums, squares = 0, None, None
    for parts in _sdgm_windows(model, ids, L, batch_size):  # pass 1: per-channel mean and std of each matrix
        batch_sums = [p.sum(0) for p in parts]
        batch_squares = [(p * p).sum(0) for p in parts]
        sums = batch_sums if sums is None else [a + b for a, b in zip(sums, batch_sums)]
        squares = batch_squares if squares is None else [a + b for a, b in zip(squares, batch_squares)]
        n += parts[0].shape[0]
    means = [s / n for s in sums]
    stds = [(q / n - m * m).clamp_min(0).sqrt().clamp_min(1e-12) for q, m in zip(squares, means)]
    acc = {cosine_key(t, v, p): 0.0 for t in TARGETS for v in VECTORS for p in POOLING}
    pooled = {(t, v): [0.0, 0.0, 0.0] for t in TARGETS for v in VECTORS}  # sum <a, b>, sum |a|^2, sum |b|^2
    for x_hat, x, x_next in _sdgm_windows(model, ids, L, batch_size):  # pass 2
        for vectors in VECTORS:
            if vectors == "raw":
                a, targets = x_hat, {"current": x, "next": x_next}
            else:
                a = (x_hat - means[0]) / stds[0]
                targets = {"current": (x - means[1]) / stds[1], "next": (x_next - means[2]) / stds[2]}
            for target, b in targets.items():
                acc[cosine_key(target, vectors, "mean")] += F.cosine_similarity(a, b, dim=-1).sum().item()
                sums_ab = pooled[target, vectors]
                sums_ab[0] += (a * b).sum().item()
                sums_ab[1] += (a * a).sum().item()
                sums_ab[2] += (b * b).sum().item()
    for (target, vectors), (ab, aa, bb) in pooled.items():
        acc[cosine_key(target, vectors, "pooled")] = ab / math.sqrt(aa * bb) if aa > 0 and bb > 0 else math.nan
        acc[cosine_key(target, vectors, "mean")] /= n
    return acc


def evaluate_with_options(model, options: dict, ids: torch.Tensor, L: int, batch_size: int) -> dict:
    """Validation perplexity of `model`'s trained weights rebuilt with `options` (evaluation only), the state carried
    across consecutive windows of `batch_size` streams. The options must leave every weight's shape as it was."""
    if not model.stateful:
        raise ValueError(f"{type(model).__name__} carries no state: a streamed evaluation needs one")
    cfg = dataclasses.replace(model.cfg, **options)
    again = type(model)(cfg)
    again.load_state_dict(model.state_dict())
    res = evaluate_streams(again, ids, L, batch_size)
    return {
        "options": dict(options),
        "batch_size": batch_size,
        "val_ppl": res["ppl"],
        "val_nll": res["nll"],
        "val_tokens": res["tokens"],
    }


def measure_run(
    run_dir: str | Path,
    tokens_dir: str | Path,
    *,
    run_id: str,
    experiment: str,
    corpus: str,
    seq_len: int,
    evaluations: dict | None = None,
    batch_size: int = 32,
) -> dict:
    """The readings of one trained run (module docstring); `evaluations` are the config's readings.evaluations."""
    model, _ = load_run(run_dir)
    splits, _ = load_tokens(tokens_dir)
    valid = splits["valid"]
    record = {
        "kind": "readings_run",
        "run_id": run_id,
        "experiment": experiment,
        "corpus": corpus,
        "seq_len": seq_len,
        "cosine": None,
        "evaluations": {},
    }
    if hasattr(model, "parts") and hasattr(model, "atoms"):  # SDGM: X, C, X_hat
        record["cosine"] = cosine_readings(model, valid, seq_len, batch_size)
    for name, ev in (evaluations or {}).items():
        if ev["experiment"] == experiment:
            record["evaluations"][name] = evaluate_with_options(model, ev["options"], valid, seq_len, ev["batch_size"])
    return record


def parameter_readings(grid: dict, vocab_sizes: dict[str, int], base: dict) -> dict:
    """Parameter count of SDGM at `base` (the default's options) with every combination of `grid`'s options
    (PARAMETER_OPTIONS), for each corpus's vocabulary."""
    rows = []
    names = [k for k in PARAMETER_OPTIONS if k in grid]
    for corpus, vocab in vocab_sizes.items():
        for values in itertools.product(*(grid[k] for k in names)):
            options = {**base, **dict(zip(names, values))}
            with torch.device("meta"):
                params = build_model("sdgm", vocab, **options).num_params()
            rows.append({"corpus": corpus, "vocab_size": vocab, **{k: options[k] for k in names}, "params": params})
    return {"kind": "readings_parameters", "base": base, "grid": {k: grid[k] for k in names}, "rows": rows}
