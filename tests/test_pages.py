"""The collected samples page, the HTML tables and results/README.md, from real sample files and metrics records."""

import json

import pytest
import torch
from helpers import metrics_record

from sdgm.harness.generate import write_samples
from sdgm.models.registry import build_model, save_run
from sdgm.reporting import pages
from sdgm.spectral.gmm import collect_mixing_vectors, fit_gmm, save_gmm

V, L = 30, 16
VOCAB = ["<eos>", "<unk>"] + [f"w{i}" for i in range(V - 2)]


def _run(root, corpus, experiment, seed, *, gmm=False, leaks=False):
    """A real (untrained) SDGM run with its sample file and metrics.json; a leaking one uses centered padding."""
    torch.manual_seed(seed)
    model = build_model("sdgm", V, d_model=8, n_atoms=4, seq_len=L, encoder_padding="centered" if leaks else "causal")
    run_dir = root / "runs" / corpus / f"{experiment}-s{seed}"
    save_run(run_dir, "sdgm", model, VOCAB)
    gmm_path = None
    if gmm:
        vecs = collect_mixing_vectors(model, torch.randint(0, V, (400,)), L, 200)
        params, _ = fit_gmm(vecs, [1, 2])
        gmm_path = run_dir / "gmm.npz"
        save_gmm(gmm_path, params)
    sample = root / "samples" / corpus / f"{experiment}-s{seed}.txt"
    sample.parent.mkdir(parents=True, exist_ok=True)
    write_samples(run_dir, gmm_path, sample, prompt="w1", n_samples=3, n_tokens=12, seed=seed)
    metrics = run_dir / "metrics.json"
    metrics.write_text(
        json.dumps(
            metrics_record(
                experiment,
                corpus,
                seed,
                123.4,
                model="sdgm",
                causal_change=1.0 if leaks else 0.0,
                timestamp=f"2026-01-0{seed + 1}T00:00:00Z",
            )
        )
    )
    return sample, metrics


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("res")
    made = [
        _run(root, "ptb", "leaky", 0, leaks=True),
        _run(root, "ptb", "sdgm", 1, gmm=True),
        _run(root, "ptb", "sdgm", 0, gmm=True),
        _run(root, "wikitext2", "sdgm", 0),
    ]
    return root, [s for s, _ in made], [m for _, m in made]


def test_sample_files_parse_back(runs):
    root, samples, _ = runs
    parsed = pages.parse_samples(samples[1])
    assert parsed["settings"] == "prompt 'w1', temperature 1.0, top_k off, seed 1"
    assert list(parsed["samples"]) == ["autoregressive", "gmm-coefficients"]
    for texts in parsed["samples"].values():
        assert len(texts) == 3 and all(t.startswith("w1") and not t.startswith("##") for t in texts)
    assert list(pages.parse_samples(samples[0])["samples"]) == ["autoregressive"]
    (root / "bad.txt").write_text("hello\n")
    with pytest.raises(ValueError, match="not a sample file"):
        pages.parse_samples(root / "bad.txt")


def test_samples_page_labels_every_model(runs):
    root, samples, metrics = runs
    md_path, html_path = root / "tables" / "samples.md", root / "tables" / "samples.html"
    pages.write_samples_pages(samples, metrics, md_path, html_path, n_tokens=12)
    md = md_path.read_text()
    entries = pages.sample_entries(samples, metrics)
    # one entry per corpus and experiment, from the lowest seed, experiments in the order the files were given
    assert [(e["corpus"], e["experiment"], e["seed"]) for e in entries] == [
        ("ptb", "leaky", 0),
        ("ptb", "sdgm", 0),
        ("wikitext2", "sdgm", 0),
    ]
    assert entries[1]["seeds"] == [0, 1]
    assert "### sdgm: model sdgm, corpus ptb, seed 0, validation perplexity 123.4" in md
    assert "### leaky (non-causal): model sdgm, corpus ptb, seed 0" in md and pages.LEAK_NOTE in md
    assert "12 new tokens each" in md and "prompt 'w1', temperature 1.0, top_k off, seed 0" in md
    assert "[`sdgm-s0.txt`](../samples/ptb/sdgm-s0.txt)" in md  # relative to the page
    sdgm = md[md.index("### sdgm: model sdgm, corpus ptb") : md.index("## wikitext2")]
    assert sdgm.count("autoregressive (tokens") == pages.SAMPLES_SHOWN
    assert sdgm.count("GMM-sampled coefficients") == pages.SAMPLES_SHOWN
    assert "GMM-sampled" not in md[md.index("## wikitext2") :]  # no GMM, no GMM samples
    html = html_path.read_text()
    assert "<h2>ptb</h2>" in html and "(non-causal)" in html
    assert "<unk>" not in html and "<eos>" not in html  # tokens are escaped, never taken for tags


def test_table_html_keeps_cells_as_written(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("experiment,val_ppl\nsdgm <x>,n/a (not measured)\nlstm,007.50\n")
    pages.table_html(csv, tmp_path / "t.html", "Table: t")
    html = (tmp_path / "t.html").read_text()
    assert "<h1>Table: t</h1>" in html and "sdgm &lt;x&gt;" in html
    assert "n/a (not measured)" in html and "007.50" in html


def test_results_readme_links_and_embeds(runs):
    root, _, metrics = runs
    tables, figs = root / "tables", root / "figures"
    tables.mkdir(exist_ok=True)
    figs.mkdir(exist_ok=True)
    (tables / "main.md").write_text("| experiment | val_ppl |\n|---|---|\n| sdgm | 123.4 |\n")
    (tables / "ablation.md").write_text("| x |\n|---|\n| 1 |\n")
    (figs / "training_curves.png").write_bytes(b"png")
    run_pngs = [figs / "ptb" / "sdgm-s0" / f"{n}.png" for n in ("atoms", "gmm_bic")]
    text = pages.results_readme(
        root / "README.md",
        tables / "main.md",
        [tables / "main.md", tables / "ablation.md"],
        [figs / "training_curves.png"],
        [("ptb", "sdgm-s0", run_pngs)],
        metrics,
        [root / "runs" / "ptb" / "sdgm-s0" / "gmm.npz"],
        {"experiments": ["sdgm", "leaky"], "corpora": ["ptb", "wikitext2"], "seeds": [0, 1], "seq_len": L},
    )
    assert (root / "README.md").read_text() == text
    assert "| sdgm | 123.4 |" in text  # the main table, embedded as written
    assert "[`tables/ablation.md`](tables/ablation.md) | see the caption in the HTML report |" in text
    assert "![training_curves](figures/training_curves.png)" in text
    assert "![ptb/sdgm-s0 atoms](figures/ptb/sdgm-s0/atoms.png)" in text
    assert "[ptb/sdgm-s0](runs/ptb/sdgm-s0/metrics.json)" in text
    assert "4 runs, git commit(s) abc123" in text and "finished 2026-01-01T00:00:00Z to 2026-01-02T00:00:00Z" in text
    assert "context length L = 16" in text


def test_a_missing_perplexity_is_labelled_with_its_reason():
    entry = {
        "experiment": "sdgm",
        "leaks": False,
        "model": "sdgm",
        "corpus": "ptb",
        "seed": 0,
        "val_ppl": None,
        "val_ppl_na": "training diverged",
    }
    assert pages._label(entry).endswith("validation perplexity n/a (training diverged)")
