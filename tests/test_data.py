"""Tests for sdgm.data: real files, a real local HTTP server, the real `datasets`."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import logging
import lzma
import threading
from pathlib import Path

import pytest
import torch

from sdgm.data import sources, tokens
from sdgm.data.checks import ChecksumError, DataError

# Verified counts (tokens include one <eos> per line).
EXPECTED = {
    "wikitext2": {"train_tokens": 2088628, "valid_tokens": 217646, "test_tokens": 245569, "vocab_size": 33278},
    "ptb": {"train_tokens": 929589, "valid_tokens": 73760, "test_tokens": 82430, "vocab_size": 10000},
}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --------------------------------------------------------------------------
# Shipped corpora, end to end
# --------------------------------------------------------------------------


def _prepare(corpus: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp(corpus)
    text_dir, tok_dir = root / "text", root / "tokens"
    expected_sha = sources.shipped_sha256(corpus)
    digests = {
        split: sources.materialize(
            split, {"type": "shipped", "corpus": corpus}, text_dir / f"{split}.txt", expected_sha[split]
        )
        for split in sources.SPLITS
    }
    stats = tokens.tokenize_corpus(text_dir, tok_dir)
    return {"text_dir": text_dir, "tok_dir": tok_dir, "digests": digests, "stats": stats}


@pytest.fixture(scope="module")
def wikitext2(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _prepare("wikitext2", tmp_path_factory)


@pytest.fixture(scope="module")
def ptb(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _prepare("ptb", tmp_path_factory)


@pytest.mark.parametrize("corpus", ["wikitext2", "ptb"])
def test_shipped_corpus_digests_and_counts(corpus: str, request: pytest.FixtureRequest) -> None:
    prepared = request.getfixturevalue(corpus)
    shipped = sources.shipped_sha256(corpus)
    assert set(shipped) == set(sources.SPLITS)
    assert prepared["digests"] == shipped
    for split in sources.SPLITS:
        path = prepared["text_dir"] / f"{split}.txt"
        assert sources.sha256_file(path) == shipped[split]
        assert prepared["stats"]["splits"][split]["sha256"] == shipped[split]
    # no temporary files left behind
    assert leftovers(prepared["text_dir"]) == ["test.txt", "train.txt", "valid.txt"]

    stats = prepared["stats"]
    exp = EXPECTED[corpus]
    assert stats["vocab_size"] == exp["vocab_size"]
    for split in sources.SPLITS:
        assert stats["splits"][split]["tokens"] == exp[f"{split}_tokens"]
    tokens.check_counts(stats, exp)  # must not raise

    # stats.json on disk equals the returned dict
    assert json.loads((prepared["tok_dir"] / "stats.json").read_text()) == stats


@pytest.mark.parametrize("corpus", ["wikitext2", "ptb"])
def test_load_tokens_roundtrip(corpus: str, request: pytest.FixtureRequest) -> None:
    prepared = request.getfixturevalue(corpus)
    splits, vocab = tokens.load_tokens(prepared["tok_dir"])
    assert len(vocab) == EXPECTED[corpus]["vocab_size"]
    assert tokens.EOS in vocab
    for split in sources.SPLITS:
        ids = splits[split]
        assert ids.dtype == torch.int64 and ids.dim() == 1
        assert ids.numel() == EXPECTED[corpus][f"{split}_tokens"]
    # id 0 is the first word of train; lines end in <eos>
    first_line = (prepared["text_dir"] / "train.txt").read_text(encoding="utf-8").split("\n", 1)[0]
    first_tokens = first_line.split() + [tokens.EOS]
    assert [vocab[i] for i in splits["train"][: len(first_tokens)].tolist()] == first_tokens
    assert vocab[0] == first_tokens[0]
    assert (
        sum(1 for i in splits["train"].tolist() if vocab[i] == tokens.EOS)
        == prepared["stats"]["splits"]["train"]["lines"]
    )


def test_ptb_unk_count(ptb: dict) -> None:
    # PTB uses literal <unk> in all splits; every id-<unk> is counted.
    splits, vocab = tokens.load_tokens(ptb["tok_dir"])
    unk_id = vocab.index(tokens.UNK)
    for split in sources.SPLITS:
        assert ptb["stats"]["splits"][split]["unk"] == int((splits[split] == unk_id).sum()) > 0


def test_load_tokens_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="vocab.json"):
        tokens.load_tokens(tmp_path)


def test_shipped_sha256_unknown_corpus() -> None:
    with pytest.raises(DataError) as exc:
        sources.shipped_sha256("nope")
    assert "ptb" in str(exc.value) and "wikitext2" in str(exc.value)


def test_shipped_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nope"):
        sources.materialize("train", {"type": "shipped", "corpus": "nope"}, tmp_path / "x.txt", None)
    assert leftovers(tmp_path) == []


def test_unknown_source_type(tmp_path: Path) -> None:
    with pytest.raises(DataError) as exc:
        sources.materialize("train", {"type": "ftp"}, tmp_path / "x.txt", None)
    for kind in ("shipped", "url", "hf"):
        assert kind in str(exc.value)
    assert leftovers(tmp_path) == []


def test_wrong_checksum_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "valid.txt"
    wrong = "0" * 64
    right = sources.shipped_sha256("ptb")["valid"]
    with pytest.raises(ChecksumError) as exc:
        sources.materialize("valid", {"type": "shipped", "corpus": "ptb"}, dest, wrong)
    msg = str(exc.value)
    assert dest.name in msg and wrong in msg and right in msg
    assert "valid.txt.xz" in msg  # source location
    assert leftovers(tmp_path) == []


def test_failed_materialize_keeps_existing_dest(tmp_path: Path) -> None:
    dest = tmp_path / "valid.txt"
    dest.write_bytes(b"old contents\n")
    with pytest.raises(ChecksumError):
        sources.materialize("valid", {"type": "shipped", "corpus": "ptb"}, dest, "f" * 64)
    assert dest.read_bytes() == b"old contents\n"
    assert leftovers(tmp_path) == ["valid.txt"]


def test_no_checksum_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dest = tmp_path / "test.txt"
    with caplog.at_level(logging.WARNING, logger="sdgm.data.sources"):
        digest = sources.materialize("test", {"type": "shipped", "corpus": "ptb"}, dest, None)
    assert digest == sources.shipped_sha256("ptb")["test"] == sources.sha256_file(dest)
    assert any(r.levelno == logging.WARNING and "test.txt" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------
# URL source against a local HTTP server
# --------------------------------------------------------------------------

GOOD = b"the quick brown fox\n jumps over  the lazy dog \n\nlast line\n" * 200
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    # path -> (body, Content-Length to announce)
    routes: dict[str, tuple[bytes, int]] = {
        "/good.txt": (GOOD, len(GOOD)),
        "/corrupt.txt": (GOOD.replace(b"fox", b"cat", 1), len(GOOD)),
        "/truncated.txt": (GOOD[:100], len(GOOD)),
        "/good.txt.xz": (lzma.compress(GOOD), len(lzma.compress(GOOD))),
        "/good.txt.gz": (gzip.compress(GOOD), len(gzip.compress(GOOD))),
        "/truncated.txt.xz": (lzma.compress(GOOD)[:50], len(lzma.compress(GOOD))),
    }

    def do_GET(self) -> None:
        if self.path not in self.routes:
            self.send_error(404, "Not Found")
            return
        body, length = self.routes[self.path]
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True  # HTTP/1.0: connection closes after the body

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture(scope="module")
def server() -> str:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def url_source(url: str) -> dict:
    return {"type": "url", "urls": {"train": url}, "timeout": 10}


def test_url_good(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "train.txt"
    assert sources.materialize("train", url_source(server + "/good.txt"), dest, GOOD_SHA) == GOOD_SHA
    assert dest.read_bytes() == GOOD
    assert leftovers(tmp_path) == ["train.txt"]


@pytest.mark.parametrize("suffix", [".xz", ".gz"])
def test_url_compressed_is_decompressed(server: str, tmp_path: Path, suffix: str) -> None:
    dest = tmp_path / "train.txt"
    assert sources.materialize("train", url_source(server + "/good.txt" + suffix), dest, GOOD_SHA) == GOOD_SHA
    assert dest.read_bytes() == GOOD


def test_url_corrupt(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "train.txt"
    url = server + "/corrupt.txt"
    with pytest.raises(ChecksumError) as exc:
        sources.materialize("train", url_source(url), dest, GOOD_SHA)
    msg = str(exc.value)
    assert url in msg and "train.txt" in msg and GOOD_SHA in msg
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("path", ["/truncated.txt", "/truncated.txt.xz"])
def test_url_truncated(server: str, tmp_path: Path, path: str) -> None:
    dest = tmp_path / "train.txt"
    with pytest.raises(DataError) as exc:
        sources.materialize("train", url_source(server + path), dest, GOOD_SHA)
    msg = str(exc.value)
    assert not isinstance(exc.value, ChecksumError)
    assert "truncated" in msg and f"of {_Handler.routes[path][1]} bytes" in msg
    assert server + path in msg
    assert leftovers(tmp_path) == []


def test_url_404(server: str, tmp_path: Path) -> None:
    url = server + "/missing.txt"
    with pytest.raises(DataError) as exc:
        sources.materialize("train", url_source(url), tmp_path / "train.txt", GOOD_SHA)
    assert url in str(exc.value) and "404" in str(exc.value)
    assert leftovers(tmp_path) == []


def test_url_file_scheme(tmp_path: Path) -> None:
    src = tmp_path / "src" / "good.txt"
    src.parent.mkdir()
    src.write_bytes(GOOD)
    dest = tmp_path / "out" / "train.txt"
    assert sources.materialize("train", url_source(src.as_uri()), dest, GOOD_SHA) == GOOD_SHA
    assert dest.read_bytes() == GOOD


def test_url_missing_split(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="valid"):
        sources.materialize("valid", url_source("http://127.0.0.1:1/x"), tmp_path / "v.txt", None)


# --------------------------------------------------------------------------
# Hugging Face source via the real `datasets` library (local "text" builder)
# --------------------------------------------------------------------------


def test_hf_text_builder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    lines = ["first line", " leading space", "", "tab\tseparated  words", "ünïcödé ✓", "last"]
    src = tmp_path / "input.txt"
    src.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    source = {
        "type": "hf",
        "path": "text",
        "name": None,
        "splits": {"train": "train"},
        "text_field": "text",
        "load_kwargs": {"data_files": {"train": str(src)}, "cache_dir": str(tmp_path / "hf")},
    }
    out_dir = tmp_path / "out"
    dest = out_dir / "train.txt"
    digest = sources.materialize("train", source, dest, sources.sha256_file(src))
    assert dest.read_text(encoding="utf-8").split("\n")[:-1] == lines
    assert dest.read_bytes() == src.read_bytes()
    assert digest == sources.sha256_file(src)
    assert leftovers(out_dir) == ["train.txt"]


# --------------------------------------------------------------------------
# Tokenization details
# --------------------------------------------------------------------------


def test_vocab_order_and_encode(tmp_path: Path) -> None:
    train = tmp_path / "train.txt"
    train.write_text("b a b\n\nc\n", encoding="utf-8")
    vocab = tokens.build_vocab(train)
    assert vocab == ["b", "a", tokens.EOS, "c"]
    stoi = {t: i for i, t in enumerate(vocab)}
    ids = tokens.encode(train, stoi)
    assert ids.dtype == torch.int64 and ids.tolist() == [0, 1, 0, 2, 2, 3, 2]


def test_encode_oov_without_unk(tmp_path: Path) -> None:
    path = tmp_path / "valid.txt"
    path.write_text("a b\na zebra\n", encoding="utf-8")
    stoi = {"a": 0, "b": 1, tokens.EOS: 2}
    with pytest.raises(DataError) as exc:
        tokens.encode(path, stoi)
    msg = str(exc.value)
    assert "zebra" in msg and "valid.txt" in msg and ":2" in msg


def test_encode_oov_with_unk(tmp_path: Path) -> None:
    path = tmp_path / "valid.txt"
    path.write_text("a zebra\n", encoding="utf-8")
    stoi = {"a": 0, tokens.UNK: 1, tokens.EOS: 2}
    assert tokens.encode(path, stoi).tolist() == [0, 1, 2]


def test_check_counts_mismatch() -> None:
    stats = {"vocab_size": 10, "splits": {s: {"tokens": 100} for s in sources.SPLITS}}
    tokens.check_counts(stats, {"vocab_size": 10, "valid_tokens": 100})
    with pytest.raises(DataError) as exc:
        tokens.check_counts(stats, {"vocab_size": 10, "train_tokens": 123})
    msg = str(exc.value)
    assert "train_tokens" in msg and "123" in msg and "100" in msg
    assert "vocab_size" not in msg
    with pytest.raises(DataError, match="vocab_size"):
        tokens.check_counts(stats, {"vocab_size": 11})


def write_splits(corpus: Path, **texts: str) -> Path:
    corpus.mkdir()
    for split, text in texts.items():
        (corpus / f"{split}.txt").write_text(text, encoding="utf-8")
    return corpus


def test_tokenize_empty_split(tmp_path: Path) -> None:
    corpus = write_splits(tmp_path / "corpus", train="a b\n", valid="a\n", test="")
    out = tmp_path / "tokens"
    with pytest.raises(DataError, match="test.txt"):
        tokens.tokenize_corpus(corpus, out)
    assert not out.exists() or leftovers(out) == []


def test_tokenize_small_corpus_outputs(tmp_path: Path) -> None:
    corpus = write_splits(tmp_path / "corpus", train="x <unk> y\n", valid="y z\n", test="x\n")
    out = tmp_path / "tokens"
    stats = tokens.tokenize_corpus(corpus, out)
    assert leftovers(out) == ["stats.json", "test.pt", "train.pt", "valid.pt", "vocab.json"]
    assert json.loads((out / "vocab.json").read_text()) == ["x", tokens.UNK, "y", tokens.EOS]
    assert stats["splits"]["train"] == {
        "tokens": 4,
        "lines": 1,
        "unk": 1,
        "sha256": sources.sha256_file(corpus / "train.txt"),
    }
    assert stats["splits"]["valid"]["unk"] == 1  # "z" is OOV -> <unk>
    assert torch.load(out / "valid.pt", weights_only=True).tolist() == [2, 1, 3]
