"""Interpretability figures of one trained SDGM run: its spectral atoms and the GMM over its mixing vectors.

    atoms         |A| and F heatmaps (K x D), atoms sorted by energy, highest first
    atom_signals  S_k(t) over t = 0..L-1 of the highest-energy atoms, a few dimensions each
    gmm_bic       BIC of every mixture in the grid fit_gmm tried, the chosen one (lowest BIC) marked
    gmm_pca       mixing vectors C of validation positions projected on their first two principal components,
                  coloured by the mixture component they most likely belong to; component means and
                  2-standard-deviation ellipses projected the same way

Everything is read from the run directory (sdgm.load_run), its gmm.npz/gmm.json and the tokenized validation
split; the figures are written with sdgm.reporting.save_figure (PNG and PDF).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Ellipse

from ..reporting import save_figure

matplotlib.use("Agg")  # figures go to files, never to a window

FIGURES = ("atoms", "atom_signals", "gmm_bic", "gmm_pca")


# --------------------------------------------------------------------------- atoms


@torch.no_grad()
def atom_values(model) -> dict[str, np.ndarray]:
    """The atoms of an SDGM over its window: amplitude A, frequency F (K, D), S (L, K, D) at t = 0..L-1,
    energy (K,) = mean over t of ||S_k(t)||^2, and order (K,): atom indices by energy, highest first."""
    atoms = getattr(model, "atoms", None)
    if atoms is None or not hasattr(atoms, "amplitude"):
        raise ValueError(f"{type(model).__name__} has no spectral atoms (amplitude/frequency/phase) to show")
    L = atoms.seq_len
    S = atoms(torch.arange(L)).double().numpy()  # (L, K, D)
    energy = (S**2).sum(-1).mean(0)  # (K,)
    order = np.argsort(-energy, kind="stable")
    return {
        "amplitude": atoms.amplitude.double().numpy(),
        "frequency": atoms.frequency.double().numpy(),
        "S": S,
        "energy": energy,
        "order": order,
    }


def plot_atoms(model, out_stem: Path, title: str = "") -> dict:
    """|A| and F heatmaps, rows = atoms sorted by energy (highest on top), columns = embedding dimensions."""
    v = atom_values(model)
    order = v["order"]
    K, D = v["amplitude"].shape
    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5), constrained_layout=True)
    panels = (
        (axes[0], np.abs(v["amplitude"][order]), "magma", "amplitude |A|", "|A| (embedding units)"),
        (axes[1], v["frequency"][order], "viridis", "frequency F", "F (cycles per window of L positions)"),
    )
    for ax, data, cmap, name, unit in panels:
        im = ax.imshow(data, aspect="auto", cmap=cmap, interpolation="nearest")
        fig.colorbar(im, ax=ax, label=unit)
        ax.set_title(f"{name}: {K} atoms x {D} dimensions")
        ax.set_xlabel("embedding dimension d")
        ax.set_ylabel("atom, by energy rank (0 = highest)")
    fig.suptitle(
        f"{title}: learned spectral atoms S_k,d(t) = A sin(2 pi F t / L + phi)" if title else "learned spectral atoms"
    )
    paths = save_figure(fig, Path(out_stem))
    return {"paths": paths, "order": order, "energy": v["energy"]}


def plot_atom_signals(model, out_stem: Path, title: str = "", n_atoms: int = 4, n_dims: int = 3) -> dict:
    """S_k(t) for t = 0..L-1: the n_atoms highest-energy atoms, each in the n_dims dimensions of largest |A|."""
    v = atom_values(model)
    atoms = v["order"][:n_atoms]
    L = v["S"].shape[0]
    t = np.arange(L)
    ncol = min(2, len(atoms))
    nrow = math.ceil(len(atoms) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(6.5 * ncol, 4.2 * nrow), squeeze=False, constrained_layout=True)
    dims_shown = []
    for i, k in enumerate(atoms):
        ax = axes.flat[i]
        dims = np.argsort(-np.abs(v["amplitude"][k]), kind="stable")[:n_dims]
        dims_shown.append(dims)
        for d in dims:
            ax.plot(
                t,
                v["S"][:, k, d],
                linewidth=1.3,
                label=f"d = {d}: |A| = {abs(v['amplitude'][k, d]):.3g}, F = {v['frequency'][k, d]:.3g}",
            )
        ax.axhline(0, color="0.6", linewidth=0.6)
        ax.set_title(f"atom {k} (energy rank {i}, mean ||S_k(t)||^2 = {v['energy'][k]:.3g})", fontsize=10)
        ax.set_xlabel("position t in the window")
        ax.set_ylabel("S_k,d(t)")
        ax.set_xlim(0, L - 1)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1, frameon=False)
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(atoms) :]:
        ax.set_axis_off()
    fig.suptitle(f"{title}: highest-energy atoms over one window" if title else "highest-energy atoms")
    paths = save_figure(fig, Path(out_stem))
    return {"paths": paths, "atoms": atoms, "dims": dims_shown}


# --------------------------------------------------------------------------- GMM


def chosen_components(summary: dict) -> int:
    """The grid point with the lowest BIC; it must be the mixture fit_gmm kept (gmm.json 'components')."""
    fitted = [g for g in summary["grid"] if g.get("bic") is not None]
    if not fitted:
        raise ValueError("the GMM grid has no fitted point")
    best = min(fitted, key=lambda g: g["bic"])["components"]
    if best != summary["components"]:
        raise ValueError(
            f"gmm.json keeps {summary['components']} components, but the lowest BIC of its grid is at {best}"
        )
    return best


def plot_gmm_bic(summary: dict, out_stem: Path, title: str = "") -> dict:
    """BIC against the number of components (log2 x axis); the chosen mixture starred, unconverged fits hollow."""
    chosen = chosen_components(summary)
    grid = sorted((g for g in summary["grid"] if g.get("bic") is not None), key=lambda g: g["components"])
    skipped = [g["components"] for g in summary["grid"] if g.get("bic") is None]
    m = np.array([g["components"] for g in grid])
    bic = np.array([g["bic"] for g in grid])
    conv = np.array([bool(g.get("converged")) for g in grid])
    fig, ax = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
    ax.plot(m, bic, color="tab:blue", linewidth=1.5)
    ax.scatter(m[conv], bic[conv], color="tab:blue", zorder=3, label="fitted (EM converged)")
    if (~conv).any():
        ax.scatter(
            m[~conv],
            bic[~conv],
            facecolors="white",
            edgecolors="tab:blue",
            zorder=3,
            label="fitted (EM did not converge)",
        )
    ax.scatter(
        [chosen],
        [bic[m == chosen][0]],
        marker="*",
        s=300,
        color="tab:red",
        zorder=4,
        label=f"chosen: {chosen} components (lowest BIC)",
    )
    ax.margins(x=0.08, y=0.1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(m, [str(x) for x in m])
    ax.set_xlabel("number of mixture components")
    ax.set_ylabel("BIC (lower is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    note = (
        f"{summary['n_vectors']} training mixing vectors, K = {summary['dim']}, "
        f"{summary['covariance_type']} covariances"
    )
    if chosen == m.max() and len(m) > 1:
        note += "; the lowest BIC is at the largest size tried"
    if skipped:
        note += f"; not fitted (more components than vectors): {skipped}"
    ax.set_title(note, fontsize=8)
    fig.suptitle(f"{title}: GMM size by BIC" if title else "GMM size by BIC")
    return {"paths": save_figure(fig, Path(out_stem)), "chosen": chosen}


def _full_covariances(params: dict) -> np.ndarray:
    """Covariances of every component as (M, K, K), whatever the covariance type."""
    cov, kind = np.asarray(params["covariances"], dtype=float), params["covariance_type"]
    M, K = np.asarray(params["means"]).shape
    if kind == "full":
        return cov
    if kind == "diag":
        return np.stack([np.diag(c) for c in cov])
    if kind == "spherical":
        return cov[:, None, None] * np.eye(K)[None]
    if kind == "tied":
        return np.broadcast_to(cov, (M, K, K))
    raise ValueError(f"unknown covariance_type {kind!r}")


def gmm_log_prob(params: dict, x: np.ndarray) -> np.ndarray:
    """log (w_m N(x | mu_m, Sigma_m)) for every vector and component: x (N, K) -> (N, M)."""
    x = np.asarray(x, dtype=float)
    means = np.asarray(params["means"], dtype=float)
    out = np.empty((len(x), len(means)))
    for j, (mu, cov) in enumerate(zip(means, _full_covariances(params))):
        chol = np.linalg.cholesky(cov)
        z = np.linalg.solve(chol, (x - mu).T)  # (K, N)
        out[:, j] = -0.5 * (z**2).sum(0) - np.log(np.diag(chol)).sum() - 0.5 * len(mu) * math.log(2 * math.pi)
    return out + np.log(np.asarray(params["weights"], dtype=float))[None]


def gmm_assign(params: dict, x: np.ndarray) -> np.ndarray:
    """The most likely component of each vector: (N, K) -> (N,)."""
    return gmm_log_prob(params, x).argmax(1)


def _ellipse(mean2: np.ndarray, cov2: np.ndarray, n_std: float, **kw) -> Ellipse:
    vals, vecs = np.linalg.eigh(cov2)
    vals = np.clip(vals, 0, None)
    angle = math.degrees(math.atan2(vecs[1, -1], vecs[0, -1]))
    return Ellipse(mean2, 2 * n_std * math.sqrt(vals[-1]), 2 * n_std * math.sqrt(vals[0]), angle=angle, **kw)


def _colors(n: int) -> list:
    if n <= 10:
        return [plt.get_cmap("tab10")(i) for i in range(n)]
    if n <= 20:
        return [plt.get_cmap("tab20")(i) for i in range(n)]
    return [plt.get_cmap("turbo")(i / (n - 1)) for i in range(n)]


def plot_gmm_pca(params: dict, vectors: np.ndarray, out_stem: Path, title: str = "", n_std: float = 2.0) -> dict:
    """Mixing vectors (N, K) on their first two principal components, coloured by component; component means
    (crosses) and n_std-standard-deviation ellipses of each component's covariance, projected the same way."""
    vectors = np.asarray(vectors, dtype=float)
    if vectors.ndim != 2 or vectors.shape[1] < 2 or len(vectors) < 2:
        raise ValueError(f"need (N >= 2, K >= 2) mixing vectors, got shape {vectors.shape}")
    center = vectors.mean(0)
    _, sing, vt = np.linalg.svd(vectors - center, full_matrices=False)
    W = vt[:2]  # (2, K): the first two principal axes
    explained = sing[:2] ** 2 / (sing**2).sum()
    proj = (vectors - center) @ W.T  # (N, 2)
    labels = gmm_assign(params, vectors)
    means2 = (np.asarray(params["means"]) - center) @ W.T  # (M, 2)
    covs2 = W[None] @ _full_covariances(params) @ W.T[None]  # (M, 2, 2)
    weights = np.asarray(params["weights"])
    colors = _colors(len(weights))
    fig, ax = plt.subplots(figsize=(10, 6), constrained_layout=True)
    for j in range(len(weights)):
        sel = labels == j
        ax.scatter(
            proj[sel, 0],
            proj[sel, 1],
            s=6,
            alpha=0.45,
            color=colors[j],
            linewidths=0,
            label=f"component {j}: weight {weights[j]:.2f}, {int(sel.sum())} points",
        )
        ax.add_patch(_ellipse(means2[j], covs2[j], n_std, fill=False, edgecolor=colors[j], linewidth=1.5))
        ax.scatter(*means2[j], marker="X", s=110, color=colors[j], edgecolors="black", linewidths=0.8, zorder=4)
    ax.set_xlabel(f"principal component 1 ({100 * explained[0]:.1f}% of variance)")
    ax.set_ylabel(f"principal component 2 ({100 * explained[1]:.1f}% of variance)")
    ax.grid(True, alpha=0.3)
    ax.legend(
        fontsize=7,
        markerscale=2.5,
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        ncol=1 if len(weights) <= 16 else 2,
        title="most likely component",
        title_fontsize=8,
    )
    ax.set_title(
        f"{len(vectors)} validation positions; X = component mean, ellipse = {n_std:g} std of its covariance",
        fontsize=9,
    )
    fig.suptitle(f"{title}: mixing vectors C by GMM component (PCA)" if title else "mixing vectors by GMM component")
    return {"paths": save_figure(fig, Path(out_stem)), "labels": labels, "explained": explained}


# --------------------------------------------------------------------------- one run


def run_figures(
    run_dir, gmm_npz, gmm_json, tokens_dir, out_dir, title: str = "", max_vectors: int = 2000, seed: int = 0
) -> dict[str, list[Path]]:
    """Write the four figures of one SDGM run to out_dir/{atoms,atom_signals,gmm_bic,gmm_pca}.{png,pdf}."""
    import json

    from ..data.tokens import load_tokens
    from ..models.registry import load_run
    from .gmm import collect_mixing_vectors, load_gmm

    out_dir = Path(out_dir)
    model, _ = load_run(run_dir)
    summary = json.loads(Path(gmm_json).read_text())
    params = load_gmm(gmm_npz)
    splits, _ = load_tokens(tokens_dir)
    vectors = collect_mixing_vectors(model, splits["valid"], model.max_context, max_vectors, seed)
    return {
        "atoms": plot_atoms(model, out_dir / "atoms", title)["paths"],
        "atom_signals": plot_atom_signals(model, out_dir / "atom_signals", title)["paths"],
        "gmm_bic": plot_gmm_bic(summary, out_dir / "gmm_bic", title)["paths"],
        "gmm_pca": plot_gmm_pca(params, vectors, out_dir / "gmm_pca", title)["paths"],
    }
