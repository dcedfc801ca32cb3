"""Corpus acquisition and word-level tokenization.

Two stages, each usable on its own from the Snakemake rules:

1. ``materialize``: obtain the raw text of one split (shipped xz file, URL, or
   Hugging Face dataset), verify its SHA-256 and write it atomically.
2. ``tokenize_corpus``: turn ``{train,valid,test}.txt`` into a vocabulary and
   int64 id tensors, exactly like the PyTorch ``word_language_model`` example
   (``line.split() + ["<eos>"]`` per line; vocabulary in order of first
   appearance in the train split).

Every file this module writes goes through a temporary file in the target's
directory followed by ``os.replace``, so a crash or a failed check never leaves
a half-written or unverified file under its final name.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import logging
import lzma
import math
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .atomic import StorageError, atomic_open, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "valid", "test")
EOS = "<eos>"
UNK = "<unk>"
CORPORA_DIR = Path(__file__).parent / "corpora"

SOURCE_TYPES: tuple[str, ...] = ("shipped", "url", "hf")
_CHUNK = 1 << 20  # bytes per read when streaming (1 MiB)
_DEFAULT_TIMEOUT = 60.0  # seconds without data before a "url" download is given up (source.timeout)
_DEFAULT_DEADLINE = 3600.0  # seconds for a whole "url" download, however it trickles (source.deadline)
# what the text of a corpus may hold (the corpus's `check`); UTF-8 is always required, the tokenizer reads it
CONTENT_CHECK: dict[str, Any] = {"nul": True, "max_line_bytes": 1_000_000, "max_token_chars": 1000}

PathLike = str | os.PathLike[str]


class DataError(RuntimeError):
    """Any problem obtaining, verifying or tokenizing a corpus."""


class ChecksumError(DataError):
    """The SHA-256 of materialized text differs from the expected digest."""


class ContentError(DataError):
    """Text that is not a corpus: invalid UTF-8, a NUL byte, an absurdly long line or token."""


class ContentChecker:
    """Checks a split's text as it streams in, line by line: valid UTF-8, no NUL byte, no line longer than
    max_line_bytes, no whitespace-separated token longer than max_token_chars (0: no limit). The first problem
    raises ContentError naming the file, the line and the offending bytes."""

    def __init__(self, name: str, check: dict[str, Any] | None = None) -> None:
        unknown = set(check or {}) - set(CONTENT_CHECK)
        if unknown:
            raise DataError(f"unknown corpus check option(s) {sorted(unknown)}; options: {sorted(CONTENT_CHECK)}")
        self.name, self.opts = name, {**CONTENT_CHECK, **(check or {})}
        self.lineno, self.pending = 1, b""

    def fail(self, what: str, line: bytes, at: int, bad: bytes) -> None:
        context = line[max(0, at - 20):at + len(bad) + 20]
        raise ContentError(f"{self.name}: line {self.lineno}, byte {at + 1}: {what}: {bad!r} in {context!r}")

    def feed(self, chunk: bytes) -> None:
        lines = (self.pending + chunk).split(b"\n")
        self.pending = lines.pop()
        for line in lines:
            self.line(line)
            self.lineno += 1
        limit = self.opts["max_line_bytes"]
        if limit and len(self.pending) > limit:  # found before the whole line is in memory
            self.line(self.pending)

    def close(self) -> None:
        if self.pending:
            self.line(self.pending)

    def line(self, line: bytes) -> None:
        o = self.opts
        if o["max_line_bytes"] and len(line) > o["max_line_bytes"]:
            self.fail(f"line longer than {o['max_line_bytes']} bytes (check.max_line_bytes)", line,
                      o["max_line_bytes"], line[o["max_line_bytes"]:o["max_line_bytes"] + 8])
        if o["nul"] and b"\0" in line:
            self.fail("NUL byte (check.nul: false allows it)", line, line.index(b"\0"), b"\0")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail(f"not valid UTF-8 ({e.reason})", line, e.start, line[e.start:e.end])
        if o["max_token_chars"] and len(text) > o["max_token_chars"]:
            for tok in text.split():
                if len(tok) > o["max_token_chars"]:
                    at = len(text[:text.index(tok)].encode("utf-8"))
                    self.fail(f"token of {len(tok)} characters, more than {o['max_token_chars']} "
                              f"(check.max_token_chars)", line, at, tok[:16].encode("utf-8"))


# --------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------


def sha256_file(path: PathLike) -> str:
    """Hex SHA-256 of the bytes of ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def vocab_sha256(vocab: list[str]) -> str:
    """Hex SHA-256 of a vocabulary (id order matters): identifies it in stats.json, run.json and checkpoints."""
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()


def _read_sha256sums() -> dict[str, dict[str, str]]:
    """Parse ``CORPORA_DIR/SHA256SUMS`` into ``{corpus: {split: digest}}``.

    Lines look like ``<hex>  wikitext2/train.txt`` (sha256sum format; the
    digest is of the *uncompressed* text).
    """
    sums_path = CORPORA_DIR / "SHA256SUMS"
    try:
        lines = sums_path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"checksum list {sums_path} is missing") from None
    table: dict[str, dict[str, str]] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"{sums_path}:{lineno}: malformed line {line!r}")
        digest, name = parts[0].lower(), parts[1].strip().lstrip("*")  # '*' = binary mode marker
        corpus, _, filename = name.partition("/")
        split = filename.removesuffix(".txt")
        if not corpus or split not in SPLITS:
            raise DataError(f"{sums_path}:{lineno}: unexpected file name {name!r}")
        table.setdefault(corpus, {})[split] = digest
    return table


def shipped_sha256(corpus: str) -> dict[str, str]:
    """Expected SHA-256 per split (``{split: hex}``) of a shipped corpus."""
    table = _read_sha256sums()
    if corpus not in table:
        raise DataError(
            f"unknown shipped corpus {corpus!r}; shipped corpora: {', '.join(sorted(table))}"
        )
    return dict(table[corpus])


# --------------------------------------------------------------------------
# Sources: each yields the split's text as a stream of byte chunks
# --------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def _source_type(source: dict[str, Any]) -> str:
    kind = source.get("type") if isinstance(source, dict) else None
    if kind not in SOURCE_TYPES:
        raise DataError(
            f"unknown corpus source type {kind!r}; valid types: {', '.join(SOURCE_TYPES)}"
        )
    return kind


def _lookup(mapping: Any, split: str, what: str) -> Any:
    """``mapping[split]`` with a clear error if the source lacks this split."""
    if not isinstance(mapping, dict) or split not in mapping:
        raise DataError(f"corpus source has no {what} for split {split!r}")
    return mapping[split]


def _describe_source(split: str, source: dict[str, Any]) -> str:
    """Human-readable location of a split's source, for error messages."""
    kind = _source_type(source)
    if kind == "shipped":
        return str(CORPORA_DIR / str(source.get("corpus")) / f"{split}.txt.xz")
    if kind == "url":
        return str(_lookup(source.get("urls"), split, "URL"))
    hf_split = _lookup(source.get("splits"), split, "Hugging Face split name")
    name = source.get("name")
    return f"hf:{source.get('path')}" + (f"/{name}" if name else "") + f" split={hf_split}"


def _iter_shipped(split: str, source: dict[str, Any]) -> Iterator[bytes]:
    corpus = source.get("corpus")
    path = CORPORA_DIR / str(corpus) / f"{split}.txt.xz"
    if not path.is_file():
        shipped = sorted(p.name for p in CORPORA_DIR.iterdir() if p.is_dir())
        raise DataError(
            f"shipped corpus file {path} does not exist (shipped corpora: {', '.join(shipped)})"
        )
    with lzma.open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


class _CountingReader:
    """Wraps a response object: counts the raw (possibly compressed) bytes read, and ends the download with a
    DataError once its overall deadline has passed. Each read returns what has arrived (read1), so a server that
    trickles bytes cannot keep one read, and the download, going for ever."""

    def __init__(self, raw: BinaryIO, url: str = "", deadline: float = math.inf, seconds: float = math.inf,
                 expected: int | None = None) -> None:
        self.raw, self.url, self.deadline, self.seconds, self.expected = raw, url, deadline, seconds, expected
        self.count = 0

    def of(self) -> str:
        return f" of {self.expected}" if self.expected is not None else ""

    def read(self, size: int = -1) -> bytes:
        if time.monotonic() > self.deadline:
            raise DataError(f"download of {self.url} did not finish within its deadline of {self.seconds:g} s "
                            f"(source.deadline): {self.count} bytes{self.of()} arrived; the server is too slow")
        read1 = getattr(self.raw, "read1", None)
        data = read1(size if size and size > 0 else _CHUNK) if read1 else self.raw.read(size)
        self.count += len(data)
        return data


def _iter_url(split: str, source: dict[str, Any]) -> Iterator[bytes]:
    url = str(_lookup(source.get("urls"), split, "URL"))
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https", "file"):
        raise DataError(f"unsupported URL scheme in {url!r}; use http, https or file")
    timeout = float(source.get("timeout", _DEFAULT_TIMEOUT))
    deadline = float(source.get("deadline", _DEFAULT_DEADLINE))
    started = time.monotonic()
    try:
        resp = urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise DataError(f"HTTP error {exc.code} ({exc.reason}) downloading {url}") from exc
    except urllib.error.URLError as exc:
        raise DataError(f"cannot open {url}: {exc.reason}") from exc
    except OSError as exc:  # e.g. timeouts while connecting
        raise DataError(f"cannot open {url}: {exc}") from exc

    with resp:
        header = resp.headers.get("Content-Length")
        expected = int(header) if header and header.strip().isdigit() else None
        raw = _CountingReader(resp, url, started + deadline, deadline, expected)
        # Decompress on the fly; the checksum is always of the decompressed text.
        stream: Any = raw
        if parsed.path.endswith(".xz"):
            stream = lzma.LZMAFile(raw)
        elif parsed.path.endswith(".gz"):
            stream = gzip.GzipFile(fileobj=raw)

        def truncated() -> DataError:
            return DataError(f"truncated download of {url}: got {raw.count} of {expected} bytes")

        try:
            while chunk := stream.read(_CHUNK):
                yield chunk
        except TimeoutError as exc:  # the per-read timeout: nothing came for `timeout` seconds
            raise DataError(f"download of {url} stalled: no data for {timeout:g} s (source.timeout) after "
                            f"{raw.count} bytes{raw.of()}") from exc
        except (EOFError, http.client.IncompleteRead, lzma.LZMAError, zlib.error, OSError) as exc:
            # A short body usually surfaces as a decompression error (EOFError)
            # or IncompleteRead; report it as truncation when we can tell.
            if expected is not None and raw.count < expected:
                raise truncated() from exc
            raise DataError(f"error reading {url}: {exc}") from exc
        if expected is not None and raw.count < expected:
            raise truncated()


def _iter_hf(split: str, source: dict[str, Any]) -> Iterator[bytes]:
    # NOTE: the Hugging Face ``wikitext`` dataset (e.g. "wikitext-2-raw-v1" or
    # "wikitext-2-v1") does not reproduce the shipped/original token files byte
    # for byte: it has extra empty rows, lines keep their leading space, etc.
    # Its SHA-256 therefore differs from SHA256SUMS, and the caller must supply
    # its own expected digest (or None).
    import datasets  # lazy: heavy import, only needed for this source type

    hf_split = _lookup(source.get("splits"), split, "Hugging Face split name")
    text_field = source.get("text_field", "text")
    load_kwargs = dict(source.get("load_kwargs") or {})
    ds = datasets.load_dataset(source["path"], source.get("name"), split=hf_split, **load_kwargs)
    columns = getattr(ds, "column_names", None)
    if columns is not None and text_field not in columns:
        raise DataError(f"text field {text_field!r} not in dataset columns {columns}")
    for batch in ds.iter(batch_size=1000):
        buf = io.StringIO()
        for text in batch[text_field]:
            if not isinstance(text, str):
                raise DataError(f"non-string value {text!r} in field {text_field!r}")
            buf.write(text if text.endswith("\n") else text + "\n")
        yield buf.getvalue().encode("utf-8")


_SOURCE_READERS = {"shipped": _iter_shipped, "url": _iter_url, "hf": _iter_hf}


def materialize(
    split: str, source: dict[str, Any], dest: PathLike, sha256: str | None, check: dict[str, Any] | None = None
) -> str:
    """Write the text of ``split`` from ``source`` to ``dest``; return its SHA-256.

    The bytes are copied verbatim into a temporary file next to ``dest``, hashed,
    compared with ``sha256`` (skipped with a warning if it is None), and only then
    renamed onto ``dest``. On any failure the temporary file is deleted and
    ``dest`` is neither created nor modified. The text is checked line by line
    as it arrives (ContentChecker; ``check`` overrides CONTENT_CHECK), so a
    corpus that is not text fails here, naming the line, not in a later step.
    """
    dest = Path(dest)
    _check_split(split)
    kind = _source_type(source)
    location = _describe_source(split, source)
    if sha256 is None:
        log.warning("no expected SHA-256 for %s (from %s); not verifying it", dest, location)

    hasher = hashlib.sha256()
    content = ContentChecker(f"{dest} (from {location})", check)
    try:
        with atomic_open(dest) as fh:
            for chunk in _SOURCE_READERS[kind](split, source):
                content.feed(chunk)
                hasher.update(chunk)
                fh.write(chunk)
            content.close()
            actual = hasher.hexdigest()
            if sha256 is not None and actual != sha256.strip().lower():
                raise ChecksumError(
                    f"SHA-256 mismatch for {dest} (from {location}): "
                    f"expected {sha256}, got {actual}"
                )
    except (ChecksumError, ContentError, StorageError):
        raise
    except Exception as exc:
        raise DataError(f"failed to materialize {dest} (from {location}): {exc}") from exc
    log.info("wrote %s (from %s), sha256 %s", dest, location, actual)
    return actual


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
                        f"token {tok!r} at {path}:{lineno} is not in the vocabulary "
                        f"and the vocabulary has no {UNK}"
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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is unreadable ({exc})") from exc


def load_tokens(tokens_dir: PathLike) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Load ``{split}.pt`` tensors and ``vocab.json`` written by tokenize_corpus.

    If ``stats.json`` is there, the vocabulary (size and digest) and the token counts must match it: token ids
    read with another vocabulary would be a silently different corpus.
    """
    tokens_dir = Path(tokens_dir)
    needed = [tokens_dir / "vocab.json"] + [tokens_dir / f"{s}.pt" for s in SPLITS]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        raise DataError(
            f"tokenized corpus incomplete, missing: {', '.join(missing)} (run tokenize_corpus first)"
        )
    vocab = _read_json(tokens_dir / "vocab.json")
    if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
        raise DataError(f"{tokens_dir / 'vocab.json'} is not a JSON list of strings")
    stats = _read_json(tokens_dir / "stats.json") if (tokens_dir / "stats.json").is_file() else {}
    if not isinstance(stats, dict):
        raise DataError(f"{tokens_dir / 'stats.json'} is not a JSON object")
    if stats.get("vocab_size", len(vocab)) != len(vocab) or \
            stats.get("vocab_sha256", vocab_sha256(vocab)) != vocab_sha256(vocab):
        raise DataError(f"{tokens_dir / 'vocab.json'} ({len(vocab)} tokens) is not the vocabulary the token ids were "
                        f"made with (stats.json: {stats.get('vocab_size')} tokens, digest differs); tokenize again")
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
