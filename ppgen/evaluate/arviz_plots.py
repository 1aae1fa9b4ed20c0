"""ArviZ's plots of results, written as PNG files (each figure closed after saving), on ArviZ 0.x and 1.x alike."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.evaluate.elpd import _log_likelihood_name
from ppgen.evaluate.inference_data import (
    _ARVIZ_0_DEPRECATIONS,
    _PARETO_WARNING,
    _arviz,
    _check_var_names,
    _is_v1,
    _quiet,
    get_group,
)

__all__ = ["plot_trace", "plot_rank", "plot_ppc", "plot_pareto_k"]


def _save_figure(figure: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return Path(path)


def _figure_of(axes: Any) -> Any:
    return np.ravel(axes)[0].get_figure()


def plot_trace(results: Any, path: str | Path, var_names: Sequence[str] | None = None) -> Path:
    """Per-chain marginal densities and traces of posterior variables, written as a PNG."""
    return _plot_posterior("plot_trace_dist" if _is_v1() else "plot_trace", results, path, var_names)


def plot_rank(results: Any, path: str | Path, var_names: Sequence[str] | None = None) -> Path:
    """Rank plots of posterior variables (Vehtari et al. 2021, arXiv:1903.08008), written as a PNG."""
    return _plot_posterior("plot_rank", results, path, var_names)


def _plot_posterior(function: str, results: Any, path: str | Path, var_names: Sequence[str] | None) -> Path:
    """ArviZ's posterior plot ``function`` (its name in the installed ArviZ version), written as a PNG."""
    var_names = _check_var_names(results, "posterior", var_names)
    plot = getattr(_arviz(), function)
    if _is_v1():
        return _save_figure(plot(results, var_names=var_names, backend="matplotlib").get_viz("figure"), path)
    with _quiet(*_ARVIZ_0_DEPRECATIONS):
        axes = plot(results, var_names=var_names, show=False)
    return _save_figure(_figure_of(axes), path)


def plot_ppc(
    results: Any, path: str | Path, var_names: Sequence[str] | None = None, num_samples: int = 50, seed: int = 0
) -> Path:
    """Densities of ``num_samples`` replicated data sets over the observed data's, written as a PNG."""
    var_names = _check_var_names(results, "observed_data", var_names)
    predictive = get_group(results, "posterior_predictive")
    num_samples = min(num_samples, predictive.sizes["chain"] * predictive.sizes["draw"])  # short runs have fewer
    az = _arviz()
    if _is_v1():
        collection = az.plot_ppc_dist(results, var_names=var_names, num_samples=num_samples, backend="matplotlib")
        return _save_figure(collection.get_viz("figure"), path)
    with _quiet(*_ARVIZ_0_DEPRECATIONS):
        axes = az.plot_ppc(results, var_names=var_names, num_pp_samples=num_samples, random_seed=seed, show=False)
    return _save_figure(_figure_of(axes), path)


def plot_pareto_k(results: Any, path: str | Path, var_name: str | None = None) -> Path:
    """PSIS-LOO Pareto k of every data point against its index (Vehtari et al. 2024, arXiv:1507.02646), written
    as a PNG."""
    var_name = _log_likelihood_name(results, var_name)
    az = _arviz()
    with _quiet(_PARETO_WARNING):
        estimate = az.loo(results, pointwise=True, var_name=var_name)
    if _is_v1():
        collection = az.plot_khat(estimate, backend="matplotlib")
        return _save_figure(collection.get_viz("figure"), path)
    with _quiet(*_ARVIZ_0_DEPRECATIONS):
        axes = az.plot_khat(estimate, show=False)
    return _save_figure(_figure_of(axes), path)
