"""Generation quality: the Kneser-Ney reference model against NLTK's, the statistics on text whose values are known
(a repeated sentence, one word, held-out text, the same text shuffled), every branch of the "competitive" rule on
synthetic records, and the table and figure from records."""

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from sdgm.reporting import claim_rules as V
from sdgm.reporting import sample_scores as G
from sdgm.reporting.competitive_rule import MIN_SEQUENCES
from sdgm.reporting.quality_report import build_quality_report

REPO = Path(__file__).resolve().parents[1]
PTB = REPO / "sdgm" / "data" / "corpora" / "ptb"


@pytest.fixture(scope="module")
def ptb():
    """The Penn Treebank reference model (training split) and 32 held-out sequences of 128 tokens (validation)."""
    lm = G.KneserNey(G.read_tokens(PTB / "train.txt.xz"))
    return lm, G.heldout_sequences(G.read_tokens(PTB / "valid.txt.xz"), [128] * 32)


def test_eos_is_the_tokenizers():
    from sdgm.data.tokens import EOS

    assert G.EOS == EOS


def test_kneser_ney_is_nltks_formula_token_by_token():
    from nltk.lm import KneserNeyInterpolated
    from nltk.util import everygrams

    tokens = G.read_tokens(PTB / "train.txt.xz")
    start = tokens.index(G.EOS)  # the stream starts with a word that recurs (NLTK divides by zero otherwise)
    train = tokens[start : start + 4000]
    ref = KneserNeyInterpolated(3, discount=0.75)
    ref.fit([list(everygrams(train, max_len=3))], vocabulary_text=train)
    ours = G.KneserNey(train)
    query = G.read_tokens(PTB / "valid.txt.xz")[:150] + train[100:150]  # unseen contexts and words, and seen ones
    u, v, w = (ours.ids(query[i : len(query) - 2 + i]) for i in range(3))
    p = ours.prob(u, v, w)
    expected = [ref.score(query[j + 2], query[j : j + 2]) for j in range(len(query) - 2)]
    assert p == pytest.approx(expected, rel=1e-9, abs=1e-15)
    assert (p == 0).sum() > 0 and (p > 0).sum() > 100  # both unknown words and scored ones were compared
    p1 = ours.prob(np.full(len(w), -1), v, w)  # a one-word context
    assert p1 == pytest.approx(
        [ref.score(query[j + 2], query[j + 1 : j + 2]) for j in range(len(query) - 2)], rel=1e-9, abs=1e-15
    )


def test_heldout_text_itself_and_shuffled(ptb):
    lm, held = ptb
    real = G.score_sequences(lm, held)["stats"]
    assert 100 < real["reference_ppl"]["value"] < 400  # a trigram model of 930 k tokens on Penn Treebank
    lo, hi = real["reference_ppl"]["low"], real["reference_ppl"]["high"]
    assert lo < real["reference_ppl"]["value"] < hi
    assert real["seq_rep_4"]["value"] < 0.05 and real["distinct_3"]["value"] > 0.95
    assert 0.6 < real["zipf"]["low"] < real["zipf"]["value"] < real["zipf"]["high"] < 1.2
    rng = random.Random(0)
    shuffled = G.score_sequences(lm, [(c, rng.sample(t, len(t))) for c, t in held])["stats"]
    # the same words in each sequence and the same pooled counts: distinct-1 and Zipf do not move
    assert shuffled["distinct_1"]["value"] == pytest.approx(real["distinct_1"]["value"])
    assert shuffled["zipf"]["value"] == pytest.approx(real["zipf"]["value"])
    # word order gone: the reference model sees it, and so do the higher n-grams
    assert shuffled["reference_ppl"]["low"] > 3 * real["reference_ppl"]["high"]
    assert shuffled["distinct_2"]["value"] > real["distinct_2"]["value"] - 0.02


def test_a_repeated_sentence(ptb):
    lm, _ = ptb
    sentence = "the company said it expects to report a loss <eos>".split()  # 10 distinct words
    seq = (sentence * 13)[:128]
    stats = G.score_sequences(lm, [([G.EOS], seq)] * 32)["stats"]
    assert stats["distinct_1"]["value"] == pytest.approx(10 / 128)
    assert stats["distinct_2"]["value"] == pytest.approx(10 / 127)
    assert stats["seq_rep_4"]["value"] == pytest.approx(1 - 10 / 125)
    assert stats["self_bleu"]["value"] == pytest.approx(100.0)
    assert stats["distinct_1"]["low"] == stats["distinct_1"]["high"] == stats["distinct_1"]["value"]
    assert stats["reference_ppl"]["value"] < 50  # repetitive text reads as likely: why the rule uses a distance


def test_a_corpus_of_one_word(ptb):
    lm, _ = ptb
    stats = G.score_sequences(lm, [([G.EOS], ["the"] * 128)] * 4)["stats"]
    assert stats["distinct_1"]["value"] == pytest.approx(1 / 128)
    assert stats["distinct_3"]["value"] == pytest.approx(1 / 126)
    assert stats["seq_rep_4"]["value"] == pytest.approx(1 - 1 / 125)
    assert stats["zipf"] == {"value": None, "low": None, "high": None, "na": "one word type: no rank-frequency slope"}
    one = G.score_sequences(lm, [([G.EOS], ["the", "company"])])
    assert one["stats"]["self_bleu"]["na"] == "one sequence: no other to compare with"
    assert one["stats"]["reference_ppl"]["na"] == "one sequence: no interval"
    assert one["stats"]["seq_rep_4"]["na"] == "every sequence is shorter than 4 tokens"
    oov = G.score_sequences(lm, [([G.EOS], ["qwertyuiop", "the"])] * 2)
    assert oov["oov"] == 2 and oov["stats"]["reference_ppl"]["value"] is not None
    # two sequences of one word each, different words: a slope, but none without either sequence; no NaN bounds
    # (the store refuses a record holding a NaN)
    two = G.score_sequences(lm, [([G.EOS], ["the"] * 4), ([G.EOS], ["company"] * 2)])["stats"]["zipf"]
    assert two["value"] is not None and two["low"] is None and two["high"] is None and "no interval" in two["na"]


def test_free_samples_are_read_with_their_prompt_as_context():
    sets = G.free_sequences(REPO / "results/h100/samples/ptb/sdgm-s0.txt")
    assert set(sets) == {"free", "free_gmm"} and len(sets["free"]) == 3
    assert all(c == ["the"] and len(t) == 100 for c, t in sets["free"])


# ---- the rule ----------------------------------------------------------------------------------------------------

CLAIM = {
    "id": "q",
    "claim": "c",
    "where": "w",
    "kind": "competitive",
    "corpus": "ptb",
    "source": "quality",
    "metric": "reference_ppl",
    "sets": ["continuations", "free"],
    "experiment": "sdgm",
    "than": ["gpt2", "linformer"],
    "tolerance": "gen",
}
TOLS = {"tolerances": {"gen": {"rel": 0.10, "why": "x"}}}
NOISE = np.random.default_rng(1).normal(0.0, 1.0, 32)


def entry(ln_ppl: np.ndarray, tokens: int = 100) -> dict:
    return {"n": len(ln_ppl), "per_sequence": {"nll": list(ln_ppl * tokens), "scored": [tokens] * len(ln_ppl)}}


SAMPLING = {
    "split": "valid",
    "prompts": 32,
    "prompt_tokens": 32,
    "new_tokens": 128,
    "temperature": 1.0,
    "top_k": 0,
    "seed": 0,
}


def quality(
    root: Path,
    exp: str,
    offset: float,
    noise: float = 0.02,
    n: int = 32,
    seed: int = 0,
    sets=("continuations",),
    sampling: dict | None = None,
) -> Path:
    """A quality record whose sets' ln-perplexity per sequence is the real text's (5 + noise) plus `offset`."""
    real = 5.0 + 0.3 * NOISE[:n]
    body = {}
    for name in sets:
        e = entry(real + offset + noise * NOISE[::-1][:n])
        e["yardsticks"] = {"heldout": entry(real[::-1])}
        if name == "continuations":
            e["yardsticks"]["true_continuations"] = entry(real)
        body[name] = e
    return write_quality(root, exp, seed, body, sampling={**SAMPLING, "prompts": n, **(sampling or {})})


def write_quality(root: Path, exp: str, seed: int, sets: dict, **fields) -> Path:
    """root/quality/ptb/<exp>-s<seed>.json: a quality record of PTB with these sets and other `fields`."""
    p = root / "quality" / "ptb" / f"{exp}-s{seed}.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(
        json.dumps({"kind": "quality", "corpus": "ptb", "experiment": exp, "seed": seed, **fields, "sets": sets})
    )
    return p


def judge(paths):
    return V.judge(TOLS, CLAIM, V.Evidence(quality=paths))


@pytest.mark.parametrize(
    "sdgm,verdict",
    [(0.0, V.REPRODUCED), (0.5, V.CONTRADICTED), (-0.5, V.CONTRADICTED), (0.3 + math.log(1.1), V.NOT_REPRODUCED)],
)
def test_competitive_rule_on_the_paired_interval(tmp_path, sdgm, verdict):
    noise = 0.5 if verdict == V.NOT_REPRODUCED else 0.02  # a wide interval around the tolerance
    paths = [
        quality(tmp_path, "sdgm", sdgm, noise),
        quality(tmp_path, "gpt2", 0.3),
        quality(tmp_path, "linformer", 0.9),
    ]
    row = judge(paths)
    assert row["verdict"] == verdict, row["reason"]
    assert row["compared_with"] == "gpt2" and row["n"] == 32
    assert row["ours_ci_low"] <= row["ours_value"] <= row["ours_ci_high"]
    assert row["tolerance"] == pytest.approx(math.log(1.1))


def test_the_best_baseline_is_the_closest_to_real_text_not_the_lowest(tmp_path):
    # linformer's samples score a lower perplexity than real text (repetitive), gpt2's a higher one but closer
    paths = [quality(tmp_path, "sdgm", 0.25), quality(tmp_path, "gpt2", 0.2), quality(tmp_path, "linformer", -1.0)]
    row = judge(paths)
    assert row["compared_with"] == "gpt2" and row["verdict"] == V.REPRODUCED and "true continuations" in row["reason"]


def test_free_samples_are_judged_against_heldout_text_when_a_record_has_no_continuations(tmp_path):
    paths = [
        quality(tmp_path, "sdgm", 0.0, sets=("continuations", "free")),
        quality(tmp_path, "gpt2", 0.0, sets=("free",)),
        quality(tmp_path, "linformer", 0.0, sets=("free",)),
    ]
    row = judge(paths)
    assert row["reason"].startswith("free,") and "held-out text" in row["reason"]


@pytest.mark.parametrize(
    "case,reason",
    [
        ("absent", "no quality record of linformer on ptb"),
        ("seeds", "no seed that every compared model has"),
        ("sets", "no set of samples among continuations, free"),
        ("sizes", "the sets differ in size"),
        ("one", "one sequence: no interval"),
    ],
)
def test_competitive_rule_is_not_measured_without_a_comparison(tmp_path, case, reason):
    paths = [
        quality(
            tmp_path,
            "sdgm",
            0.0,
            n=1 if case == "one" else 32,
            sets=("gmm_continuations",) if case == "sets" else ("continuations",),
        ),
        quality(
            tmp_path,
            "gpt2",
            0.0,
            n=1 if case == "one" else 16 if case == "sizes" else 32,
            seed=1 if case == "seeds" else 0,
        ),
    ]
    if case != "absent":
        paths.append(quality(tmp_path, "linformer", 0.0, n=1 if case == "one" else 32))
    row = judge(paths)
    assert row["verdict"] == V.NOT_MEASURED and reason in row["reason"], row["reason"]


# ---- the table and figure ----------------------------------------------------------------------------------------


def test_table_and_figure_from_scored_records(tmp_path, ptb):
    lm, held = ptb
    recs = []
    for exp, seqs in (("sdgm", [([G.EOS], ["the"] * 20)] * 4), ("gpt2", [(c, t[:20]) for c, t in held[:4]])):
        e = G.score_sequences(lm, seqs)
        e["yardsticks"] = {
            "heldout": G.score_sequences(lm, held[4:8]),
            "true_continuations": G.score_sequences(lm, held[8:12]),
        }
        recs.append(write_quality(tmp_path, exp, 0, {"continuations": e}, device="cpu"))
    out = build_quality_report(recs, tmp_path / "tables", tmp_path / "figures")
    md = (tmp_path / "tables" / "generation_quality.md").read_text()
    assert "true continuations" in md and "held-out text" in md and "n/a (one word type" in md
    csv = (tmp_path / "tables" / "generation_quality.csv").read_text().splitlines()
    assert len(csv) == 1 + 2 + 2 and csv[0].startswith("corpus,experiment,seed,set")
    assert all(Path(p).stat().st_size > 0 for p in out["figure"])


def test_committed_h100_generation_quality_table_is_what_the_records_render(tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    records = sorted(Path("results/h100/quality").glob("*/*.json"))
    assert len(records) == 15
    build_quality_report(records, tmp_path, tmp_path)
    for name in ("generation_quality.csv", "generation_quality.md"):
        assert (tmp_path / name).read_text() == (REPO / "results/h100/tables" / name).read_text(), name


@pytest.mark.parametrize("sdgm", [0.0, 0.9])  # intervals below and above the tolerance
def test_three_paired_samples_never_read_reproduced_or_contradicted(tmp_path, sdgm):
    paths = [
        quality(tmp_path, "sdgm", sdgm, 0.05, n=3),
        quality(tmp_path, "gpt2", 0.3, n=3),
        quality(tmp_path, "linformer", 0.9, n=3),
    ]
    row = judge(paths)
    assert row["verdict"] == V.NOT_REPRODUCED and row["n"] == 3
    assert "t interval on the per-sequence paired differences" in row["reason"]
    assert row["reason"].endswith("fewer than 20 sequences, no verdict either way")
    # the interval is Student's t on the three paired differences of |ln(P / P_real)|
    pair = np.abs(sdgm + 0.05 * NOISE[::-1][:3]) - np.abs(0.3 + 0.02 * NOISE[::-1][:3])
    lo, hi = stats.t.interval(0.95, 2, loc=pair.mean(), scale=stats.sem(pair))
    assert (row["ours_ci_low"], row["ours_ci_high"]) == (pytest.approx(lo), pytest.approx(hi))


def test_the_reading_says_what_ran_continuations_with_their_prompts_and_n(tmp_path):
    paths = [quality(tmp_path, e, 0.0, sampling={"top_k": 40}) for e in ("sdgm", "gpt2", "linformer")]
    row = judge(paths)
    assert row["reading"] == (
        "what ran: the reference perplexity (Kneser-Ney trigram of the training split) of 32 "
        "continuations per model of validation prompts (32 prompt tokens, 128 new tokens, "
        "temperature 1.0, top-k 40, seed 0) against the true continuations"
    )
    assert row["shown"].endswith("vs gpt2, n = 32 continuations")


def test_three_free_samples_are_read_as_three_free_samples(tmp_path):
    paths = [quality(tmp_path, e, 0.0, n=3, sets=("free",)) for e in ("sdgm", "gpt2", "linformer")]
    row = judge(paths)
    assert row["reading"].startswith(
        "what ran: the reference perplexity (Kneser-Ney trigram of the training split) "
        "of 3 free samples per model against held-out text"
    )
    assert row["reading"].endswith("no continuations of validation prompts") and "prompt tokens" not in row["reading"]
    assert row["shown"].endswith("n = 3 free samples") and row["verdict"] == V.NOT_REPRODUCED


@pytest.mark.parametrize("field,value", [("prompt_tokens", 16), ("starts", [0, 5])])
def test_continuations_of_other_prompts_are_not_compared(tmp_path, field, value):
    paths = [
        quality(tmp_path, "sdgm", 0.0, sampling={field: value}),
        quality(tmp_path, "gpt2", 0.3),
        quality(tmp_path, "linformer", 0.9),
    ]
    row = judge(paths)
    assert row["verdict"] == V.NOT_MEASURED
    assert row["reason"].startswith(f"the continuations were not of the same prompts: {field} differ"), row["reason"]


def test_the_paper_config_continues_at_least_100_validation_prompts_and_quick_fewer():
    """The paper configuration (every campaign and GPU window runs it) continues >= 100 prompts of each corpus's
    validation split; the quick DAG only enough to exercise the path, and fewer tokens."""
    import yaml

    from sdgm.harness.generate import prompt_starts

    paper = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["sampling"]["continuations"]
    quick = yaml.safe_load((REPO / "config" / "quick.yaml").read_text())["sampling"]["continuations"]
    assert paper["prompts"] >= 100 and 2 <= quick["prompts"] < MIN_SEQUENCES
    assert quick["prompt_tokens"] < paper["prompt_tokens"] and quick["new_tokens"] < paper["new_tokens"]
    for corpus in ("ptb", "wikitext2"):
        n = len(G.read_tokens(REPO / "sdgm" / "data" / "corpora" / corpus / "valid.txt.xz"))
        starts = prompt_starts(n, **paper)
        assert (
            len(set(starts)) == paper["prompts"]
            and min(np.diff(starts)) >= paper["prompt_tokens"] + paper["new_tokens"]
        ), corpus  # distinct windows, none overlapping the next


def test_continuations_are_written_scored_and_judged_with_what_ran(tmp_path, toy_tokens):
    """Real components end to end: fresh models continue 20 validation prompts (rule sample's writer), the scorer
    makes their quality records (rule score_samples), and the claim is judged from them by the paired bootstrap,
    its reading naming what ran."""
    import torch
    from helpers import SMALL

    from sdgm.data.tokens import load_tokens
    from sdgm.harness.generate import write_continuations, write_samples
    from sdgm.models.registry import build_model, save_run

    _, vocab = load_tokens(toy_tokens)
    corpus = toy_tokens.parent  # the toy corpus's {train,valid,test}.txt
    records = []
    for exp in ("sdgm", "gpt2", "linformer"):
        torch.manual_seed(0)
        run = tmp_path / "runs" / "ptb" / f"{exp}-s0"
        save_run(run, exp, build_model(exp, len(vocab), **SMALL[exp]), vocab)
        metrics = {
            "schema": 1,
            "experiment": exp,
            "model": exp,
            "corpus": "ptb",
            "seed": 0,
            "metrics": {},
            "provenance": {"git_commit": None, "device": "cpu"},
        }
        (run / "metrics.json").write_text(json.dumps(metrics))
        write_samples(run, None, run / "samples.txt", prompt="w1", n_samples=3, n_tokens=8)
        write_continuations(
            run, None, toy_tokens, run / "continuations.json", prompts=20, prompt_tokens=4, new_tokens=8
        )
        out = tmp_path / "quality" / "ptb" / f"{exp}-s0.json"
        G.score_run(
            run / "samples.txt",
            run / "continuations.json",
            corpus / "train.txt",
            corpus / "test.txt",
            run / "metrics.json",
            out,
        )
        records.append(out)
    row = judge(records)
    assert row["n"] == 20 and "paired bootstrap interval" in row["reason"], row["reason"]
    assert row["verdict"] in (V.REPRODUCED, V.NOT_REPRODUCED, V.CONTRADICTED)
    assert row["reading"] == (
        "what ran: the reference perplexity (Kneser-Ney trigram of the training split) of 20 "
        "continuations per model of validation prompts (4 prompt tokens, 8 new tokens, "
        "temperature 1.0, top-k off, seed 0) against the true continuations"
    )
