"""The rules that decide whether records may judge a claim at all (docs/claims.md: like with like, noise and
staleness), on synthetic records: one protocol per comparison, the factor threshold outside the tolerance band,
stale records, the parameter count at the paper's own number, and a git history that is absent."""

import json
import subprocess
from pathlib import Path

import pytest

from sdgm.reporting import claim_rules as V
from sdgm.reporting.protocol import NOT_RECORDED, History, protocol_mismatch, record_protocol

TOLS = {"tolerances": {"memory": {"rel": 0.25, "why": "x"}, "params": {"rel": 0.02, "why": "x"}}}
MEMORY = {
    "id": "m",
    "claim": "c",
    "where": "w",
    "kind": "factor",
    "corpus": "wikitext2",
    "source": "throughput",
    "metric": "metrics.train_peak_mem_bytes",
    "scale": 1e-9,
    "unit": "GB",
    "at": "modes.train",
    "experiment": "sdgm",
    "than": ["a", "b"],
    "better": "lower",
    "paper": 6.5,
    "paper_baselines": [8.7, 12.5],
    "tolerance": "memory",
    "protocol": ["device", "precision", "compile", "batch_size", "seq_len", "steps", "fresh_process"],
}


def bench(root: Path, exp: str, gb: float, compile_: bool = False, commit: str | None = None, **mode) -> Path:
    """A throughput record of one training-step peak, its protocol in the record as the writers now write it."""
    p = root / "bench" / "throughput" / "wikitext2" / f"{exp}-s0.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    prov = (
        {"device": "cpu"}
        if commit is None
        else {"device": "cpu", "git_commit": commit, "timestamp": "2026-01-01T00:00:00Z"}
    )
    rec = {
        "kind": "throughput",
        "experiment": exp,
        "corpus": "wikitext2",
        "seed": 0,
        "provenance": prov,
        "precision": "fp32",
        "metrics": {"train_peak_mem_bytes": gb * 1e9},
        "modes": {
            "train": {"batch_size": 32, "seq_len": 128, "compile": compile_, "steps": 2, "fresh_process": True, **mode}
        },
    }
    p.write_text(json.dumps(rec))
    return p


def ev(tmp_path, values: dict, history: History | None = None, **kw) -> V.Evidence:
    return V.Evidence(throughput=[bench(tmp_path, e, v, **kw.get(e, {})) for e, v in values.items()], history=history)


def test_a_compiled_against_eager_pair_reads_not_measured_naming_compile(tmp_path):
    row = V.judge(TOLS, MEMORY, ev(tmp_path, {"sdgm": 2.0, "a": 4.0, "b": 6.0}, a={"compile_": True}))
    assert row["verdict"] == V.NOT_MEASURED
    assert "not like with like: compile differs (False: sdgm, b; True: a)" in row["reason"]
    assert "would read: reproduced, x2 (2.00 vs 4.00 GB, a)" in row["reason"]


def test_the_same_protocol_judges_and_a_field_a_record_lacks_does_not(tmp_path):
    row = V.judge(TOLS, MEMORY, ev(tmp_path, {"sdgm": 2.0, "a": 4.0, "b": 6.0}))
    assert row["verdict"] == V.REPRODUCED and row["shown"] == "x2 (2.00 vs 4.00 GB, a)"
    p = {"x": {"steps": 2, "seq_len": 128}, "y": {"steps": NOT_RECORDED, "seq_len": 64}}
    assert protocol_mismatch(p, ["steps", "seq_len"]) == (
        "not like with like: seq_len differs (128: x; 64: y); steps not recorded by y"
    )


def test_protocol_is_read_from_what_old_records_carry():
    cpu_memory = {
        "precision": "fp32",
        "provenance": {"device": "cpu"},
        "train_config": {"compile": False},
        "memory": {"train": {"batch_size": 32, "seq_len": 128, "method": "events; a fresh process"}},
    }
    assert record_protocol(cpu_memory, "throughput", "memory.train") == {
        "device": "cpu",
        "precision": "fp32",
        "compile": False,
        "batch_size": 32,
        "seq_len": 128,
        "steps": NOT_RECORDED,
        "fresh_process": True,
    }
    run = {
        "provenance": {"device": "gpu"},
        "train_config": {"compile": True, "precision": "auto", "batch_size": 32, "seq_len": 128},
    }
    assert record_protocol(run, "metrics") == {
        "device": "gpu",
        "precision": "auto",
        "compile": True,
        "batch_size": 32,
        "seq_len": 128,
        "steps": "run",
        "fresh_process": False,
    }


@pytest.mark.parametrize(
    "a,verdict",
    [
        (2.16, V.NOT_REPRODUCED),  # x1.08: above 1.34 / 1.25 = 1.07, below 1.25
        (2.52, V.REPRODUCED),
    ],
)  # x1.26
def test_a_memory_factor_inside_the_tolerance_band_is_not_reproduced(tmp_path, a, verdict):
    row = V.judge(TOLS, MEMORY, ev(tmp_path, {"sdgm": 2.0, "a": a, "b": 6.0}))
    assert row["verdict"] == verdict and "reproduced from x1.25" in row["reason"]
    if verdict == V.NOT_REPRODUCED:
        assert "no difference established" in row["reason"]


def test_baselines_tied_within_the_tolerance_are_both_named(tmp_path):
    row = V.judge(TOLS, MEMORY, ev(tmp_path, {"sdgm": 2.0, "a": 4.0, "b": 4.5}))
    assert row["shown"] == "x2 (2.00 vs 4.00 GB, a = b)" and "closest: a, tied with b" in row["reason"]


def test_the_parameter_count_says_whether_the_papers_own_count_changes_the_verdict(tmp_path):
    claim = {
        **MEMORY,
        "tolerance": "params",
        "paper": 22.8,
        "paper_baselines": [41.2, 117.0],
        "unit": "M",
        "scale": 1e-6,
        "also_at_paper": True,
        "protocol": [],
    }
    row = V.judge(TOLS, claim, ev(tmp_path, {"sdgm": 17.86e-3, "a": 34.21e-3, "b": 110.0e-3}))
    assert row["verdict"] == V.REPRODUCED and row["shown"].startswith("x1.92 (17.86 vs 34.21 M")
    assert "rests on our sdgm's 17.86 M; at the paper's 22.8 M: x1.50, not reproduced" in row["reason"]


def git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repo(tmp_path):
    """A git repository with a decoder file changed once after commit `before`, and a moved but unchanged file."""
    root = tmp_path / "repo"
    (root / "ops").mkdir(parents=True)
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@t")
    git(root, "config", "user.name", "t")
    (root / "ops" / "decoder.py").write_text("v = 1\n")
    (root / "model.py").write_text("m = 1\n" * 20)
    git(root, "add", ".")
    git(root, "commit", "-qm", "first")
    before = git(root, "rev-parse", "HEAD")
    (root / "spectral").mkdir()
    git(root, "mv", "model.py", "spectral/model.py")
    git(root, "commit", "-qm", "move")
    (root / "ops" / "decoder.py").write_text("v = 2\n")
    git(root, "commit", "-qam", "change")
    return root, before, git(root, "rev-parse", "--short=7", "HEAD")


def test_a_record_older_than_its_components_last_change_reads_stale(tmp_path, repo):
    root, before, changed = repo
    history = History(root)
    assert history.stale(before, ["ops"]) == ("stale", f"stale: measured at {before[:7]}, changed at {changed}")
    assert history.stale(before, ["spectral/model.py"]) == ("fresh", "")  # moved, not changed
    claim = {**MEMORY, "components": {"sdgm": ["ops"]}}
    values = {"sdgm": 2.0, "a": 4.0, "b": 6.0}
    row = V.judge(TOLS, claim, ev(tmp_path, values, history, sdgm={"commit": before}))
    assert row["verdict"] == V.NOT_MEASURED and row["reason"].startswith(
        f"stale: measured at {before[:7]}, changed at {changed} (sdgm)"
    )
    assert row["commits"] == before[:7]  # the cell lists its evidence's commits
    head = git(root, "rev-parse", "HEAD")
    row = V.judge(TOLS, claim, ev(tmp_path, values, history, sdgm={"commit": head}))
    assert row["verdict"] == V.REPRODUCED and row["commits"] == head[:7]


def test_a_record_without_commit_or_of_an_unknown_commit_judges_nothing_and_no_history_is_said(tmp_path, repo):
    root, _, _ = repo
    claim = {**MEMORY, "components": {"sdgm": ["ops"]}}
    values = {"sdgm": 2.0, "a": 4.0, "b": 6.0}
    row = V.judge(TOLS, claim, ev(tmp_path, values, History(root)))
    assert row["verdict"] == V.NOT_MEASURED and "no commit or date in the record: judges nothing" in row["reason"]
    row = V.judge(TOLS, claim, ev(tmp_path, values, History(root), sdgm={"commit": "0" * 40}))
    assert row["verdict"] == V.NOT_MEASURED and "is not in this repository's history" in row["reason"]
    archive = History(tmp_path / "not-a-repo")  # an unpacked archive: no git history
    (tmp_path / "not-a-repo").mkdir()
    row = V.judge(TOLS, claim, ev(tmp_path, values, archive, sdgm={"commit": "0" * 40}))
    assert row["verdict"] == V.REPRODUCED and row["reason"].endswith("staleness not checked (no git history)")
