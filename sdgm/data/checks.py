"""What the text of a corpus may hold, checked line by line as it streams in (ContentChecker; a corpus's `check`
overrides CONTENT_CHECK), and the errors of sdgm.data: DataError and its kinds ChecksumError and ContentError.
"""

from __future__ import annotations

from typing import Any

# what the text of a corpus may hold (the corpus's `check`); UTF-8 is always required, the tokenizer reads it
CONTENT_CHECK: dict[str, Any] = {"nul": True, "max_line_bytes": 1_000_000, "max_token_chars": 1000}


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
        context = line[max(0, at - 20) : at + len(bad) + 20]
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
            self.fail(
                f"line longer than {o['max_line_bytes']} bytes (check.max_line_bytes)",
                line,
                o["max_line_bytes"],
                line[o["max_line_bytes"] : o["max_line_bytes"] + 8],
            )
        if o["nul"] and b"\0" in line:
            self.fail("NUL byte (check.nul: false allows it)", line, line.index(b"\0"), b"\0")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail(f"not valid UTF-8 ({e.reason})", line, e.start, line[e.start : e.end])
        if o["max_token_chars"] and len(text) > o["max_token_chars"]:
            for tok in text.split():
                if len(tok) > o["max_token_chars"]:
                    at = len(text[: text.index(tok)].encode("utf-8"))
                    self.fail(
                        f"token of {len(tok)} characters, more than {o['max_token_chars']} (check.max_token_chars)",
                        line,
                        at,
                        tok[:16].encode("utf-8"),
                    )
