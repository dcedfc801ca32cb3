"""Tests for sdgm.reporting on synthetic metrics.json files (no training, no GPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from helpers import metrics_record, write_metrics

from sdgm import reporting as report
from sdgm.common.missing import (
    LEAKS_FUTURE,
    MAIN_RUN_NOT_IN_REPORT,
    NO_RECONSTRUCTION,
    NO_STATE,
    NOT_IN_PAPER,
    NOT_MEASURED,
    na,
)
from sdgm.reporting import ReportError


@pytest.fixture
def metric_files(tmp_path) -> list[Path]:
    recs = [
        metrics_record("sdgm", "wikitext2", 0, 100.0),
        metrics_record("sdgm", "wikitext2", 1, 110.0),
        metrics_record("sdgm", "ptb", 0, 150.0),
        metrics_record("my_new_baseline", "wikitext2", 0, 120.0),
        metrics_record(
            "lstm", "wikitext2", 0, 130.0, cosine=None, mem_ppl=101.25, na={"cosine_val": NO_RECONSTRUCTION}
        ),
    ]
    return [write_metrics(tmp_path, r) for r in recs]


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
    rec = metrics_record("sdgm", "wikitext2", 0, 100.0)
    del rec["provenance"]
    p = write_metrics(tmp_path, rec)
    with pytest.raises(ReportError) as ei:
        report.load_metrics([p])
    assert str(p) in str(ei.value)
    assert "provenance" in str(ei.value)


@pytest.mark.parametrize("key", ["git_commit", "device"])
def test_missing_provenance_key_names_file(tmp_path, key):
    rec = metrics_record("sdgm", "wikitext2", 0, 100.0)
    del rec["provenance"][key]
    p = write_metrics(tmp_path, rec)
    with pytest.raises(ReportError, match=key) as ei:
        report.load_metrics([p])
    assert str(p) in str(ei.value)


@pytest.mark.parametrize("key", ["schema", "experiment", "corpus", "seed", "metrics"])
def test_missing_required_key(tmp_path, key):
    rec = metrics_record("sdgm", "wikitext2", 0, 100.0)
    del rec[key]
    p = write_metrics(tmp_path, rec) if key not in ("experiment", "corpus", "seed") else None
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
    a = write_metrics(tmp_path / "a", metrics_record("sdgm", "wikitext2", 0, 100.0))
    b = write_metrics(tmp_path / "b", metrics_record("sdgm", "wikitext2", 0, 101.0))
    recs = report.load_metrics([a, b])
    with pytest.raises(ReportError, match="duplicate"):
        report.main_table(recs, report.load_paper())


# --------------------------------------------------------------------------- table


def test_main_table_columns_and_order(records):
    df = report.main_table(records, report.load_paper())
    assert list(df.columns) == [
        "experiment",
        "model",
        "corpus",
        "seeds",
        "causal",
        "val_ppl",
        "val_ppl_paper",
        "val_ppl_diff",
        "test_ppl",
        "val_ppl_mem",
        "test_ppl_mem",
        "params_m",
        "params_m_paper",
        "params_m_diff",
        "cosine",
        "cosine_paper",
        "cosine_diff",
        "train_tokens_per_s",
        "train_tokens_per_s_paper",
        "train_tokens_per_s_diff",
        "peak_mem_gb",
        "peak_mem_gb_paper",
        "peak_mem_gb_diff",
    ]
    assert list(zip(df.corpus, df.experiment)) == [  # per corpus, experiments in the order their files were given
        ("ptb", "sdgm"),
        ("wikitext2", "sdgm"),
        ("wikitext2", "my_new_baseline"),
        ("wikitext2", "lstm"),
    ]
    reordered = report.main_table(records[3:] + records[:3], report.load_paper())
    assert list(zip(reordered.corpus, reordered.experiment)) == [
        ("ptb", "sdgm"),
        ("wikitext2", "my_new_baseline"),
        ("wikitext2", "lstm"),
        ("wikitext2", "sdgm"),
    ]


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
    assert sw.params_m_diff == "-20.45"  # 2.345678 - 22.8
    assert sw.cosine == "0.410 ± 0.000"  # two seeds: std shown even when 0
    assert sw.cosine_paper == "0.92"
    assert sw.cosine_diff == "-0.510"
    assert sw.train_tokens_per_s == "12050 ± 71"
    assert sw.train_tokens_per_s_paper == "2100"
    assert sw.train_tokens_per_s_diff == "+9950"
    assert sw.peak_mem_gb == "n/a (no GPU (CPU run))"
    assert sw.peak_mem_gb_paper == "6.5"
    assert sw.peak_mem_gb_diff == "n/a (no GPU (CPU run))"  # nothing measured: no difference, never 0

    sp = _row(df, "sdgm", "ptb")
    assert sp.seeds == 1
    assert sp.val_ppl == "150.0"
    assert sp.val_ppl_paper == "57.1"
    assert sp.val_ppl_diff == "+92.9"
    assert sp.params_m_paper == na(NOT_IN_PAPER)

    new = _row(df, "my_new_baseline", "wikitext2")
    assert new.val_ppl == "120.0"
    assert new.val_ppl_paper == na(NOT_IN_PAPER)
    assert new.val_ppl_diff == na(NOT_IN_PAPER)

    lstm = _row(df, "lstm", "wikitext2")
    assert lstm.cosine == na(NO_RECONSTRUCTION)
    assert lstm.cosine_paper == na(NOT_IN_PAPER)
    assert (lstm.val_ppl, lstm.val_ppl_mem, lstm.test_ppl_mem) == ("130.0", "101.2", "96.2")  # both, labelled
    assert sw.val_ppl_mem == sw.test_ppl_mem == na(NO_STATE)


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
    recs = [
        metrics_record("sdgm", "wikitext2", 0, 100.0),
        # a leaking run under a name that has a paper number: the number is shown, the difference is not
        metrics_record("transformer_xl", "wikitext2", 0, 20.0, causal_change=0.85),
        metrics_record("linformer_noncausal", "ptb", 0, 40.0, causal_change=0.5),
        # one leaking seed out of two marks the whole row
        metrics_record("mixed", "ptb", 0, 90.0),
        metrics_record("mixed", "ptb", 1, 80.0, causal_change=2e-3),
    ]
    recs = report.load_metrics([write_metrics(tmp_path, r) for r in recs])
    paper = report.load_paper()
    df = report.main_table(recs, paper)
    assert _row(df, "sdgm", "wikitext2").causal == "yes"
    txl = _row(df, "transformer_xl (non-causal)", "wikitext2")
    assert txl.causal == "LEAKS future tokens"
    assert txl.val_ppl == "20.0" and txl.val_ppl_paper == "32.1"
    assert txl.val_ppl_diff == na(LEAKS_FUTURE)
    lin = _row(df, "linformer_noncausal (non-causal)", "ptb")
    assert lin.causal == "LEAKS future tokens" and lin.val_ppl_diff == na(LEAKS_FUTURE)
    assert _row(df, "mixed (non-causal)", "ptb").causal == "LEAKS future tokens"
    assert not (df.experiment == "transformer_xl").any()  # never under the plain name
    num = report.main_table_numeric(recs, paper)
    t = _row(num, "transformer_xl (non-causal)", "wikitext2")
    assert t.causal is False or t.causal == False  # noqa: E712 (numpy bool)
    assert math.isnan(t.val_ppl_diff) and t.val_ppl_paper == pytest.approx(32.1)
    assert _row(num, "sdgm", "wikitext2").causal == True  # noqa: E712
    md = report.to_markdown(df)
    assert (
        "| transformer_xl (non-causal) | transformer_xl | wikitext2 | 1 | LEAKS future tokens | 20.0 | 32.1 | "
        f"{na(LEAKS_FUTURE)} |" in md
    )


def test_unaudited_runs_say_so(tmp_path):
    recs = report.load_metrics([write_metrics(tmp_path, metrics_record("sdgm", "ptb", 0, 100.0, causal_change=None))])
    row = _row(report.main_table(recs, report.load_paper()), "sdgm", "ptb")
    assert row.causal == "n/a (not audited: 1 of 1 seeds)"
    assert row.val_ppl_diff == "+42.9"  # not known to leak: compared as usual


@pytest.mark.parametrize(
    "audit", [{"passed": "yes"}, {"max_logit_change": 0.0}, [0.0], {"passed": True, "max_logit_change": "0"}]
)
def test_malformed_causal_audit_names_file(tmp_path, audit):
    rec = metrics_record("sdgm", "wikitext2", 0, 100.0)
    rec["metrics"]["causal_audit"] = audit
    p = write_metrics(tmp_path, rec)
    with pytest.raises(ReportError, match="causal_audit") as ei:
        report.load_metrics([p])
    assert str(p) in str(ei.value)


def test_null_without_reason_is_not_measured(tmp_path):
    rec = metrics_record("sdgm", "wikitext2", 0, 100.0)
    rec["metrics"]["test_ppl"] = None
    recs = report.load_metrics([write_metrics(tmp_path, rec)])
    df = report.main_table(recs, report.load_paper())
    assert _row(df, "sdgm", "wikitext2").test_ppl == na(NOT_MEASURED)


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
    assert "105.0 ± 7.1" in c and na(NOT_IN_PAPER) in c
    back = pd.read_csv(csv)
    assert list(back.columns) == list(df.columns) and len(back) == len(df)

    m = md.read_text(encoding="utf-8")
    lines = m.splitlines()
    assert lines[0].startswith("| experiment | model | corpus | seeds |")
    assert set(lines[1]) <= set("|-:")
    assert any(line.startswith("| sdgm | sdgm | wikitext2 | 2 | yes | 105.0 ± 7.1 | 31.2 | +73.8") for line in lines)
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
    recs = [
        metrics_record("sdgm", "wikitext2", 0, 100.0),
        metrics_record("lstm", "wikitext2", 0, 130.0, history={"train": [], "val": []}),
    ]
    recs = report.load_metrics([write_metrics(tmp_path, r) for r in recs])
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
    expected = {
        tmp_path / "tables" / f"{n}.{e}" for n in ("main", "ablations", "reconstruction") for e in ("csv", "md", "tex")
    } | {
        tmp_path / "figures" / f"{n}.{e}"
        for n in ("training_curves", "ablations", "ppl_vs_atoms")
        for e in ("png", "pdf")
    }
    assert {Path(p) for p in written.values()} == expected
    for p in expected:
        assert p.exists() and p.stat().st_size > 0
    assert na(NO_RECONSTRUCTION) in (tmp_path / "tables" / "main.md").read_text()


def test_build_report_broken_file(metric_files, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    with pytest.raises(ReportError, match="bad.json"):
        report.build_report([*metric_files, bad], tmp_path / "t", tmp_path / "f")


# --------------------------------------------------------------------------- seeds, ablations, reconstruction

SDGM = {"d_model": 64, "n_atoms": 256, "kernel_size": 3, "beta": 1.0, "gamma": 1.0, "encoder_padding": "causal"}
ABLATIONS = {
    "sdgm_beta0": "sdgm",
    "sdgm_gamma0": "sdgm",
    "sdgm_k32": "sdgm",
    "sdgm_k64": "sdgm",
    "sdgm_centered": "sdgm",
}


def _sdgm(experiment, corpus, seed, val_ppl, cosine=0.41, **options):
    return metrics_record(
        experiment,
        corpus,
        seed,
        val_ppl,
        model="sdgm",
        cosine=cosine,
        model_config={**SDGM, **options},
        causal_change=0.3 if "encoder_padding" in options else 0.0,
    )


@pytest.fixture
def matrix(tmp_path):
    """Three seeds of the main SDGM run and of its ablations on WikiText-2, one seed on PTB, a baseline."""
    recs = []
    for seed, (main, beta0, gamma0, k32, k64) in enumerate(
        [
            (100.0, 110.0, 900.0, 130.0, 120.0),
            (104.0, 112.0, 1100.0, 134.0, 118.0),
            (108.0, 117.0, 1000.0, 126.0, 116.0),
        ]
    ):
        recs += [
            _sdgm("sdgm", "wikitext2", seed, main),
            _sdgm("sdgm_beta0", "wikitext2", seed, beta0, cosine=0.30 + 0.02 * seed, beta=0.0),
            _sdgm("sdgm_gamma0", "wikitext2", seed, gamma0, gamma=0.0),
            _sdgm("sdgm_k32", "wikitext2", seed, k32, n_atoms=32),
            _sdgm("sdgm_k64", "wikitext2", seed, k64, n_atoms=64),
            metrics_record(
                "gpt2", "wikitext2", seed, 90.0 + seed, cosine=None, na={"cosine_val": report.NO_RECONSTRUCTION}
            ),
        ]
    recs += [
        _sdgm("sdgm", "ptb", 0, 150.0),
        _sdgm("sdgm_centered", "ptb", 0, 20.0, encoder_padding="centered"),
        _sdgm("sdgm_k32", "ptb", 0, 160.0, n_atoms=32),
    ]
    return report.load_metrics([write_metrics(tmp_path, r) for r in recs])


def test_seeds_are_aggregated_exactly(matrix):
    num = report.main_table_numeric(matrix, report.load_paper(), ABLATIONS)
    sw = _row(num, "sdgm", "wikitext2")
    assert sw.seeds == 3 and sw.val_ppl_n == 3
    assert sw.val_ppl == 104.0 and sw.val_ppl_std == 4.0  # 100, 104, 108: mean 104, sample std 4, exactly
    assert sw.test_ppl == 99.0 and sw.test_ppl_std == 4.0
    disp = report.main_table(matrix, report.load_paper(), ABLATIONS)
    assert _row(disp, "sdgm", "wikitext2").val_ppl == "104.0 ± 4.0"
    assert _row(disp, "sdgm", "wikitext2").val_ppl_diff == "+72.8"  # 104.0 - 31.2
    # the ablations have their own table; the main table keeps the main runs and baselines
    assert set(disp.experiment) == {"sdgm", "gpt2"}


def test_ablation_table(matrix):
    paper = report.load_paper()
    df = report.ablation_table(matrix, paper, ABLATIONS)
    assert (
        list(df.columns)
        == report.ABLATION_COLUMNS
        == [
            "experiment",
            "corpus",
            "ablation",
            "compared_with",
            "seeds",
            "causal",
            "val_ppl",
            "val_ppl_paper",
            "val_ppl_diff",
            "val_ppl_vs_main",
            "val_ppl_vs_main_paper",
            "test_ppl",
            "test_ppl_vs_main",
        ]
    )
    assert list(zip(df.corpus, df.experiment)) == [
        ("ptb", "sdgm"),
        ("ptb", "sdgm_k32"),
        ("ptb", "sdgm_centered (non-causal)"),
        ("wikitext2", "sdgm"),
        ("wikitext2", "sdgm_beta0"),
        ("wikitext2", "sdgm_gamma0"),
        ("wikitext2", "sdgm_k32"),
        ("wikitext2", "sdgm_k64"),
    ]
    main = _row(df, "sdgm", "wikitext2")
    assert (main.ablation, main.compared_with, main.val_ppl, main.val_ppl_paper) == (
        "none (main run)",
        "–",
        "104.0 ± 4.0",
        "31.2",
    )
    assert (main.val_ppl_vs_main, main.val_ppl_vs_main_paper) == ("0 (main run)", "0 (main run)")
    b = _row(df, "sdgm_beta0", "wikitext2")
    assert (b.ablation, b.compared_with, b.seeds, b.causal) == ("beta = 0.0", "sdgm", 3, "yes")
    assert b.val_ppl == "113.0 ± 3.6"  # 110, 112, 117: sample std sqrt(13)
    assert (b.val_ppl_paper, b.val_ppl_diff) == ("33.5", "+79.5")
    assert b.val_ppl_vs_main == "+9.0"  # 113 - 104
    assert b.val_ppl_vs_main_paper == "+2.3"  # the paper's 33.5 - 31.2
    assert (b.test_ppl, b.test_ppl_vs_main) == ("108.0 ± 3.6", "+9.0")
    g = _row(df, "sdgm_gamma0", "wikitext2")
    assert (g.val_ppl, g.val_ppl_paper, g.val_ppl_diff, g.val_ppl_vs_main, g.val_ppl_vs_main_paper) == (
        "1000.0 ± 100.0",
        "35",
        "+965.0",
        "+896.0",
        "+3.8",
    )
    k = _row(df, "sdgm_k32", "wikitext2")
    assert (k.ablation, k.val_ppl, k.val_ppl_paper, k.val_ppl_diff, k.val_ppl_vs_main_paper) == (
        "n_atoms = 32",
        "130.0 ± 4.0",
        na(NOT_IN_PAPER),
        na(NOT_IN_PAPER),
        na(NOT_IN_PAPER),
    )
    assert _row(df, "sdgm_k32", "ptb").val_ppl_vs_main == "+10.0"
    leak = _row(df, "sdgm_centered (non-causal)", "ptb")
    assert (leak.ablation, leak.causal) == ("encoder_padding = centered", "LEAKS future tokens")
    assert leak.val_ppl_diff == na(LEAKS_FUTURE)
    assert leak.val_ppl_vs_main == "-130.0"  # measured and shown, on a row labelled non-causal

    num = report.ablation_table_numeric(matrix, paper, ABLATIONS)
    nb = num[(num.experiment == "sdgm_beta0") & (num.corpus == "wikitext2")].iloc[0]
    assert nb.val_ppl == 113.0 and nb.val_ppl_std == pytest.approx(math.sqrt(13), abs=1e-12)
    assert nb.val_ppl_vs_main == 9.0 and nb.val_ppl_vs_main_paper == pytest.approx(2.3)
    assert nb.val_ppl_diff == pytest.approx(79.5)


def test_ablation_table_missing_values_say_why(tmp_path):
    recs = [
        _sdgm("sdgm_k32", "ptb", 0, 160.0, n_atoms=32),  # its main run is not among the records
        _sdgm("sdgm", "wikitext2", 0, 100.0),
        _sdgm("sdgm", "wikitext2", 1, 102.0),
        _sdgm("sdgm_beta0", "wikitext2", 0, 110.0, beta=0.0),
        _sdgm("sdgm_beta0", "wikitext2", 1, 111.0, beta=0.0),
        _sdgm("sdgm_beta0", "wikitext2", 2, 112.0, beta=0.0),
    ]
    recs[-1]["metrics"]["val_ppl"] = None
    recs[-1]["na"]["val_ppl"] = "diverged"
    recs = report.load_metrics([write_metrics(tmp_path, r) for r in recs])
    df = report.ablation_table(recs, report.load_paper(), ABLATIONS)
    orphan = _row(df, "sdgm_k32", "ptb")
    assert orphan.ablation == na(MAIN_RUN_NOT_IN_REPORT)
    assert orphan.val_ppl_vs_main == "n/a (main run sdgm/ptb not in the report)"
    b = _row(df, "sdgm_beta0", "wikitext2")
    assert b.val_ppl == "110.5 ± 0.7 (n=2/3; n/a: diverged)"
    assert b.val_ppl_vs_main == "+9.5"
    for col in df.columns:
        if col != "seeds":
            assert all(isinstance(v, str) and v.strip() not in ("", "0", "0.0", "nan") for v in df[col]), col


def test_reconstruction_table(matrix):
    df = report.reconstruction_table(matrix, report.load_paper(), ABLATIONS)
    assert (
        list(df.columns)
        == report.RECONSTRUCTION_COLUMNS
        == [
            "experiment",
            "corpus",
            "ablation",
            "seeds",
            "causal",
            "cosine_val",
            "cosine_paper",
            "cosine_diff",
            "cosine_test",
        ]
    )
    assert "gpt2" not in set(df.experiment)  # no reconstruction: no row
    assert set(zip(df.experiment, df.corpus)) >= {
        ("sdgm", "wikitext2"),
        ("sdgm_beta0", "wikitext2"),
        ("sdgm", "ptb"),
        ("sdgm_centered (non-causal)", "ptb"),
    }
    main = _row(df, "sdgm", "wikitext2")
    assert (main.ablation, main.cosine_val, main.cosine_paper, main.cosine_diff) == (
        "none (main run)",
        "0.410 ± 0.000",
        "0.92",
        "-0.510",
    )
    b = _row(df, "sdgm_beta0", "wikitext2")
    assert (b.ablation, b.cosine_val, b.cosine_paper, b.cosine_diff, b.cosine_test) == (
        "beta = 0.0",
        "0.320 ± 0.020",
        "0.88",
        "-0.560",
        "0.320 ± 0.020",
    )
    assert _row(df, "sdgm_k32", "wikitext2").cosine_paper == na(NOT_IN_PAPER)
    num = report.reconstruction_table_numeric(matrix, report.load_paper(), ABLATIONS)
    nb = num[(num.experiment == "sdgm_beta0")].iloc[0]
    assert nb.cosine_val == pytest.approx(0.32, abs=1e-15) and nb.cosine_val_std == pytest.approx(0.02, abs=1e-15)


def test_seeds_of_one_row_must_share_a_configuration(tmp_path):
    a, b = _sdgm("sdgm", "ptb", 0, 100.0), _sdgm("sdgm", "ptb", 1, 101.0)
    a["run_spec"] = {"model": "sdgm", "model_overrides": {"n_atoms": 256}, "seed": 0}
    b["run_spec"] = {"model": "sdgm", "model_overrides": {"n_atoms": 256}, "seed": 1}
    ok = report.load_metrics([write_metrics(tmp_path / "ok", a), write_metrics(tmp_path / "ok", b)])
    assert _row(report.main_table(ok, report.load_paper()), "sdgm", "ptb").seeds == 2
    b["run_spec"]["model_overrides"]["n_atoms"] = 128
    bad = report.load_metrics([write_metrics(tmp_path / "bad", a), write_metrics(tmp_path / "bad", b)])
    with pytest.raises(ReportError, match="seeds of sdgm/ptb were run with different configurations"):
        report.main_table(bad, report.load_paper())


def test_sweep_points_follow_one_option(matrix):
    pts = report.sweep_points(matrix, ABLATIONS, "n_atoms")
    assert [(k, len(r)) for k, r in pts["wikitext2"]] == [(32, 3), (64, 3), (256, 3)]  # not beta0, gamma0
    assert [k for k, _ in pts["ptb"]] == [32, 256]  # the centered run changes another option


def test_ablation_figures(matrix, tmp_path):
    for paths in (
        report.plot_ablations(matrix, ABLATIONS, tmp_path / "fig" / "ablations", report.load_paper()),
        report.plot_sweep(matrix, ABLATIONS, "n_atoms", tmp_path / "fig" / "ppl_vs_atoms", "K"),
    ):
        png, pdf = paths
        assert png.suffix == ".png" and pdf.suffix == ".pdf" and pdf.stat().st_size > 1_000
        img = matplotlib.image.imread(png)
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
        assert img[..., :3].std() > 0.05  # not a blank page
    # without ablations the figures say so instead of failing
    png, _ = report.plot_ablations(matrix, {}, tmp_path / "none" / "ablations")
    assert png.exists()
    png, _ = report.plot_sweep(matrix, {}, "n_atoms", tmp_path / "none" / "sweep", "K")
    assert png.exists()


def test_build_report_with_ablations(matrix, tmp_path):
    paths = [r["_path"] for r in matrix]
    written = report.build_report(paths, tmp_path / "t", tmp_path / "f", ablations=ABLATIONS)
    abl = pd.read_csv(written["ablations_csv"])
    assert list(abl.columns) == report.ABLATION_COLUMNS and len(abl) == 8
    rec = pd.read_csv(written["reconstruction_csv"])
    assert "gpt2" not in set(rec.experiment)
    assert set(pd.read_csv(written["main_csv"]).experiment) == {"sdgm", "gpt2"}
    assert "sdgm\\_beta0" in written["ablations_tex"].read_text() and "$\\pm$" in written["ablations_tex"].read_text()
    assert (
        "| sdgm_beta0 | wikitext2 | beta = 0.0 | sdgm | 3 | yes | 113.0 ± 3.6 | 33.5 | +79.5 | +9.0 | +2.3 |"
        in written["ablations_md"].read_text()
    )


def test_write_table_with_footnotes_numbers_each_reason_once_and_keeps_the_csv_whole(tmp_path):
    from sdgm.reporting.render import write_table

    long = "not run: predicted peak 19.6 GiB is more than 90% of the memory the host has"
    df = pd.DataFrame(
        {
            "L": [128, 8192, 8192],
            "ms": ["1.0", f"n/a ({long})", "n/a (oom)"],
            "mb": ["2.0", f"n/a ({long})", "n/a (oom)"],
        }
    )
    csv, md, tex = write_table(df, tmp_path / "t", "cap", footnotes=True)
    assert pd.read_csv(csv)["ms"].tolist() == df["ms"].tolist()
    text = md.read_text()
    assert "| 8192 | n/a [1] | n/a [1] |" in text and "| 8192 | n/a [2] | n/a [2] |" in text
    assert text.endswith(f"\n1. {long}\n2. oom\n") and text.count(long) == 1
    assert "[1] not run" in tex.read_text()
    _, md2, _ = write_table(df, tmp_path / "u", "cap")
    assert f"n/a ({long})" in md2.read_text()  # without footnotes: as before
