"""A pytest plugin that leaves one JSON line per test as it finishes, so a run killed at its deadline still says
what passed, failed and skipped, and which test was running when it was stopped (a JUnit file is written only at
the end of the run).

    python -m pytest -p sdgm.campaign.pytest_lines --lines-to results.jsonl ...

Each line is a JSON object: {"event": "start", "test": nodeid} when a test begins, and when its result is known
{"event": "result", "test": nodeid, "outcome": "passed" | "failed" | "skipped" | "error", "seconds": ...,
"reason": ...} (the reason of a skip, the error of a failure). Every line is flushed as it is written; the
last line of a killed run may be cut, and summary() ignores it. It imports nothing of this project.
"""

from __future__ import annotations

import json
from pathlib import Path

REASON_CHARS = 500  # of a failure's or skip's text, kept in its line


def pytest_addoption(parser):
    parser.addoption(
        "--lines-to",
        default=None,
        metavar="PATH",
        help="append one JSON line per test start and result to PATH (sdgm.campaign.pytest_lines)",
    )


def pytest_configure(config):
    path = config.getoption("--lines-to")
    if path:
        config.pluginmanager.register(Lines(Path(path)), "sdgm-lines")


def _reason(report) -> str:
    if report.skipped and isinstance(report.longrepr, tuple):  # (file, line, "Skipped: why")
        return str(report.longrepr[2]).removeprefix("Skipped: ")[:REASON_CHARS]
    crash = getattr(getattr(report.longrepr, "reprcrash", None), "message", None)  # "AssertionError: ..."
    lines = [ln.strip() for ln in str(crash or report.longrepr or "").splitlines() if ln.strip()]
    return " / ".join(lines if crash else lines[-1:])[:REASON_CHARS]


class Lines:
    """The hooks, writing to one line-buffered file (flushed per line: a kill loses at most the line being written)."""

    def __init__(self, path: Path):
        self.fh = open(path, "a", buffering=1, encoding="utf-8")

    def write(self, row: dict) -> None:
        self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()

    def pytest_runtest_logstart(self, nodeid, location):
        self.write({"event": "start", "test": nodeid})

    def pytest_runtest_logreport(self, report):
        """One result line per test: its call, or the setup that errored or skipped it, or a failed teardown."""
        if report.when == "call" or (report.when == "setup" and not report.passed):
            outcome = report.outcome if report.when == "call" or report.skipped else "error"
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
            self.write(
                {
                    "event": "result",
                    "test": report.nodeid,
                    "outcome": outcome,
                    "seconds": round(report.duration, 3),
                    "reason": "" if report.passed else _reason(report),
                }
            )
        elif report.when == "teardown" and report.failed:
            self.write(
                {
                    "event": "result",
                    "test": report.nodeid,
                    "outcome": "error",
                    "seconds": round(report.duration, 3),
                    "reason": "teardown: " + _reason(report),
                }
            )

    def pytest_unconfigure(self, config):
        self.fh.close()


def summary(path: Path) -> dict:
    """{tests, passed, failed, errors, skipped, skip_reasons, failures, running} from a lines file: counts of the
    finished tests, up to five skip reasons and failed tests, and the test started but never finished (None)."""
    results, started = {}, []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # the last line of a run killed mid-write
            continue
        if not isinstance(row, dict):
            continue
        if row.get("event") == "start":
            started.append(row.get("test"))
        elif row.get("event") == "result":
            results[row.get("test")] = row
    outcomes = [r.get("outcome") for r in results.values()]
    unfinished = [t for t in started if t not in results]
    return {
        "tests": len(results),
        "passed": outcomes.count("passed") + outcomes.count("xfailed") + outcomes.count("xpassed"),
        "failed": outcomes.count("failed"),
        "errors": outcomes.count("error"),
        "skipped": outcomes.count("skipped"),
        "skip_reasons": sorted({r.get("reason", "") for r in results.values() if r.get("outcome") == "skipped"} - {""})[
            :5
        ],
        "failures": [
            f"{t}: {r.get('reason', '')}" for t, r in results.items() if r.get("outcome") in ("failed", "error")
        ][:5],
        "running": unfinished[-1] if unfinished else None,
    }
