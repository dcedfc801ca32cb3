"""Word-level tokenization, exactly like the PyTorch ``word_language_model`` example, and the tokenized corpus.

``tokenize_corpus`` turns ``{train,valid,test}.txt`` into a vocabulary and int64 id tensors (``line.split() +
["<eos>"]`` per line; vocabulary in order of first appearance in the train split); ``load_tokens`` reads them back,
checked against the ``stats.json`` written beside them. Every file is written to a temporary name in its directory
and renamed onto its own only once complete.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import torch

from ..common.atomic import read_json, sha256_file, write_bytes_atomic, write_json_atomic
from .checks import DataError
from .sources import SPLITS, PathLike

EOS = "<eos>"
UNK = "<unk>"


def vocab_sha256(vocab: list[str]) -> str:
    """Hex SHA-256 of a vocabulary (id order matters): identifies it in stats.json, run.json and checkpoints."""
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------
# Word-level tokenization (as in pytorch/examples word_language_model)
# --------------------------------------------------------------------------


def _open_text(path: PathLike) -> io.TextIOWrapper:
    try:
        return open(path, encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"corpus file {path} does not exist") from None


def build_vocab(train_path: PathLike) -> list[str]:
    """Token types of the train file in order of first appearance (index = id)."""
    seen: dict[str, None] = {}  # insertion-ordered set
    with _open_text(train_path) as f:
        for line in f:
            for tok in line.split() + [EOS]:
                if tok not in seen:
                    seen[tok] = None
    return list(seen)


def _encode_lines(path: PathLike, stoi: dict[str, int]) -> tuple[torch.Tensor, int]:
    """Encode a file; return (int64 ids, number of lines)."""
    unk_id = stoi.get(UNK)
    ids: list[int] = []
    lines = 0
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            lines = lineno
            for tok in line.split() + [EOS]:
                idx = stoi.get(tok, unk_id)
                if idx is None:
                    raise DataError(
                        f"token {tok!r} at {path}:{lineno} is not in the vocabulary and the vocabulary has no {UNK}"
                    )
                ids.append(idx)
    return torch.tensor(ids, dtype=torch.int64), lines


def encode(path: PathLike, stoi: dict[str, int]) -> torch.Tensor:
    """1-D int64 tensor of the token ids of ``path`` (OOV -> ``<unk>`` if present)."""
    return _encode_lines(path, stoi)[0]


def _save_tensor_atomic(path: PathLike, tensor: torch.Tensor) -> None:
    buf = io.BytesIO()
    torch.save(tensor, buf)
    write_bytes_atomic(path, buf.getvalue())


def tokenize_corpus(corpus_dir: PathLike, out_dir: PathLike) -> dict[str, Any]:
    """Tokenize ``corpus_dir/{train,valid,test}.txt`` into ``out_dir``.

    Writes ``vocab.json`` (list of tokens, index = id), ``{split}.pt`` (int64
    tensor) and ``stats.json``; returns the stats dict. Per split, ``unk`` counts
    the tokens whose id is ``<unk>`` (literal ``<unk>`` in the text as well as
    OOV words; 0 if the vocabulary has no ``<unk>``) and ``sha256`` is the
    digest of the input text file.
    """
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    vocab = build_vocab(corpus_dir / "train.txt")
    stoi = {tok: i for i, tok in enumerate(vocab)}
    unk_id = stoi.get(UNK)

    stats: dict[str, Any] = {"vocab_size": len(vocab), "vocab_sha256": vocab_sha256(vocab), "splits": {}}
    tensors: dict[str, torch.Tensor] = {}
    for split in SPLITS:
        path = corpus_dir / f"{split}.txt"
        ids, lines = _encode_lines(path, stoi)
        if ids.numel() == 0:
            raise DataError(f"split {split!r} is empty: {path} contains no tokens")
        tensors[split] = ids
        stats["splits"][split] = {
            "tokens": int(ids.numel()),
            "lines": lines,
            "unk": int((ids == unk_id).sum()) if unk_id is not None else 0,
            "sha256": sha256_file(path),
        }

    # Write only after every split encoded successfully.
    write_json_atomic(out_dir / "vocab.json", vocab)
    for split, ids in tensors.items():
        _save_tensor_atomic(out_dir / f"{split}.pt", ids)
    write_json_atomic(out_dir / "stats.json", stats)
    return stats


def check_counts(stats: dict[str, Any], expected: dict[str, Any]) -> None:
    """Compare ``stats`` (from tokenize_corpus) with expected counts.

    ``expected`` may contain ``vocab_size`` and ``{train,valid,test}_tokens``;
    absent keys (or None values) are not checked. Raises DataError listing
    every mismatch.
    """
    actual: dict[str, int] = {"vocab_size": stats["vocab_size"]}
    for split in SPLITS:
        if split in stats.get("splits", {}):
            actual[f"{split}_tokens"] = stats["splits"][split]["tokens"]
    valid_keys = ["vocab_size"] + [f"{s}_tokens" for s in SPLITS]
    problems = []
    for key, want in expected.items():
        if key not in valid_keys:
            raise DataError(f"unknown expected-count key {key!r}; valid keys: {', '.join(valid_keys)}")
        if want is None:
            continue
        got = actual.get(key)
        if got != want:
            problems.append(f"{key}: expected {want}, got {got}")
    if problems:
        raise DataError("corpus counts differ from expected: " + "; ".join(problems))


def load_tokens(tokens_dir: PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Load ``{split}.pt`` tensors and ``vocab.json`` written by tokenize_corpus.

    If ``stats.json`` is there, the vocabulary (size and digest) and the token counts must match it: token ids
    read with another vocabulary would be a silently different corpus.
    """
    tokens_dir = Path(tokens_dir)
    needed = [tokens_dir / "vocab.json"] + [tokens_dir / f"{s}.pt" for s in SPLITS]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise DataError(f"tokenized corpus incomplete, missing: {', '.join(missing)} (run tokenize_corpus first)")
    vocab = read_json(tokens_dir / "vocab.json", "the vocabulary", DataError)
    if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
        raise DataError(f"{tokens_dir / 'vocab.json'} is not a JSON list of strings")
    stats = (
        read_json(tokens_dir / "stats.json", "the corpus statistics", DataError)
        if (tokens_dir / "stats.json").is_file()
        else {}
    )
    if not isinstance(stats, dict):
        raise DataError(f"{tokens_dir / 'stats.json'} is not a JSON object")
    if stats.get("vocab_size", len(vocab)) != len(vocab) or stats.get(
        "vocab_sha256", vocab_sha256(vocab)
    ) != vocab_sha256(vocab):
        raise DataError(
            f"{tokens_dir / 'vocab.json'} ({len(vocab)} tokens) is not the vocabulary the token ids were "
            f"made with (stats.json: {stats.get('vocab_size')} tokens, digest differs); tokenize again"
        )
    splits: dict[str, torch.Tensor] = {}
    for split in SPLITS:
        path = tokens_dir / f"{split}.pt"
        try:
            ids = torch.load(path, weights_only=True)
        except Exception as exc:
            raise DataError(f"{path} is unreadable ({type(exc).__name__}: {exc})") from exc
        if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.dim() != 1:
            raise DataError(f"{path} does not hold a 1-D int64 tensor")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(vocab)):
            raise DataError(f"{path} has token ids outside the vocabulary (size {len(vocab)})")
        want = stats.get("splits", {}).get(split, {}).get("tokens", ids.numel())
        if ids.numel() != want:
            raise DataError(f"{path} holds {ids.numel()} tokens, stats.json says {want}")
        splits[split] = ids
    return splits, vocab
