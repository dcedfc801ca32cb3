"""Tests for sdgm.report on synthetic metrics.json files (no training, no GPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from sdgm import report
from sdgm.report import ReportError


def _history(seed: int, final_ppl: float, n: int = 20) -> dict:
    rng = np.random.default_rng(seed)
    train = []
    for i in range(1, n + 1):
        step = 10 * i
        loss = 7.5 * math.exp(-step / 120) + math.log(final_ppl) * (1 - math.exp(-step / 120))
        loss += float(rng.normal(0, 0.05))
        train.append({"step": step, "epoch": step / 1000, "loss": loss, "nll": loss - 0.1,
                      "tokens_per_s": 11000.0})
    val = []
    for i in range(1, n // 5 + 1):
        step = 50 * i
        ppl = final_ppl * (1 + 4 * math.exp(-step / 60))
        val.append({"step": step, "epoch": step / 1000, "ppl": ppl, "nll": math.log(ppl)})
    return {"train": train, "val": val}


def _record(experiment: str, corpus: str, seed: int, val_ppl: float, *, model: str | None = None,
            cosine: float | None = 0.41, na: dict | None = None, history: dict | None = None,
            causal_change: float | None = 0.0, mem_ppl: float | None = None) -> dict:
    audit = None if causal_change is None else {"max_logit_change": causal_change, "passed": causal_change <= 1e-4}
    stateless = "model carries no state across windows"
    return {
        "schema": 1,
        "run_id": f"{corpus}/{experiment}-s{seed}",
        "experiment": experiment, "model": model or experiment, "corpus": corpus, "seed": seed,
        "model_config": {"d_model": 64},
        "train_config": {"lr": 0.001},
        "data": {"vocab_size": 1000, "sha256": {"train": "a", "valid": "b", "test": "c"}},
        "provenance": {"git_commit": "abc123", "device": "cpu", "torch": "2.13.0",
                       "python": "3.11.7", "platform": "linux", "timestamp": "2026-11-24T10:00:00Z"},
        "metrics": {"val_ppl": val_ppl, "test_ppl": val_ppl - 5, "val_nll": math.log(val_ppl),
                    "test_nll": math.log(val_ppl - 5), "params": 2345678, "cosine_val": cosine,
                    "train_tokens_per_s": 12000.0 + 100 * seed, "train_wall_s": 60.2, "steps": 200,
                    "epochs_completed": 0.2, "best_step": 200, "stopped": "max_steps",
                    "peak_mem_bytes": None, "causal_audit": audit, "val_ppl_mem": mem_ppl,
                    "test_ppl_mem": None if mem_ppl is None else mem_ppl - 5},
        "na": {"peak_mem_bytes": "no GPU (CPU run)",
               **({} if mem_ppl else {"val_ppl_mem": stateless, "test_ppl_mem": stateless}), **(na or {})},
        "history": history if history is not None else _history(seed, val_ppl),
    }


def _write(tmp_path: Path, rec: dict) -> Path:
    d = tmp_path / "runs" / rec["corpus"] / f"{rec['experiment']}-s{rec['seed']}"
    d.mkdir(parents=True, exist_ok=True)
    p = d / "metrics.json"
    p.write_text(json.dumps(rec, indent=1))
    return p


@pytest.fixture
def metric_files(tmp_path) -> list[Path]:
    recs = [
        _record("sdgm", "wikitext2", 0, 100.0),
        _record("sdgm", "wikitext2", 1, 110.0),
        _record("sdgm", "ptb", 0, 150.0),
        _record("my_new_baseline", "wikitext2", 0, 120.0),
        _record("lstm", "wikitext2", 0, 130.0, cosine=None, mem_ppl=101.25,
                na={"cosine_val": "model has no embedding reconstruction"}),
    ]
    return [_write(tmp_path, r) for r in recs]


@pytest.fixture
def records(metric_files):
    return report.load_metrics(metric_files)


def _row(df: pd.DataFrame, experiment: str, corpus: str) -> pd.Series:
    sel = df[(df.experiment == experiment) & (df.corpus == corpus)]
    assert len(sel) == 1, (experiment, corpus, df)
    return sel.iloc[0]


# --------------------------------------------------------------------------- aggregation

def test_aggregate_numbers():
    a = report.aggregate([100.0, 110.0])
    assert a["n"] == 2
    assert a["mean"] == pytest.approx(105.0)
    assert a["std"] == pytest.approx(math.sqrt(50.0))  # sample std, ddof=1: 7.0710...
    assert a["std"] == pytest.approx(7.0710678, rel=1e-6)
    one = report.aggregate([42.0])
    assert one == {"mean": 42.0, "std": 0.0, "n": 1}
    empty = report.aggregate([])
    assert empty["n"] == 0 and math.isnan(empty["mean"])


def test_format_aggregate():
    assert report.format_aggregate(report.aggregate([100.0, 110.0]), 1) == "105.0 ± 7.1"
    assert report.format_aggregate(report.aggregate([31.25]), 1) == "31.2"


# --------------------------------------------------------------------------- loading

def test_load_metrics_adds_path(records, metric_files):
    assert [r["_path"] for r in records] == [str(p) for p in metric_files]


def test_invalid_json_names_file(tmp_path):
    p = tmp_path / "broken" / "metrics.json"
    p.parent.mkdir()
    p.write_text('{"schema": 1, "experiment": ')
    with pytest.raises(ReportError) as ei:
        report.load_metrics([p])
    assert str(p) in str(ei.value)
    assert "JSON" in str(ei.value)


def test_missing_provenance_names_file(tmp_path):
    rec = _record("sdgm", "wikitext2", 0, 100.0)
    del rec["provenance"]
    p = _write(tmp_path, rec)
    with pytest.raises(ReportError) as ei:
        report.load_metrics([p])
    assert str(p) in str(ei.value)
    assert "provenance" in str(ei.value)


@pytest.mark.parametrize("key", ["git_commit", "device"])
def test_missing_provenance_key_names_file(tmp_path, key):
    rec = _record("sdgm", "wikitext2", 0, 100.0)
    del rec["provenance"][key]
    p = _write(tmp_path, rec)
    with pytest.raises(ReportError, match=key) as ei:
        report.load_metrics([p])
    assert str(p) in str(ei.value)


@pytest.mark.parametrize("key", ["schema", "experiment", "corpus", "seed", "metrics"])
def test_missing_required_key(tmp_path, key):
    rec = _record("sdgm", "wikitext2", 0, 100.0)
    del rec[key]
    p = _write(tmp_path, rec) if key not in ("experiment", "corpus", "seed") else None
    if p is None:
        p = tmp_path / "x" / "metrics.json"
        p.parent.mkdir()
        p.write_text(json.dumps(rec))
    with pytest.raises(ReportError, match=key) as ei:
        report.load_metrics([p])
    assert str(p) in str(ei.value)


def test_load_paper_default():
    paper = report.load_paper()
    idx = {(r["experiment"], r["corpus"]): r for r in paper}
    assert idx[("sdgm", "wikitext2")]["val_ppl"] == 31.2
    assert idx[("sdgm", "ptb")]["val_ppl"] == 57.1
    assert idx[("sdgm_beta0", "wikitext2")]["cosine"] == 0.88


def test_duplicate_seed_rejected(tmp_path):
    a = _write(tmp_path / "a", _record("sdgm", "wikitext2", 0, 100.0))
    b = _write(tmp_path / "b", _record("sdgm", "wikitext2", 0, 101.0))
    recs = report.load_metrics([a, b])
    with pytest.raises(ReportError, match="duplicate"):
        report.main_table(recs, report.load_paper())


# --------------------------------------------------------------------------- table

def test_main_table_columns_and_order(records):
    df = report.main_table(records, report.load_paper())
    assert list(df.columns) == [
        "experiment", "model", "corpus", "seeds", "causal", "val_ppl", "val_ppl_paper", "val_ppl_diff",
        "test_ppl", "val_ppl_mem", "test_ppl_mem", "params_m", "params_m_paper", "cosine", "cosine_paper", "train_tokens_per_s",
        "train_tokens_per_s_paper", "peak_mem_gb", "peak_mem_gb_paper"]
    assert list(zip(df.corpus, df.experiment)) == [
        ("ptb", "sdgm"), ("wikitext2", "sdgm"), ("wikitext2", "lstm"),
        ("wikitext2", "my_new_baseline")]


def test_main_table_values(records):
    df = report.main_table(records, report.load_paper())
    sw = _row(df, "sdgm", "wikitext2")
    assert sw.seeds == 2
    assert sw.causal == "yes"
    assert sw.val_ppl == "105.0 ± 7.1"
    assert sw.val_ppl_paper == "31.2"
    assert sw.val_ppl_diff == "+73.8"
    assert sw.test_ppl == "100.0 ± 7.1"
    assert sw.params_m == "2.35"
    assert sw.params_m_paper == "22.8"
    assert sw.cosine == "0.410 ± 0.000"  # two seeds: std shown even when 0
    assert sw.cosine_paper == "0.92"
    assert sw.train_tokens_per_s == "12050 ± 71"
    assert sw.train_tokens_per_s_paper == "2100"
    assert sw.peak_mem_gb == "n/a (no GPU (CPU run))"
    assert sw.peak_mem_gb_paper == "6.5"

    sp = _row(df, "sdgm", "ptb")
    assert sp.seeds == 1
    assert sp.val_ppl == "150.0"
    assert sp.val_ppl_paper == "57.1"
    assert sp.val_ppl_diff == "+92.9"
    assert sp.params_m_paper == "n/a (not in paper)"

    new = _row(df, "my_new_baseline", "wikitext2")
    assert new.val_ppl == "120.0"
    assert new.val_ppl_paper == "n/a (not in paper)"
    assert new.val_ppl_diff == "n/a (not in paper)"

    lstm = _row(df, "lstm", "wikitext2")
    assert lstm.cosine == "n/a (model has no embedding reconstruction)"
    assert lstm.cosine_paper == "n/a (not in paper)"
    assert (lstm.val_ppl, lstm.val_ppl_mem, lstm.test_ppl_mem) == ("130.0", "101.2", "96.2")  # both, labelled
    assert sw.val_ppl_mem == sw.test_ppl_mem == "n/a (model carries no state across windows)"


def test_missing_is_never_zero_or_blank(records):
    df = report.main_table(records, report.load_paper())
    for col in df.columns:
        if col == "seeds":
            continue
        for v in df[col]:
            assert isinstance(v, str), (col, v)
            assert v.strip() not in ("", "0", "0.0", "0.00", "0.000", "nan", "NaN", "None"), (col, v)


# --------------------------------------------------------------------------- causality

def test_leaking_rows_are_marked_and_never_compared(tmp_path):
    recs = [_record("sdgm", "wikitext2", 0, 100.0),
            # a leaking run under a name that has a paper number: the number is shown, the difference is not
            _record("transformer_xl", "wikitext2", 0, 20.0, causal_change=0.85),
            _record("linformer_noncausal", "ptb", 0, 40.0, causal_change=0.5),
            # one leaking seed out of two marks the whole row
            _record("mixed", "ptb", 0, 90.0), _record("mixed", "ptb", 1, 80.0, causal_change=2e-3)]
    recs = report.load_metrics([_write(tmp_path, r) for r in recs])
    paper = report.load_paper()
    df = report.main_table(recs, paper)
    assert _row(df, "sdgm", "wikitext2").causal == "yes"
    txl = _row(df, "transformer_xl (non-causal)", "wikitext2")
    assert txl.causal == "LEAKS future tokens"
    assert txl.val_ppl == "20.0" and txl.val_ppl_paper == "32.1"
    assert txl.val_ppl_diff == "n/a (leaks future tokens)"
    lin = _row(df, "linformer_noncausal (non-causal)", "ptb")
    assert lin.causal == "LEAKS future tokens" and lin.val_ppl_diff == "n/a (leaks future tokens)"
    assert _row(df, "mixed (non-causal)", "ptb").causal == "LEAKS future tokens"
    assert not (df.experiment == "transformer_xl").any()  # never under the plain name
    num = report.main_table_numeric(recs, paper)
    t = _row(num, "transformer_xl (non-causal)", "wikitext2")
    assert t.causal is False or t.causal == False  # noqa: E712 (numpy bool)
    assert math.isnan(t.val_ppl_diff) and t.val_ppl_paper == pytest.approx(32.1)
    assert _row(num, "sdgm", "wikitext2").causal == True  # noqa: E712
    md = report.to_markdown(df)
    assert "| transformer_xl (non-causal) | transformer_xl | wikitext2 | 1 | LEAKS future tokens | 20.0 | 32.1 | " \
           "n/a (leaks future tokens) |" in md


def test_unaudited_runs_say_so(tmp_path):
    recs = report.load_metrics([_write(tmp_path, _record("sdgm", "ptb", 0, 100.0, causal_change=None))])
    row = _row(report.main_table(recs, report.load_paper()), "sdgm", "ptb")
    assert row.causal == "n/a (not audited: 1 of 1 seeds)"
    assert row.val_ppl_diff == "+42.9"  # not known to leak: compared as usual


@pytest.mark.parametrize("audit", [{"passed": "yes"}, {"max_logit_change": 0.0}, [0.0],
                                   {"passed": True, "max_logit_change": "0"}])
def test_malformed_causal_audit_names_file(tmp_path, audit):
    rec = _record("sdgm", "wikitext2", 0, 100.0)
    rec["metrics"]["causal_audit"] = audit
    p = _write(tmp_path, rec)
    with pytest.raises(ReportError, match="causal_audit") as ei:
        report.load_metrics([p])
    assert str(p) in str(ei.value)


def test_null_without_reason_is_not_measured(tmp_path):
    rec = _record("sdgm", "wikitext2", 0, 100.0)
    rec["metrics"]["test_ppl"] = None
    recs = report.load_metrics([_write(tmp_path, rec)])
    df = report.main_table(recs, report.load_paper())
    assert _row(df, "sdgm", "wikitext2").test_ppl == "n/a (not measured)"


def test_main_table_numeric(records):
    paper = report.load_paper()
    num = report.main_table_numeric(records, paper)
    disp = report.main_table(records, paper)
    assert list(zip(num.corpus, num.experiment)) == list(zip(disp.corpus, disp.experiment))
    sw = _row(num, "sdgm", "wikitext2")
    assert sw.val_ppl == pytest.approx(105.0)
    assert sw.val_ppl_std == pytest.approx(7.0710678, rel=1e-6)
    assert sw.val_ppl_paper == pytest.approx(31.2)
    assert sw.val_ppl_diff == pytest.approx(73.8)
    assert sw.params_m == pytest.approx(2.345678)
    assert math.isnan(sw.peak_mem_gb)
    lstm = _row(num, "lstm", "wikitext2")
    assert math.isnan(lstm.cosine) and math.isnan(lstm.cosine_paper)
    assert lstm.val_ppl_mem == pytest.approx(101.25) and math.isnan(sw.val_ppl_mem)
    assert math.isnan(_row(num, "my_new_baseline", "wikitext2").val_ppl_diff)


# --------------------------------------------------------------------------- files

def test_write_table(records, tmp_path):
    df = report.main_table(records, report.load_paper())
    stem = tmp_path / "out" / "nested" / "main"
    report.write_table(df, stem, "Main results & 100% of_the runs")
    csv, md, tex = (stem.with_name("main" + e) for e in (".csv", ".md", ".tex"))
    for p in (csv, md, tex):
        assert p.exists() and p.stat().st_size > 0
    assert not [p for p in stem.parent.iterdir() if p.name.startswith(".")]  # no temp files left

    c = csv.read_text(encoding="utf-8")
    assert c.splitlines()[0].startswith("experiment,model,corpus,seeds,causal,val_ppl,val_ppl_paper")
    assert "105.0 ± 7.1" in c and "n/a (not in paper)" in c
    back = pd.read_csv(csv)
    assert list(back.columns) == list(df.columns) and len(back) == len(df)

    m = md.read_text(encoding="utf-8")
    lines = m.splitlines()
    assert lines[0].startswith("| experiment | model | corpus | seeds |")
    assert set(lines[1]) <= set("|-:")
    assert any(l.startswith("| sdgm | sdgm | wikitext2 | 2 | yes | 105.0 ± 7.1 | 31.2 | +73.8") for l in lines)
    assert len(lines) == 2 + len(df)

    t = tex.read_text(encoding="utf-8")
    assert "\\begin{table}" in t and "\\end{table}" in t
    assert "\\begin{tabular}" in t and "\\toprule" in t and "\\midrule" in t and "\\bottomrule" in t
    assert "\\caption{Main results \\& 100\\% of\\_the runs}" in t
    assert "\\pm" in t and "±" not in t
    assert "val\\_ppl\\_paper" in t
    assert "my\\_new\\_baseline" in t
    assert "105.0 $\\pm$ 7.1" in t
    # no unescaped underscore anywhere
    assert "_" not in t.replace("\\_", "")


# --------------------------------------------------------------------------- figure

def test_plot_training_curves(records, tmp_path):
    png, pdf = report.plot_training_curves(records, tmp_path / "fig" / "training_curves")
    assert png.exists() and pdf.exists()
    assert png.stat().st_size > 10_000
    assert pdf.stat().st_size > 1_000
    img = matplotlib.image.imread(png)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.shape[0] > 100 and img.shape[1] > 100


def test_plot_skips_empty_history(tmp_path):
    recs = [_record("sdgm", "wikitext2", 0, 100.0),
            _record("lstm", "wikitext2", 0, 130.0, history={"train": [], "val": []})]
    recs = report.load_metrics([_write(tmp_path, r) for r in recs])
    png, _ = report.plot_training_curves(recs, tmp_path / "f" / "tc")
    assert png.stat().st_size > 10_000


def test_plot_no_runs(tmp_path):
    png, pdf = report.plot_training_curves([], tmp_path / "empty" / "tc")
    assert png.exists() and pdf.exists()
    img = matplotlib.image.imread(png)
    assert img.ndim == 3 and img.shape[2] in (3, 4)


# --------------------------------------------------------------------------- end to end

def test_build_report(metric_files, tmp_path):
    written = report.build_report(metric_files, tmp_path / "tables", tmp_path / "figures")
    expected = {tmp_path / "tables" / f"main.{e}" for e in ("csv", "md", "tex")} | \
               {tmp_path / "figures" / f"training_curves.{e}" for e in ("png", "pdf")}
    assert {Path(p) for p in written.values()} == expected
    for p in expected:
        assert p.exists() and p.stat().st_size > 0
    assert "n/a (model has no embedding reconstruction)" in (tmp_path / "tables" / "main.md").read_text()


def test_build_report_broken_file(metric_files, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(ReportError, match="bad.json"):
        report.build_report([*metric_files, bad], tmp_path / "t", tmp_path / "f")
