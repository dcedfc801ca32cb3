"""What a record measured and when: its protocol (the fields that must agree between records compared with each
other) and whether its code is still the code of the components a claim depends on (staleness, from git history).
The rules are written out in docs/claims.md ("Like with like, noise and staleness").
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

PROTOCOL_FIELDS = ("device", "precision", "compile", "batch_size", "seq_len", "steps", "fresh_process")
NOT_RECORDED = "not recorded"
REPO = Path(__file__).resolve().parents[2]


def _nodes(rec: dict, at: str | None) -> list[dict]:
    """The nodes along the path `at` into the record, deepest first (the record itself not included)."""
    node: Any = rec
    out = []
    for part in at.format(own_path=rec.get("own_path", "")).split(".") if at else []:
        node = node.get(part) if isinstance(node, dict) else None
        out.append(node if isinstance(node, dict) else {})
    return out[::-1] or [{}]


def record_protocol(rec: dict, source: str, at: str | None = None) -> dict[str, Any]:
    """{field: value or NOT_RECORDED} for one record: from the node `at` the number comes from, else the nodes above
    it, else the record's top level, else its settings, else (a training or throughput record) its train_config;
    device from its provenance. A trained run's peak is over its whole run, in its training process."""
    nodes = _nodes(rec, at)
    node = nodes[0]
    layers = [*nodes, rec, rec.get("settings") or {}]
    if source in ("metrics", "throughput"):
        layers.append(rec.get("train_config") or {})
    out: dict[str, Any] = {}
    for field in PROTOCOL_FIELDS:
        value = next((layer[field] for layer in layers if layer.get(field) is not None), None)
        if field == "device":
            value = (rec.get("provenance") or {}).get("device")
        elif field == "steps" and value is None:
            value = "run" if source == "metrics" else (node.get("timing") or {}).get("repeats", node.get("repeats"))
        elif field == "seq_len" and value is None:
            value = next((layer["max_context"] for layer in layers if layer.get("max_context") is not None), None)
        elif field == "fresh_process" and value is None:
            if source == "metrics":
                value = False
            elif isinstance(node.get("method"), str):
                value = "a fresh process" in node["method"]
        out[field] = NOT_RECORDED if value is None else value
    return out


def protocol_mismatch(protocols: dict[str, dict], fields) -> str:
    """ "" when every compared record (by experiment) has one value of each field; else a short reason naming the
    fields that differ (first) and those a record does not carry."""
    differ, unrecorded = [], []
    for field in fields:
        values = {e: p[field] for e, p in protocols.items()}
        missing = sorted(e for e, v in values.items() if v == NOT_RECORDED)
        if missing:
            unrecorded.append(
                f"{field} not recorded" + ("" if len(missing) == len(values) else f" by {', '.join(missing)}")
            )
        elif len({str(v) for v in values.values()}) > 1:
            groups: dict[str, list[str]] = {}
            for e, v in values.items():
                groups.setdefault(str(v), []).append(e)
            differ.append(f"{field} differs (" + "; ".join(f"{v}: {', '.join(es)}" for v, es in groups.items()) + ")")
    if not differ and not unrecorded:
        return ""
    return "not like with like: " + "; ".join(differ + unrecorded)


class History:
    """The git history of the repository holding this package, asked lazily: is a record's commit still the code of
    some components? Without git or a history (an unpacked archive), `available` is False."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else REPO
        self._diffs: dict[str, list[tuple[str, list[str]]] | None] = {}
        self._available: bool | None = None

    def _git(self, *args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(self.root), *args], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    @property
    def available(self) -> bool:
        if self._available is None:
            self._available = self._git("rev-parse", "--verify", "HEAD") is not None
        return self._available

    def _changes(self, commit: str) -> list[tuple[str, list[str]]] | None:
        """(status, paths) of every file that differs between `commit` and HEAD, renames detected; None when the
        commit is not in this history."""
        if commit not in self._diffs:
            if self._git("cat-file", "-e", f"{commit}^{{commit}}") is None:
                self._diffs[commit] = None
            else:
                out = self._git("diff", "-M", "--name-status", commit, "HEAD") or ""
                self._diffs[commit] = [
                    (line.split("\t")[0], line.split("\t")[1:]) for line in out.splitlines() if "\t" in line
                ]
        return self._diffs[commit]

    def stale(self, commit: str, paths: list[str]) -> tuple[str, str]:
        """("fresh" | "stale" | "unknown", detail): stale when a file under `paths` differs in content between the
        record's commit and HEAD (a pure move, R100, is no change); detail names the commit that changed
        them after the record (the first such commit: it stays the same as later commits come)."""
        changes = self._changes(commit)
        if changes is None:
            return "unknown", f"commit {commit[:7]} is not in this repository's history"
        prefixes = [p.rstrip("/") for p in paths]

        def under(path: str) -> bool:
            return any(path == p or path.startswith(p + "/") for p in prefixes)

        changed = [ps for status, ps in changes if status != "R100" and any(under(p) for p in ps)]
        if not changed:
            return "fresh", ""
        names = sorted({name for ps in changed for name in ps})  # old and new names of a moved file
        log = (self._git("log", "--reverse", "--format=%h", f"{commit}..HEAD", "--", *names) or "").split()
        return "stale", f"stale: measured at {commit[:7]}, changed at {log[0] if log else 'HEAD'}"
