"""Interpretability figures on a tiny real SDGM run: files are written, atoms are sorted by energy, the BIC
figure marks the argmin, and components are assigned as scikit-learn assigns them."""

import json
import math

import matplotlib.image
import numpy as np
import pytest
import torch

from sdgm.models.registry import build_model, save_run
from sdgm.spectral import figures
from sdgm.spectral.gmm import fit_gmm, fit_run_gmm, load_gmm

V, L, D, K = 40, 16, 8, 6


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A trained-for-a-few-steps SDGM saved as a run, its tokenized corpus, and its GMM (fit_run_gmm)."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = build_model("sdgm", V, d_model=D, n_atoms=K, seq_len=L)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    ids = torch.randint(0, V, (3000,))
    for step in range(20):
        x = ids[step * L : (step + 1) * L + 1]
        loss, _ = model.training_loss(x[None, :-1], x[None, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    vocab = [f"w{i}" for i in range(V)]
    save_run(root / "run", "sdgm", model, vocab)
    tokens = root / "tokens"
    tokens.mkdir()
    (tokens / "vocab.json").write_text(json.dumps(vocab))
    for i, split in enumerate(("train", "valid", "test")):
        torch.save(ids[i * 1000 : (i + 1) * 1000].clone(), tokens / f"{split}.pt")
    summary = fit_run_gmm(
        root / "run",
        tokens,
        root / "run" / "gmm.npz",
        root / "run" / "gmm.json",
        {"components": [1, 2, 3, 4], "covariance_type": "diag", "max_vectors": 600},
    )
    return {"root": root, "model": model.eval(), "tokens": tokens, "summary": summary}


def test_every_figure_is_written_as_png_and_pdf(tiny_run):
    root = tiny_run["root"]
    written = figures.run_figures(
        root / "run",
        root / "run" / "gmm.npz",
        root / "run" / "gmm.json",
        tiny_run["tokens"],
        root / "figs",
        title="tiny/sdgm-s0",
        max_vectors=300,
    )
    assert set(written) == set(figures.FIGURES)
    for name in figures.FIGURES:
        png, pdf = written[name]
        assert png == root / "figs" / f"{name}.png" and pdf == root / "figs" / f"{name}.pdf"
        assert pdf.stat().st_size > 5_000 and pdf.read_bytes().startswith(b"%PDF")
        img = matplotlib.image.imread(png)
        assert img.shape[0] > 400 and img.shape[1] > 600
        assert img[..., :3].std() > 0.05, f"{name}.png looks blank"
    assert not list((root / "figs").glob("*.part-*"))


def test_atoms_are_sorted_by_energy_over_the_window(tiny_run, tmp_path):
    model = tiny_run["model"]
    a = model.atoms
    A, F, phi = (p.detach().double().numpy() for p in (a.amplitude, a.frequency, a.phase))
    t = np.arange(L)[:, None, None]
    energy = ((A * np.sin(2 * math.pi * F * t / L + phi)) ** 2).sum(-1).mean(0)  # (K,), by the definition
    v = figures.atom_values(model)
    np.testing.assert_allclose(v["energy"], energy, rtol=1e-5)
    assert sorted(v["order"]) == list(range(K))
    assert np.all(np.diff(v["energy"][v["order"]]) <= 0)
    assert v["order"][0] == int(energy.argmax())

    # scaling one atom up puts it first; the heatmap figure reports the same order
    boosted = build_model("sdgm", V, d_model=D, n_atoms=K, seq_len=L)
    boosted.load_state_dict(model.state_dict())
    weakest = int(v["order"][-1])
    with torch.no_grad():
        boosted.atoms.amplitude[weakest] *= 100
    out = figures.plot_atoms(boosted, tmp_path / "atoms")
    assert out["order"][0] == weakest
    sig = figures.plot_atom_signals(boosted, tmp_path / "signals", n_atoms=3, n_dims=2)
    assert sig["atoms"][0] == weakest and len(sig["atoms"]) == 3
    assert abs(boosted.atoms.amplitude[weakest, sig["dims"][0][0]]) == boosted.atoms.amplitude[weakest].abs().max()


def test_bic_figure_marks_the_argmin(tiny_run, tmp_path):
    summary = json.loads((tiny_run["root"] / "run" / "gmm.json").read_text())
    bics = {g["components"]: g["bic"] for g in summary["grid"]}
    out = figures.plot_gmm_bic(summary, tmp_path / "bic")
    assert out["chosen"] == min(bics, key=bics.get) == summary["components"]
    assert len(load_gmm(tiny_run["root"] / "run" / "gmm.npz")["weights"]) == out["chosen"]
    # a grid point that could not be fitted is left out, not plotted as 0
    skipped = {**summary, "grid": summary["grid"] + [{"components": 10_000, "bic": None, "converged": False}]}
    assert figures.plot_gmm_bic(skipped, tmp_path / "bic2")["chosen"] == out["chosen"]
    # a summary whose kept mixture is not the BIC argmin is refused
    other = next(m for m in bics if m != summary["components"])
    with pytest.raises(ValueError, match="lowest BIC"):
        figures.plot_gmm_bic({**summary, "components": other}, tmp_path / "bic3")


@pytest.mark.parametrize("kind", ["diag", "spherical", "full", "tied"])
def test_components_are_assigned_as_sklearn_predicts(kind):
    from sklearn.mixture import GaussianMixture

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(c, 1.0, (200, 4)) for c in (-3.0, 0.0, 3.0)])
    gm = GaussianMixture(3, covariance_type=kind, random_state=0).fit(x)
    params = {"weights": gm.weights_, "means": gm.means_, "covariances": gm.covariances_, "covariance_type": kind}
    np.testing.assert_array_equal(figures.gmm_assign(params, x), gm.predict(x))
    log_p = figures.gmm_log_prob(params, x)
    np.testing.assert_allclose(np.logaddexp.reduce(log_p, axis=1), gm.score_samples(x), rtol=1e-8)


def test_pca_figure_colours_points_by_their_component(tiny_run, tmp_path):
    rng = np.random.default_rng(1)
    vectors = np.concatenate([rng.normal(c, 0.3, (150, K)) for c in (-2.0, 2.0)])
    params, _ = fit_gmm(vectors, [2], "diag")
    out = figures.plot_gmm_pca(params, vectors, tmp_path / "pca")
    assert len(out["labels"]) == len(vectors)
    assert set(out["labels"][:150]) != set(out["labels"][150:])  # the two clusters get different components
    assert 0.9 < out["explained"][0] <= 1  # one direction separates them
    with pytest.raises(ValueError):
        figures.plot_gmm_pca(params, vectors[:1], tmp_path / "pca2")
