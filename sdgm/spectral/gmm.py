"""The Gaussian-mixture prior over SDGM's mixing vectors, fitted after training with scikit-learn.

The number of components is chosen by BIC over a small grid. The fitted mixture is saved as plain arrays
(.npz) rather than a pickle, so loading it never executes code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def fit_gmm(
    vectors: np.ndarray,
    components: list[int],
    covariance_type: str = "diag",
    seed: int = 0,
    max_iter: int = 200,
    reg_covar: float = 1e-6,
) -> tuple[dict, list[dict]]:
    """Fit one GaussianMixture per grid point, keep the lowest BIC.

    vectors: (N, K). Returns (params of the best mixture, [{components, bic, converged}] for every grid point).
    """
    from sklearn.mixture import GaussianMixture

    if vectors.ndim != 2 or len(vectors) < 2:
        raise ValueError(f"need a (N, K) array with N >= 2 mixing vectors, got shape {vectors.shape}")
    grid, best, best_bic = [], None, np.inf
    for m in components:
        if m > len(vectors):
            grid.append({"components": m, "bic": None, "converged": False, "skipped": "more components than vectors"})
            continue
        gm = GaussianMixture(
            n_components=m, covariance_type=covariance_type, random_state=seed, max_iter=max_iter, reg_covar=reg_covar
        ).fit(vectors)
        bic = float(gm.bic(vectors))
        grid.append({"components": m, "bic": bic, "converged": bool(gm.converged_)})
        if bic < best_bic:
            best, best_bic = gm, bic
    if best is None:
        raise ValueError(f"no grid point in {components} could be fitted to {len(vectors)} vectors")
    params = {
        "weights": best.weights_,
        "means": best.means_,
        "covariances": best.covariances_,
        "covariance_type": covariance_type,
        "bic": best_bic,
        "mean_log_likelihood": float(best.score(vectors)),
    }
    return params, grid


def save_gmm(path: str | Path, params: dict) -> None:
    import io

    from ..common.atomic import write_bytes_atomic

    buf = io.BytesIO()
    np.savez(
        buf,
        weights=params["weights"],
        means=params["means"],
        covariances=params["covariances"],
        covariance_type=np.array(params["covariance_type"]),
    )
    write_bytes_atomic(Path(path), buf.getvalue())


def load_gmm(path: str | Path) -> dict:
    with np.load(path, allow_pickle=False) as z:
        return {
            "weights": z["weights"],
            "means": z["means"],
            "covariances": z["covariances"],
            "covariance_type": str(z["covariance_type"]),
        }


def sample_gmm(params: dict, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws (n, K): pick a component by weight, then a Gaussian draw with its covariance."""
    weights, means, cov = params["weights"], params["means"], params["covariances"]
    kind = params["covariance_type"]
    comp = rng.choice(len(weights), size=n, p=weights / weights.sum())
    z = rng.standard_normal((n, means.shape[1]))
    if kind == "diag":
        return means[comp] + z * np.sqrt(cov[comp])
    if kind == "spherical":
        return means[comp] + z * np.sqrt(cov[comp])[:, None]
    if kind == "full":
        chol = np.linalg.cholesky(cov)  # (M, K, K)
        return means[comp] + np.einsum("nij,nj->ni", chol[comp], z)
    if kind == "tied":
        return means[comp] + z @ np.linalg.cholesky(cov).T
    raise ValueError(f"unknown covariance_type {kind!r}")


def collect_mixing_vectors(model, ids, L: int, max_vectors: int, seed: int = 0, batch_size: int = 32) -> np.ndarray:
    """Mixing vectors C of up to `max_vectors` positions from randomly chosen windows of `ids` -> (N, K)."""
    import torch

    n_windows = (len(ids) - 1) // L
    order = torch.randperm(n_windows, generator=torch.Generator().manual_seed(seed))
    need = -(-max_vectors // L)  # windows needed, rounded up
    chunks = []
    for i in range(0, min(need, n_windows), batch_size):
        starts = order[i : i + batch_size, None] * L
        x = ids[starts + torch.arange(L)]  # (b, L)
        chunks.append(model.mixing_vectors(x).float().numpy())
    return np.concatenate(chunks)[:max_vectors]


def fit_run_gmm(run_dir, tokens_dir, gmm_path, summary_path, gmm_cfg: dict, seed: int = 0) -> dict:
    """Fit and save the GMM of a finished SDGM run on its training split's mixing vectors."""
    from ..common.atomic import write_json_atomic
    from ..data.tokens import load_tokens
    from ..models.registry import load_run

    model, _ = load_run(run_dir)
    splits, _ = load_tokens(tokens_dir)
    vectors = collect_mixing_vectors(model, splits["train"], model.max_context, gmm_cfg.get("max_vectors", 50000), seed)
    params, grid = fit_gmm(vectors, gmm_cfg["components"], gmm_cfg.get("covariance_type", "diag"), seed=seed)
    save_gmm(gmm_path, params)
    summary = {
        "n_vectors": int(len(vectors)),
        "dim": int(vectors.shape[1]),
        "covariance_type": params["covariance_type"],
        "components": int(len(params["weights"])),
        "bic": params["bic"],
        "mean_log_likelihood": params["mean_log_likelihood"],
        "grid": grid,
    }
    write_json_atomic(summary_path, summary)
    return summary
