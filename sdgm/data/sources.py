"""Corpus acquisition: ``materialize`` obtains the raw text of one split (the xz file shipped in corpora/, a URL,
or a Hugging Face dataset), checks its content line by line as it arrives (sdgm.data.checks), verifies its SHA-256
and writes it atomically: through a temporary file in the target's directory followed by ``os.replace``, so a crash
or a failed check never leaves a half-written or unverified file under its final name. Tokenizing the text is
sdgm.data.tokens.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
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

from ..common.atomic import StorageError, atomic_open
from ..common.atomic import sha256_file as sha256_file  # re-exported: the corpora's digests
from .checks import ChecksumError, ContentChecker, ContentError, DataError

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "valid", "test")
CORPORA_DIR = Path(__file__).parent / "corpora"

SOURCE_TYPES: tuple[str, ...] = ("shipped", "url", "hf")
_CHUNK = 1 << 20  # bytes per read when streaming (1 MiB)
_DEFAULT_TIMEOUT = 60.0  # seconds without data before a "url" download is given up (source.timeout)
_DEFAULT_DEADLINE = 3600.0  # seconds for a whole "url" download, however it trickles (source.deadline)

PathLike = str | os.PathLike[str]


# --------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------


# --------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------


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
        raise DataError(f"unknown shipped corpus {corpus!r}; shipped corpora: {', '.join(sorted(table))}")
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
        raise DataError(f"unknown corpus source type {kind!r}; valid types: {', '.join(SOURCE_TYPES)}")
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
        raise DataError(f"shipped corpus file {path} does not exist (shipped corpora: {', '.join(shipped)})")
    with lzma.open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


class _CountingReader:
    """Wraps a response object: counts the raw (possibly compressed) bytes read, and ends the download with a
    DataError once its overall deadline has passed. Each read returns what has arrived (read1), so a server that
    trickles bytes cannot keep one read, and the download, going for ever."""

    def __init__(
        self,
        raw: BinaryIO,
        url: str = "",
        deadline: float = math.inf,
        seconds: float = math.inf,
        expected: int | None = None,
    ) -> None:
        self.raw, self.url, self.deadline, self.seconds, self.expected = raw, url, deadline, seconds, expected
        self.count = 0

    def of(self) -> str:
        return f" of {self.expected}" if self.expected is not None else ""

    def read(self, size: int = -1) -> bytes:
        if time.monotonic() > self.deadline:
            raise DataError(
                f"download of {self.url} did not finish within its deadline of {self.seconds:g} s "
                f"(source.deadline): {self.count} bytes{self.of()} arrived; the server is too slow"
            )
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
            raise DataError(
                f"download of {url} stalled: no data for {timeout:g} s (source.timeout) after "
                f"{raw.count} bytes{raw.of()}"
            ) from exc
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
                raise ChecksumError(f"SHA-256 mismatch for {dest} (from {location}): expected {sha256}, got {actual}")
    except (ChecksumError, ContentError, StorageError):
        raise
    except Exception as exc:
        raise DataError(f"failed to materialize {dest} (from {location}): {exc}") from exc
    log.info("wrote %s (from %s), sha256 %s", dest, location, actual)
    return actual
