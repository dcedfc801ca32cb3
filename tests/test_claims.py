"""The claims ledger: every verdict rule on synthetic records (each branch), the CSV types, the claims file, and the
committed renderings (results/h100/tables/claims.*, README.md's section) equal to what the code renders now."""

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sdgm.reporting import ReportError, load_paper
from sdgm.reporting import claim_rules as V
from sdgm.reporting import claims as C
from sdgm.reporting.claim_row import VERDICTS
from sdgm.reporting.slope_rule import SUPERSEDED_SCALING
from sdgm.reporting.statistics import t_quantile

REPO = Path(__file__).resolve().parents[1]
TOLS = {
    "tolerances": {
        "ppl": {"rel": 0.03, "why": "x"},
        "abs01": {"abs": 0.1, "why": "x"},
        "slope": {"abs": 0.15, "why": "x"},
    }
}


def metrics(
    root: Path,
    exp: str,
    corpus: str,
    seed: int,
    leaks: bool = False,
    na: dict | None = None,
    commit: str = "abc1234def",
    **values,
):
    d = root / "runs" / corpus / f"{exp}-s{seed}-0123abcd"
    d.mkdir(parents=True, exist_ok=True)
    rec = {
        "schema": 1,
        "experiment": exp,
        "model": exp,
        "corpus": corpus,
        "seed": seed,
        "metrics": {**values, "causal_audit": {"passed": not leaks, "max_logit_change": 1.0 if leaks else 0.0}},
        "na": na or {},
        "train_config": {"seq_len": 16},
        "provenance": {"git_commit": commit, "device": "cpu", "timestamp": f"2026-01-0{seed + 1}T00:00:00Z"},
    }
    (d / "metrics.json").write_text(json.dumps(rec))
    return d / "metrics.json"


def throughput(root: Path, exp: str, corpus: str, seed: int, tok_s: float | None):
    p = root / "bench" / "throughput" / corpus / f"{exp}-s{seed}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    rec = {
        "schema": 1,
        "kind": "throughput",
        "experiment": exp,
        "corpus": corpus,
        "seed": seed,
        "provenance": {},
        "config_hash": "x",
        "metrics": {"train_tokens_per_s": tok_s},
        "na": {} if tok_s is not None else {"train_tokens_per_s": "out of memory"},
    }
    p.write_text(json.dumps(rec))
    return p


def ev_of(paths, **kw):
    return V.Evidence(metrics=paths, **kw)


VALUE = {
    "id": "v",
    "claim": "c",
    "where": "w",
    "kind": "value",
    "corpus": "ptb",
    "source": "metrics",
    "metric": "val_ppl",
    "experiment": "sdgm",
    "paper": 100.0,
    "tolerance": "ppl",
}


@pytest.mark.parametrize("df,expected", [(1, 12.7062), (2, 4.3027), (10, 2.2281), (30, 2.0423), (1000, 1.9623)])
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=2e-4)


@pytest.mark.parametrize(
    "values,verdict",
    [
        ([99.0, 101.0, 100.5], V.REPRODUCED),  # 100 inside the interval
        ([110.0, 110.5, 111.0], V.NOT_REPRODUCED),
    ],
)
def test_value_claim_is_judged_on_the_interval(tmp_path, values, verdict):
    paths = [metrics(tmp_path, "sdgm", "ptb", s, val_ppl=v) for s, v in enumerate(values)]
    row = V.judge(TOLS, VALUE, ev_of(paths))
    assert row["verdict"] == verdict and row["n"] == 3
    assert row["ours_ci_low"] < row["ours_value"] < row["ours_ci_high"]
    assert "95 % interval over 3 seeds" in row["reason"] and V.ONE_SEED not in row["reason"]


def test_value_claim_with_a_tight_interval_excluding_the_paper_is_not_reproduced_even_within_tolerance(tmp_path):
    paths = [metrics(tmp_path, "sdgm", "ptb", s, val_ppl=v) for s, v in enumerate([102.0, 102.01, 102.02])]
    assert V.judge(TOLS, VALUE, ev_of(paths))["verdict"] == V.NOT_REPRODUCED  # 2 % off: a value claim needs the CI


@pytest.mark.parametrize("value,verdict", [(102.9, V.REPRODUCED), (103.1, V.NOT_REPRODUCED)])
def test_one_seed_has_no_interval_and_the_tolerance_decides(tmp_path, value, verdict):
    row = V.judge(TOLS, VALUE, ev_of([metrics(tmp_path, "sdgm", "ptb", 0, val_ppl=value)]))
    assert row["verdict"] == verdict and row["reason"].startswith(V.ONE_SEED)
    assert math.isnan(row["ours_ci_low"]) and math.isnan(row["ours_ci_high"]) and row["tolerance"] == pytest.approx(3)


@pytest.mark.parametrize(
    "values,verdict",
    [
        ([102.0, 102.01, 102.02], V.REPRODUCED),  # outside the CI, in tolerance
        ([90.0, 120.0, 105.0], V.REPRODUCED),  # inside the wide CI
        ([110.0, 110.01, 110.02], V.NOT_REPRODUCED),
    ],
)
def test_engineering_claim_is_reproduced_inside_the_interval_or_within_the_tolerance(tmp_path, values, verdict):
    paths = [metrics(tmp_path, "sdgm", "ptb", s, val_ppl=v) for s, v in enumerate(values)]
    assert V.judge(TOLS, {**VALUE, "kind": "engineering"}, ev_of(paths))["verdict"] == verdict


def test_value_without_a_record_or_with_a_null_metric_is_not_measured_with_its_reason(tmp_path):
    row = V.judge(TOLS, VALUE, ev_of([metrics(tmp_path / "other", "sdgm", "wikitext2", 0, val_ppl=30.0)]))
    assert row["verdict"] == V.NOT_MEASURED and row["reason"] == "no metrics record of sdgm on ptb"
    p = metrics(tmp_path, "sdgm", "ptb", 0, val_ppl=None, na={"val_ppl": "training diverged"})
    row = V.judge(TOLS, VALUE, ev_of([p]))
    assert row["verdict"] == V.NOT_MEASURED and "training diverged" in row["reason"] and row["evidence"] == [str(p)]


DIRECTION = {
    "id": "d",
    "claim": "c",
    "where": "w",
    "kind": "direction",
    "corpus": "ptb",
    "source": "metrics",
    "metric": "val_ppl",
    "experiment": "sdgm",
    "than": ["txl"],
    "better": "lower",
    "paper": -1.0,
    "tolerance": "ppl",
}


@pytest.mark.parametrize(
    "ours,theirs,verdict",
    [
        ([90.0, 91.0, 92.0], [100.0, 101.0, 102.0], V.REPRODUCED),
        ([110.0, 111.0, 112.0], [100.0, 101.0, 102.0], V.CONTRADICTED),
        ([95.0, 105.0, 100.0], [99.0, 101.0, 100.0], V.NOT_REPRODUCED),  # the interval of the difference contains 0
    ],
)
def test_direction_claim_is_judged_on_the_interval_of_the_difference(tmp_path, ours, theirs, verdict):
    paths = [metrics(tmp_path, "sdgm", "ptb", s, val_ppl=v) for s, v in enumerate(ours)]
    paths += [metrics(tmp_path, "txl", "ptb", s, val_ppl=v) for s, v in enumerate(theirs)]
    row = V.judge(TOLS, DIRECTION, ev_of(paths))
    assert row["verdict"] == verdict and row["compared_with"] == "txl"
    assert row["ours_value"] == pytest.approx(sum(ours) / 3 - sum(theirs) / 3)
    assert row["ours_ci_low"] < row["ours_value"] < row["ours_ci_high"]


@pytest.mark.parametrize(
    "ours,verdict",
    [
        (96.0, V.REPRODUCED),
        (97.0, V.REPRODUCED),  # x1.031 >= 1.03
        (98.0, V.NOT_REPRODUCED),
        (104.0, V.CONTRADICTED),
    ],
)
def test_direction_with_one_seed_is_judged_on_the_ratio_in_the_factor_rules_band(tmp_path, ours, verdict):
    paths = [metrics(tmp_path, "sdgm", "ptb", 0, val_ppl=ours), metrics(tmp_path, "txl", "ptb", 0, val_ppl=100.0)]
    row = V.judge(TOLS, DIRECTION, ev_of(paths))
    assert row["verdict"] == verdict and row["reason"].startswith(V.ONE_SEED)
    assert row["tolerance"] == pytest.approx(0.03)
    assert row["shown"] == f"x{100 / ours:.3g} ({V.fmt(ours)} vs 100.0, txl)"  # the ratio with both values


def test_direction_names_the_baselines_tied_with_the_best(tmp_path):
    paths = [metrics(tmp_path, e, "ptb", 0, val_ppl=v) for e, v in (("sdgm", 50.0), ("a", 100.0), ("b", 102.0))]
    row = V.judge(TOLS, {**DIRECTION, "than": ["a", "b"], "unit": "ms"}, ev_of(paths))
    assert row["verdict"] == V.REPRODUCED and row["shown"] == "x2 (50.00 vs 100.0 ms, a = b)"
    assert "a tied with b" in row["reason"]


def test_direction_against_several_is_judged_against_the_best_and_higher_is_better_flips_the_sign(tmp_path):
    paths = [
        metrics(tmp_path, "sdgm", "ptb", 0, val_ppl=50.0),
        metrics(tmp_path, "a", "ptb", 0, val_ppl=40.0),
        metrics(tmp_path, "b", "ptb", 0, val_ppl=60.0),
    ]
    claim = {**DIRECTION, "than": ["a", "b"], "better": "higher"}
    row = V.judge(TOLS, claim, ev_of(paths))
    assert row["compared_with"] == "b" and row["ours_value"] == -10.0 and row["verdict"] == V.CONTRADICTED
    row = V.judge(TOLS, {**claim, "better": "lower"}, ev_of(paths))
    assert row["compared_with"] == "a" and row["verdict"] == V.CONTRADICTED


def test_direction_with_a_missing_side_is_not_measured_naming_it(tmp_path):
    row = V.judge(TOLS, DIRECTION, ev_of([metrics(tmp_path, "sdgm", "ptb", 0, val_ppl=90.0)]))
    assert row["verdict"] == V.NOT_MEASURED and row["reason"].startswith("no value for txl")


def test_a_claim_whose_evidence_leaks_is_never_reproduced(tmp_path):
    paths = [
        metrics(tmp_path, "sdgm", "ptb", 0, val_ppl=1.1, leaks=True),
        metrics(tmp_path, "txl", "ptb", 0, val_ppl=100.0),
    ]
    row = V.judge(TOLS, DIRECTION, ev_of(paths))
    assert row["verdict"] == V.NOT_MEASURED and "leaks future tokens" in row["reason"]
    assert "would read: reproduced" in row["reason"]
    row = V.judge(TOLS, {**VALUE, "paper": 1.1}, ev_of(paths))
    assert row["verdict"] == V.NOT_MEASURED and "sdgm failed the causality audit" in row["reason"]


def test_engineering_value_from_a_benchmark_record_reads_its_reason(tmp_path):
    claim = {
        **VALUE,
        "kind": "engineering",
        "source": "throughput",
        "metric": "metrics.train_tokens_per_s",
        "paper": 1000.0,
    }
    ok = V.judge(TOLS, claim, V.Evidence(throughput=[throughput(tmp_path, "sdgm", "ptb", 0, 1020.0)]))
    assert ok["verdict"] == V.REPRODUCED and ok["ours_value"] == 1020.0
    oom = V.judge(TOLS, claim, V.Evidence(throughput=[throughput(tmp_path / "b", "sdgm", "ptb", 0, None)]))
    assert oom["verdict"] == V.NOT_MEASURED and "out of memory" in oom["reason"]


SLOPE = {
    "id": "s",
    "claim": "c",
    "where": "w",
    "kind": "slope",
    "corpus": "none",
    "source": "scaling",
    "metric": "time",
    "experiment": "sdgm",
    "than": ["attention"],
    "control": "linformer",
    "views": ["batch", "tokens"],
    "mode": "forward",
    "paper": 1.0,
    "better": "lower",
    "tolerance": "slope",
}
LENGTHS = [1024, 2048, 4096, 8192, 16384]


def scaling(tmp_path, views: dict, schema: int = 2, lengths=LENGTHS) -> Path:
    """A scaling record whose points follow time = L^slope (x 1 +- 1 %, so the fit has an interval) per view and
    layer: views = {view: {layer: slope}} (a layer's slope None: no point), fitted from L >= 1024."""
    results = [
        {
            "view": view,
            "model": m,
            "mode": "forward",
            "L": L,
            "status": "ok",
            "time_per_sequence_s": 1e-6 * L**s * (1.01 if i % 2 else 0.99),
        }
        for view, layers in views.items()
        for m, s in layers.items()
        if s is not None
        for i, L in enumerate(lengths)
    ]
    p = tmp_path / f"scaling{schema}.json"
    p.write_text(
        json.dumps(
            {
                "schema": schema,
                "kind": "scaling",
                "settings": {"slope_min_length": 1024},
                "results": results,
                "slopes": {},
            }
        )
    )
    return p


@pytest.mark.parametrize(
    "ours,attention,verdict", [(1.05, 1.9, V.REPRODUCED), (1.5, 1.9, V.NOT_REPRODUCED), (2.2, 1.9, V.CONTRADICTED)]
)
def test_slope_claim_in_the_views_that_judge(tmp_path, ours, attention, verdict):
    rec = scaling(tmp_path, {"batch": {"sdgm": ours, "attention": attention, "linformer": 1.0}})
    row = V.judge(TOLS, SLOPE, V.Evidence(scaling=rec))
    assert row["verdict"] == verdict and row["ours_value"] == pytest.approx(ours, abs=0.02)
    assert row["ours_ci_low"] < row["ours_value"] < row["ours_ci_high"]  # the fit's 95 % t interval, shown
    assert (
        row["reason"].startswith("one benchmark run, 95 % interval of the fit")
        and "(batch, sdgm, n = 5)" in row["reason"]
        and "tokens: no fit of sdgm" in row["reason"]
    )


def test_a_slope_view_judges_nothing_on_fewer_than_four_lengths_or_where_the_linear_control_is_not_linear(tmp_path):
    rec = scaling(
        tmp_path,
        {
            "batch": {"sdgm": 1.0, "attention": 1.9, "linformer": 1.31},
            "tokens": {"sdgm": 1.0, "attention": 1.9, "linformer": 1.0},
        },
        lengths=LENGTHS[:3],
    )
    row = V.judge(TOLS, SLOPE, V.Evidence(scaling=rec))
    assert row["verdict"] == V.NOT_MEASURED and row["reason"].startswith("no view judges")
    assert "batch: sdgm, attention, linformer on 3 lengths, fewer than 4" in row["reason"]
    rec = scaling(tmp_path, {"batch": {"sdgm": 1.0, "attention": 1.9, "linformer": 1.31}})
    row = V.judge(TOLS, SLOPE, V.Evidence(scaling=rec))
    assert row["verdict"] == V.NOT_MEASURED and "the linear control linformer reads 1.31" in row["reason"]


def test_slope_views_that_disagree_read_not_reproduced(tmp_path):
    rec = scaling(
        tmp_path,
        {
            "batch": {"sdgm": 1.0, "attention": 1.9, "linformer": 1.0},
            "tokens": {"sdgm": 1.5, "attention": 1.9, "linformer": 1.0},
        },
    )
    row = V.judge(TOLS, SLOPE, V.Evidence(scaling=rec))
    assert row["verdict"] == V.NOT_REPRODUCED and row["reason"].endswith("the views disagree")
    assert ": reproduced" in row["reason"] and ": not reproduced" in row["reason"]


def test_a_schema_1_record_judges_no_slope_and_a_missing_fit_is_not_measured(tmp_path):
    """A schema-1 record timed the superseded einsum decoder: whatever its slope, it is not the model's cost."""
    rec = scaling(tmp_path, {"batch": {"sdgm": 1.0, "attention": 1.9, "linformer": 1.0}}, 1)
    row = V.judge(TOLS, SLOPE, V.Evidence(scaling=rec))
    assert row["verdict"] == V.NOT_MEASURED and row["reason"] == SUPERSEDED_SCALING
    rec = scaling(tmp_path, {"batch": {"attention": 1.9}})
    row = V.judge(TOLS, SLOPE, V.Evidence(scaling=rec))
    assert row["verdict"] == V.NOT_MEASURED and row["reason"] == "no time slope of sdgm in the record"
    rec = scaling(tmp_path, {"batch": {"sdgm_chunked": 1.0, "attention": 2.0, "linformer": 1.0}})
    row = V.judge(TOLS, {**SLOPE, "layers": ["sdgm_triton", "sdgm_chunked"]}, V.Evidence(scaling=rec))
    assert row["verdict"] == V.REPRODUCED and "(batch, sdgm_chunked, n = 5)" in row["reason"]
    assert (
        V.judge(TOLS, SLOPE, V.Evidence(metrics=[metrics(tmp_path, "sdgm", "ptb", 0)]))["reason"]
        == f"{V.NOT_ON_DEVICE}: no scaling record in this folder"
    )


def gmm(tmp_path, corpus, converged: bool) -> Path:
    p = tmp_path / "runs" / corpus / "sdgm-s0-0123abcd" / "gmm.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(
        json.dumps(
            {
                "components": 4,
                "grid": [
                    {"components": 2, "converged": True},
                    {"components": 4, "converged": converged},
                    {"components": 8, "converged": True},
                ],
            }
        )
    )
    return p


@pytest.mark.parametrize("converged,verdict", [(True, V.REPRODUCED), (False, V.NOT_REPRODUCED)])
def test_procedure_claim_on_the_gmm(tmp_path, converged, verdict):
    claim = {
        "id": "g",
        "claim": "c",
        "where": "w",
        "kind": "procedure",
        "corpus": "all",
        "source": "gmm",
        "experiment": "sdgm",
    }
    row = V.judge(TOLS, claim, V.Evidence(gmm=[gmm(tmp_path, "ptb", converged)]))
    assert row["verdict"] == verdict and row["ours_value"] == 4.0 and "ptb/s0: 4" in row["reason"]
    assert V.judge(TOLS, claim, V.Evidence())["verdict"] == V.NOT_MEASURED


def test_unmeasured_claim_gives_its_reason():
    claim = {"id": "u", "claim": "c", "where": "w", "kind": "unmeasured", "corpus": "all", "reason": "no  metric"}
    row = V.judge(TOLS, claim, V.Evidence())
    assert row["verdict"] == V.NOT_MEASURED and row["reason"] == "no metric"


def test_claims_and_compact_csvs_hold_numbers_in_numeric_columns(tmp_path):
    paths = [
        metrics(
            tmp_path,
            "sdgm",
            "wikitext2",
            s,
            val_ppl=v,
            test_ppl=v,
            params=22_800_000,
            peak_mem_bytes=6_500_000_000,
            cosine_val=0.9,
        )
        for s, v in enumerate([31.0, 31.5])
    ]
    paths += [
        metrics(
            tmp_path,
            "transformer_xl",
            "wikitext2",
            s,
            val_ppl=40.0,
            val_ppl_mem=32.0,
            test_ppl=41.0,
            params=1_000_000,
            peak_mem_bytes=None,
            na={"peak_mem_bytes": "no GPU"},
        )
        for s in (0, 1)
    ]
    paths += [metrics(tmp_path, "linformer_noncausal", "ptb", 0, val_ppl=1.1, test_ppl=1.1, params=5, leaks=True)]
    written = C.build_claims(
        tmp_path / "tables", metrics=paths, throughput=[throughput(tmp_path, "sdgm", "wikitext2", 0, 2000.0)]
    )
    claims = pd.read_csv(written["claims_csv"])
    for col in V.NUMERIC_CLAIMS_COLUMNS:
        assert pd.api.types.is_numeric_dtype(claims[col]), col
    assert set(claims["verdict"]) <= set(VERDICTS) and claims["id"].is_unique
    assert claims.set_index("id").loc["wt2-val-ppl", "verdict"] == V.REPRODUCED  # 31.2 inside [28.1, 34.4]
    assert claims.set_index("id").loc["wt2-beats-txl", "verdict"] == V.REPRODUCED
    compact = pd.read_csv(written["compact_csv"])
    numeric = [c for c in compact.columns if c not in ("experiment", "model", "leaks") and not c.endswith("_na")]
    for col in numeric:
        assert pd.api.types.is_numeric_dtype(compact[col]), col
    row = compact.set_index("experiment").loc["transformer_xl"]
    assert math.isnan(row["peak_mem_gb"]) and row["peak_mem_gb_na"] == "no GPU"
    assert row["wikitext2_val_ppl_paper"] == 32.1 and row["wikitext2_val_ppl_std"] == 0.0
    md = written["compact_md"].read_text()
    assert "| SDGM | 22.80 ± 0.00 (22.8) | 31.2 ± 0.4 (31.2) |" in md
    assert "– [1]" in md and ". no GPU\n" in md and "Linformer package (non-causal) [" in md
    html = written["claims_html"].read_text()
    assert '<a href="../runs/wikitext2/sdgm-s0-0123abcd/metrics.json">' in html


def test_claims_file_errors_name_the_file_and_the_claim(tmp_path):
    bad = tmp_path / "claims.yaml"
    bad.write_text(yaml.safe_dump({**TOLS, "claims": [{**VALUE, "kind": "vibes"}]}))
    with pytest.raises(ReportError, match=r"claims.yaml: claim 0 \(v\): kind must be one of value, .*, got 'vibes'$"):
        V.load_claims(bad)
    bad.write_text(yaml.safe_dump({**TOLS, "claims": [{**VALUE, "tolerance": "nope"}]}))
    with pytest.raises(ReportError, match="tolerance 'nope' is not defined"):
        V.load_claims(bad)


DROP = "(drop this key)"


@pytest.mark.parametrize(
    "claim,change,message",
    [
        (0, {"kind": "vibes"}, "claim 0 (wt2-val-ppl): kind must be one of value, engineering, direction, slope, "),
        (0, {"tolerance": DROP}, "claim 0 (wt2-val-ppl): missing required key tolerance"),
        (
            0,
            {"paper": None},
            "claim 0 (wt2-val-ppl): paper must be a number (the claim is judged against it), got None",
        ),
        (0, {"tolerence": "perplexity"}, "claim 0 (wt2-val-ppl): unexpected key tolerence (not in the schema)"),
        (0, {"than": "gpt2"}, "claim 0 (wt2-val-ppl): than must be a non-empty list of experiments, got 'gpt2'"),
        (0, {"source": DROP}, "claim 0 (wt2-val-ppl): missing required key source"),
        ("fewer-params", {"paper_baselines": [41.2]}, "(fewer-params): paper_baselines must be [lowest, highest], two"),
        (
            "params",
            {"measures": [{"source": "nowhere", "metric": "params"}]},
            "(params): measures[0].source must be one of metrics, throughput, generation, scaling, gmm, quality, got",
        ),
        ("less-train-memory", {"protocol": ["compiled"]}, "(less-train-memory): protocol[0] must be one of device, "),
        ("ptb-generation-quality", {"sets": ["continuation"]}, "(ptb-generation-quality): sets[0] must be one of "),
        ("ptb-generation-quality", {"sets": DROP}, "(ptb-generation-quality): missing required key sets"),
        (1, {"id": "wt2-val-ppl"}, "claim 1 (wt2-val-ppl): duplicate id"),
        ("memory", {"judged_by": DROP}, "(memory): missing required key judged_by"),
    ],
)
def test_a_broken_claims_file_fails_in_one_line_naming_the_claim_and_the_field(tmp_path, claim, change, message):
    """The shipped claims file with one claim broken: the schema (or the checks it cannot express) refuses it."""
    data = yaml.safe_load(V.CLAIMS_PATH.read_text())
    i = claim if isinstance(claim, int) else next(j for j, c in enumerate(data["claims"]) if c["id"] == claim)
    data["claims"][i] = {k: v for k, v in {**data["claims"][i], **change}.items() if v != DROP}
    bad = tmp_path / "claims.yaml"
    bad.write_text(yaml.safe_dump(data))
    with pytest.raises(ReportError) as err:
        V.load_claims(bad)
    text = str(err.value)
    assert text.startswith(f"{bad}: claim {i} (") and message in text and "\n" not in text, text


def test_the_shipped_claims_file_follows_its_schema_and_the_schema_is_valid():
    import jsonschema

    from sdgm.common.schema import CLAIMS_SCHEMA_PATH

    jsonschema.Draft202012Validator.check_schema(json.loads(CLAIMS_SCHEMA_PATH.read_text()))
    assert len(V.load_claims()["claims"]) >= 26


PAPER_KEYS = {
    "val_ppl": "val_ppl",
    "params": "params_m",
    "cosine_val": "cosine",
    "peak_mem_bytes": "peak_mem_gb",
    "metrics.train_tokens_per_s": "train_tokens_per_s",
}


def test_every_paper_number_of_the_claims_file_agrees_with_paper_numbers():
    claims = V.load_claims()
    paper = {(r["experiment"], r["corpus"]): r for r in load_paper()}
    checked = 0
    for c in claims["claims"]:
        metric = c.get("metric") or (c.get("measures") or [{}])[0].get("metric")
        if c["kind"] in ("value", "engineering", "unstated_device") and metric in PAPER_KEYS:
            assert paper[(c["experiment"], c["corpus"])][PAPER_KEYS[metric]] == c["paper"], c["id"]
            checked += 1
    assert checked >= 9
    assert {c["kind"] for c in claims["claims"]} == set(V.CLAIM_KINDS)


def test_committed_claims_of_each_device_and_the_readme_section_are_what_the_code_renders(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    rec = C.find_records(Path("results/h100"))
    out = tmp_path / "tables"
    C.build_claims(out, **rec)
    for name in ("claims.csv", "compact.csv", "compact.md"):
        assert (out / name).read_text() == (REPO / "results/h100/tables" / name).read_text(), name
    rec = C.find_records(Path("results/cpu"))
    out = tmp_path / "cpu_tables"
    C.build_claims(out, **rec)
    assert (out / "claims.csv").read_text() == (REPO / "results/cpu/tables/claims.csv").read_text()
    devices = ["--records", "results/h100", "--records", "results/cpu", "--readings", "results/cpu/readings"]
    assert C.main([*devices, "--readme", "README.md", "--check"]) == 0
    text = (REPO / "README.md").read_text()
    assert len(text[text.index(C.BEGIN) : text.index(C.END) + len(C.END)].encode()) <= 6000  # the section stays short
    assert (
        C.main(
            [
                "--records",
                "results/h100",
                "--readings",
                "results/cpu/readings",
                "--readme",
                "results/h100/README.md",
                "--check",
            ]
        )
        == 0
    )
    C.build_claims(out, **rec, readings=Path("results/cpu/readings"))  # the explanation lines: from the readings
    why = "Which reading closes the gap"  # the links in the rest are relative to where the table is written
    assert (out / "claims.md").read_text().split(why)[1] == (REPO / "results/cpu/tables/claims.md").read_text().split(
        why
    )[1].replace("../readings", os.path.relpath(REPO / "results/cpu/readings", out))
    shutil.copy(REPO / "README.md", tmp_path / "README.md")
    stale = (tmp_path / "README.md").read_text().replace("**contradicted**", "**reproduced**", 1)
    (tmp_path / "README.md").write_text(stale)
    assert C.main([*devices, "--readme", str(tmp_path / "README.md"), "--check"]) == 1
    with pytest.raises(ReportError, match="needs exactly one"):
        C.replace_section("no markers", "x", Path("README.md"))


# ---- relative efficiency (factor), absolute numbers of an unstated device, measures, devices --------------------

FTOLS = {"tolerances": {"tenth": {"rel": 0.1, "why": "x"}}}
FACTOR = {
    "id": "f",
    "claim": "c",
    "where": "w",
    "kind": "factor",
    "corpus": "wikitext2",
    "source": "throughput",
    "metric": "metrics.train_tokens_per_s",
    "experiment": "sdgm",
    "than": ["a", "b"],
    "better": "lower",
    "paper": 10.0,
    "paper_baselines": [20.0, 40.0],
    "tolerance": "tenth",
}  # paper: x2.0 to x4.0 fewer


def factor_ev(tmp_path, sdgm, a, b):
    return V.Evidence(
        throughput=[
            throughput(tmp_path, e, "wikitext2", 0, v) for e, v in (("sdgm", sdgm), ("a", a), ("b", b)) if v is not None
        ]
    )


@pytest.mark.parametrize(
    "a,b,verdict,words",
    [
        (30.0, 45.0, V.REPRODUCED, "inside the paper's range"),  # closest a: x3.0
        (50.0, 60.0, V.REPRODUCED, "beyond the paper's range"),  # x5.0 > x4.0
        (19.0, 60.0, V.REPRODUCED, "within the tolerance of the paper's smallest factor"),  # x1.9 >= 2.0 / 1.1
        (15.0, 60.0, V.NOT_REPRODUCED, "by less than the paper's factor"),  # x1.5
        (10.5, 60.0, V.NOT_REPRODUCED, "no difference established"),  # x1.05 < 1.1
        (8.0, 60.0, V.CONTRADICTED, "the other way: a is better by x1.25"),  # x0.8 < 1 / 1.1
    ],
)
def test_factor_claim_is_judged_on_the_closest_baseline_against_the_papers_smallest_factor(
    tmp_path, a, b, verdict, words
):
    row = V.judge(FTOLS, FACTOR, factor_ev(tmp_path, 10.0, a, b))
    assert row["verdict"] == verdict and words in row["reason"], row["reason"]
    assert row["compared_with"] == "a" and row["ours_value"] == pytest.approx(a / 10.0)
    assert row["paper_value"] == pytest.approx(2.0) and row["paper_text"].startswith("x2.00-4.00")
    assert row["tolerance"] == pytest.approx(0.1) and "x1.82" in row["reason"]  # 2.0 / 1.1


def test_factor_claim_where_higher_is_better_divides_the_other_way(tmp_path):
    claim = {**FACTOR, "better": "higher", "paper": 2100.0, "paper_baselines": [1200.0, 1800.0]}  # x1.17 to x1.75
    row = V.judge(FTOLS, claim, factor_ev(tmp_path, 3000.0, 2000.0, 1000.0))
    assert row["compared_with"] == "a" and row["ours_value"] == pytest.approx(1.5)
    assert row["verdict"] == V.REPRODUCED and row["paper_value"] == pytest.approx(2100 / 1800)
    row = V.judge(FTOLS, claim, factor_ev(tmp_path / "2", 1000.0, 2000.0, 1000.0))
    assert row["verdict"] == V.CONTRADICTED and row["ours_value"] == pytest.approx(0.5)


def test_factor_claim_without_a_value_or_with_a_zero_is_not_measured(tmp_path):
    row = V.judge(FTOLS, FACTOR, factor_ev(tmp_path, 10.0, 30.0, None))
    assert row["verdict"] == V.NOT_MEASURED and row["reason"].startswith("no value for b")
    assert row["paper_text"] == "x2.00-4.00" and math.isnan(row["ours_value"])  # the paper's range all the same
    row = V.judge(FTOLS, FACTOR, factor_ev(tmp_path / "2", 0.0, 30.0, 40.0))
    assert row["verdict"] == V.NOT_MEASURED and row["reason"].startswith("a value <= 0")


UNSTATED_DEVICE = {
    "id": "u",
    "claim": "c",
    "where": "w",
    "kind": "unstated_device",
    "corpus": "wikitext2",
    "source": "metrics",
    "metric": "peak_mem_bytes",
    "scale": 1e-9,
    "unit": "GB",
    "experiment": "sdgm",
    "paper": 6.5,
    "reading": "r",
    "judged_by": "claim f",
}


def test_an_absolute_number_of_an_unstated_device_is_not_comparable_and_names_our_device(tmp_path):
    row = V.judge(FTOLS, UNSTATED_DEVICE, ev_of([metrics(tmp_path, "sdgm", "wikitext2", 0, peak_mem_bytes=2 * 10**9)]))
    assert row["verdict"] == V.NOT_COMPARABLE and row["ours_value"] == pytest.approx(2.0)
    assert "ours is of cpu;" in row["reason"] and row["reason"].endswith("claim f")
    row = V.judge(FTOLS, UNSTATED_DEVICE, ev_of([metrics(tmp_path / "2", "a", "wikitext2", 0, peak_mem_bytes=10**9)]))
    assert row["verdict"] == V.NOT_MEASURED and "no metrics record of sdgm" in row["reason"]


def test_measures_take_the_first_under_which_every_model_has_a_value(tmp_path):
    claim = {k: v for k, v in FACTOR.items() if k not in ("source", "metric")}
    claim["measures"] = [
        {"source": "metrics", "metric": "params"},
        {"source": "throughput", "metric": "metrics.train_tokens_per_s"},
    ]
    tp = [throughput(tmp_path, e, "wikitext2", 0, v) for e, v in (("sdgm", 10.0), ("a", 30.0), ("b", 40.0))]
    both = V.Evidence(
        metrics=[metrics(tmp_path, e, "wikitext2", 0, params=v) for e, v in (("sdgm", 10), ("a", 15), ("b", 40))],
        throughput=tp,
    )
    row = V.judge(FTOLS, claim, both)  # metrics complete: first measure
    assert row["ours_value"] == pytest.approx(1.5) and row["reason"].startswith("measure: metrics params; ")
    partial = V.Evidence(metrics=[metrics(tmp_path / "p", "sdgm", "wikitext2", 0, params=10)], throughput=tp)
    row = V.judge(FTOLS, claim, partial)  # metrics lacks a and b: the throughput records decide
    assert row["ours_value"] == pytest.approx(3.0) and row["metric"] == "metrics.train_tokens_per_s"
    assert row["reason"].startswith("measure: throughput metrics.train_tokens_per_s; ")
    neither = V.Evidence(
        metrics=[
            metrics(tmp_path / "n", "sdgm", "wikitext2", 0, params=10),
            metrics(tmp_path / "n", "a", "wikitext2", 0, params=30),
        ]
    )
    row = V.judge(FTOLS, claim, neither)  # none complete: the one with the most values gives the reason
    assert row["verdict"] == V.NOT_MEASURED and "no value for b" in row["reason"]


def test_a_claim_without_any_record_of_its_source_in_the_folder_is_not_measured_on_this_device(tmp_path):
    tp = [throughput(tmp_path, "sdgm", "wikitext2", 0, 10.0)]
    row = V.judge(TOLS, {**VALUE, "corpus": "wikitext2"}, V.Evidence(throughput=tp))
    assert row["verdict"] == V.NOT_MEASURED and row["reason"] == f"{V.NOT_ON_DEVICE}: no metrics record in this folder"
    assert V.judge(TOLS, SLOPE, V.Evidence())["reason"] == f"{V.NOT_ON_DEVICE}: no scaling record in this folder"


@pytest.mark.parametrize(
    "change,message",
    [
        ({"paper_baselines": [20.0]}, "paper_baselines must be"),
        ({"tolerance": "abs01"}, "needs a relative tolerance"),
        ({"measures": [{"source": "nowhere", "metric": "x"}]}, "measures[0].source must be one of"),
        ({"source": None, "metric": None}, "missing required key source"),
    ],
)
def test_factor_claim_file_errors(tmp_path, change, message):
    bad = tmp_path / "claims.yaml"
    claim = {k: v for k, v in {**FACTOR, "tolerance": "ppl", **change}.items() if v is not None}
    bad.write_text(yaml.safe_dump({**TOLS, "claims": [claim]}))
    with pytest.raises(ReportError, match=re.escape(message)):
        V.load_claims(bad)


def test_factor_claims_agree_with_the_papers_baseline_ranges():
    ranges = yaml.safe_load((REPO / "sdgm" / "reporting" / "paper_numbers.yaml").read_text())["baseline_ranges"]
    keys = {"params_m": "fewer-params", "peak_mem_gb": "less-train-memory", "train_tokens_per_s": "faster-training"}
    claims = {c["id"]: c for c in V.load_claims()["claims"]}
    sdgm = next(r for r in load_paper() if r["experiment"] == "sdgm" and r["corpus"] == "wikitext2")
    for key, cid in keys.items():
        assert claims[cid]["paper_baselines"] == ranges[key] and claims[cid]["paper"] == sdgm[key], cid


def test_readme_section_has_one_column_per_device_never_averaged(tmp_path):
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    for name, value in (("gpu", 30.0), ("cpu", 12.0)):
        root = tmp_path / name
        paths = [
            metrics(root, e, "wikitext2", 0, params=int(v * 1e6), val_ppl=31.2, commit=commit)
            for e, v in (("sdgm", 10.0), ("gpt2", value), ("linformer", 40.0), ("transformer_xl", 50.0))
        ]
        C.build_claims(root / "tables", metrics=paths)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{C.BEGIN}\nold\n{C.END}\nrest\n")
    assert (
        C.main(["--records", str(tmp_path / "gpu"), "--records", str(tmp_path / "cpu"), "--readme", str(readme)]) == 0
    )
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "\nold\n" not in text
    head = next(line for line in text.splitlines() if line.startswith("| claim |"))
    assert head == "| claim | paper | gpu | cpu |"
    row = next(line for line in text.splitlines() if line.startswith("| SDGM has fewer parameters"))
    assert row.endswith(
        " | x3 (10.00 vs 30.00 M, gpt2) **reproduced** | x1.2 (10.00 vs 12.00 M, gpt2) **not reproduced** |"
    )
    speed = next(line for line in text.splitlines() if line.startswith("| SDGM processes 2,100"))
    assert speed.endswith(" | **not measured** | **not measured** |")  # the reason: in each folder's claims.md
    assert f"{V.NOT_ON_DEVICE}: no throughput record" in (tmp_path / "gpu" / "tables" / "claims.md").read_text()
    assert f"@{commit[:7]}" not in text and "[gpu/tables/claims.md](gpu/tables/claims.md)" in text
    assert "[gpu/tables/compact.md](gpu/tables/compact.md)" in text and "| model |" not in text  # linked, not repeated
    assert "- gpu: 4 runs, seed(s) 0, on cpu" in text and "- cpu: " in text
