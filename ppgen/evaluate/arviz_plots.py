"""ArviZ's plots of results, written as PNG files (each figure closed after saving), on ArviZ 0.x and 1.x alike."""

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.evaluate.elpd import _log_likelihood_name, reliable_k
from ppgen.evaluate.inference_data import (
    _ARVIZ_0_DEPRECATIONS,
    _PARETO_WARNING,
    _arviz,
    _check_var_names,
    _is_v1,
    _quiet,
    get_group,
)

__all__ = ["plot_trace", "plot_rank", "plot_ppc", "plot_pareto_k", "plot_loo_pit"]


def _save_figure(figure: Any, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return Path(path)


def _figure_of(axes: Any) -> Any:
    return np.ravel(axes)[0].get_figure()


def _laid_out(figure: Any, inches_per_row: float = 2.0) -> Any:
    """``figure`` with room for its rows of axes (``inches_per_row`` each) under a constrained layout, so that no
    title overlaps the tick labels of the axes above it."""
    rows = len({round(axes.get_position().y0, 3) for axes in figure.axes})
    width, height = figure.get_size_inches()
    figure.set_size_inches(width, max(height, inches_per_row * rows))
    figure.set_layout_engine("constrained")
    return figure


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
        figure = plot(results, var_names=var_names, backend="matplotlib").get_viz("figure")
        return _save_figure(_laid_out(figure), path)
    with _quiet(*_ARVIZ_0_DEPRECATIONS):
        axes = plot(results, var_names=var_names, show=False)
    return _save_figure(_laid_out(_figure_of(axes)), path)


def plot_ppc(
    results: Any,
    path: str | Path,
    var_names: Sequence[str] | None = None,
    num_samples: int = 50,
    seed: int = 0,
    group: str = "posterior_predictive",
) -> Path:
    """Densities of ``num_samples`` replicated data sets (of ``group``: "posterior_predictive" or
    "prior_predictive") over the observed data's, written as a PNG."""
    var_names = _check_var_names(results, "observed_data", var_names)
    predictive = get_group(results, group)
    num_samples = min(num_samples, predictive.sizes["chain"] * predictive.sizes["draw"])  # short runs have fewer
    az = _arviz()
    if _is_v1():
        collection = az.plot_ppc_dist(
            results,
            var_names=var_names,
            group=group,
            num_samples=num_samples,
            visuals={"observed_dist": {}},  # ArviZ 1.x leaves the data out of a prior predictive plot by default
            backend="matplotlib",
        )
        return _save_figure(collection.get_viz("figure"), path)
    with _quiet(*_ARVIZ_0_DEPRECATIONS):
        axes = az.plot_ppc(
            results,
            var_names=var_names,
            num_pp_samples=num_samples,
            random_seed=seed,
            group=group.removesuffix("_predictive"),
            observed=True,  # ArviZ 0.x leaves the data out of a prior predictive plot by default
            show=False,
        )
    return _save_figure(_figure_of(axes), path)


def plot_loo_pit(results: Any, path: str | Path, var_name: str | None = None) -> Path:
    """The ECDF of the LOO-PIT values with the band a uniform sample of their size stays in (Gabry et al. 2019,
    arXiv:1709.01449; Säilynoja et al. 2022, arXiv:2103.10522), written as a PNG."""
    var_name = _log_likelihood_name(results, var_name)
    az = _arviz()
    with _quiet(_PARETO_WARNING), np.errstate(over="ignore"):
        if _is_v1():
            figure = az.plot_loo_pit(results, var_names=[var_name], backend="matplotlib").get_viz("figure")
        else:
            with _quiet(*_ARVIZ_0_DEPRECATIONS):
                figure = _figure_of(az.plot_loo_pit(results, y=var_name, ecdf=True, show=False))
    return _save_figure(figure, path)


def plot_pareto_k(results: Any, path: str | Path, var_name: str | None = None) -> Path:
    """PSIS-LOO Pareto k of every data point against its index (Vehtari et al. 2024, arXiv:1507.02646), with the
    threshold above which a point's estimate is unreliable (``reliable_k``: 0.7 from 2,200 draws on) and k = 1,
    above which it is unusable, written as a PNG."""
    var_name = _log_likelihood_name(results, var_name)
    az = _arviz()
    with _quiet(_PARETO_WARNING), np.errstate(over="ignore"):
        estimate = az.loo(results, pointwise=True, var_name=var_name)
    if _is_v1():
        figure = az.plot_khat(estimate, backend="matplotlib").get_viz("figure")
        num_samples = estimate.n_samples
    else:
        with _quiet(*_ARVIZ_0_DEPRECATIONS):
            figure = _figure_of(az.plot_khat(estimate, show=False))
        num_samples = estimate["n_samples"]
    axes = figure.axes[0]
    good_k = reliable_k(int(num_samples))
    axes.axhline(good_k, color="C1", linestyle="--", label=f"k = {good_k:.2f}: unreliable above")
    axes.axhline(1.0, color="C3", linestyle=":", label="k = 1: unusable above")
    axes.legend(loc="best")
    return _save_figure(figure, path)
