"""ArviZ results behind one small interface: every difference between ArviZ 0.x and 1.x lives in this module.

ArviZ 0.x (pip's choice on Python 3.11) stores results as ``arviz.InferenceData``; ArviZ 1.x (Python >= 3.12)
stores them as ``xarray.DataTree``, drops ``waic`` and ``from_pyro``, and renames arguments (``hdi_prob`` became
``prob``). The rest of ppgen builds, saves and reads results, and calls ArviZ's statistics and plots, only through
the functions here, which take plain numpy arrays and return numpy arrays, ``xarray.Dataset`` or pandas tables.
ArviZ is imported lazily, so importing this module neither imports ArviZ nor needs torch.
"""

import contextlib
import functools
import math
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ppgen.errors import DataError, SpecError

__all__ = [
    "GROUPS",
    "SAMPLE_STATS_NAMES",
    "SUMMARY_COLUMNS",
    "COMPARE_COLUMNS",
    "ElpdEstimate",
    "arviz_version",
    "build_inference_data",
    "save",
    "load",
    "groups",
    "get_group",
    "summary",
    "hdi",
    "ess",
    "rhat",
    "mcse",
    "loo",
    "waic",
    "waic_from_log_likelihood",
    "compare",
    "plot_trace",
    "plot_rank",
    "plot_ppc",
    "plot_khat",
]

GROUPS = ("posterior", "sample_stats", "observed_data", "posterior_predictive", "log_likelihood", "prior")
SAMPLE_STATS_NAMES = ("diverging", "acceptance_rate", "step_size", "tree_depth", "lp")
SUMMARY_COLUMNS = ("mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat")
COMPARE_COLUMNS = ("rank", "elpd", "p", "elpd_diff", "weight", "se", "dse", "warning")

_SAMPLE_DIMS = ("chain", "draw")
_PER_DRAW_GROUPS = ("posterior", "sample_stats", "posterior_predictive", "log_likelihood")
# ArviZ's own warnings that ppgen turns into its one-line check warnings (see ppgen.evaluate.checks).
_PARETO_WARNING = "Estimated shape parameter of Pareto distribution"
_WAIC_WARNING = "For one or more samples the posterior variance"
# ArviZ 0.2x calls APIs that newer pandas and matplotlib deprecate; users cannot act on these, so the 0.x branches
# below silence exactly them.
_ARVIZ_0_DEPRECATIONS = (
    "The inplace keyword in DataFrame.sort_values is deprecated",
    "Passing a dict or None as alias_mapping to normalize_kwargs is deprecated",
)


@contextlib.contextmanager
def _quiet(*messages: str) -> Iterator[None]:
    """Silence the warnings whose messages start with ``messages`` (ArviZ's, reported by ppgen's checks instead)."""
    with warnings.catch_warnings():
        for message in messages:
            warnings.filterwarnings("ignore", message=re.escape(message))
        yield


@functools.cache
def _arviz() -> Any:
    with warnings.catch_warnings():
        # ArviZ 0.2x announces its 1.0 refactor with a FutureWarning on the first import of each day.
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning)
        import arviz
    return arviz


def arviz_version() -> tuple[int, int]:
    """(major, minor) of the installed ArviZ."""
    major, minor = _arviz().__version__.split(".")[:2]
    return int(major), int(minor)


def _is_v1() -> bool:
    return arviz_version()[0] >= 1


# ---------------------------------------------------------------------------------------------- building and files


def build_inference_data(
    posterior: Mapping[str, np.ndarray],
    sample_stats: Mapping[str, np.ndarray] | None = None,
    observed_data: Mapping[str, np.ndarray] | None = None,
    posterior_predictive: Mapping[str, np.ndarray] | None = None,
    log_likelihood: Mapping[str, np.ndarray] | None = None,
    prior: Mapping[str, np.ndarray] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    coords: Mapping[str, Sequence[Any]] | None = None,
) -> Any:
    """ArviZ results (InferenceData on ArviZ 0.x, DataTree on 1.x) from numpy arrays.

    Args:
        posterior, sample_stats, posterior_predictive, log_likelihood: name -> array [chain, draw, ...], all with
            the posterior's (chain, draw). sample_stats names follow ArviZ: ``diverging``, ``acceptance_rate``,
            ``step_size``, ``tree_depth``, ``lp``.
        observed_data: name -> array [...] (no sample dimensions).
        prior: name -> array [chain, draw, ...] (its own chain and draw counts).
        dims: variable name -> names of its non-sample dimensions; coords: dimension name -> labels.
    """
    given = {
        "posterior": posterior,
        "sample_stats": sample_stats,
        "observed_data": observed_data,
        "posterior_predictive": posterior_predictive,
        "log_likelihood": log_likelihood,
        "prior": prior,
    }
    if not posterior:
        raise DataError("posterior: no variables given")
    data = {name: _as_arrays(name, group) for name, group in given.items() if group}
    sample_shape = _check_sample_shapes("posterior", data["posterior"], None)
    for name in _PER_DRAW_GROUPS[1:]:
        if name in data:
            _check_sample_shapes(name, data[name], sample_shape)
    if "prior" in data:
        _check_sample_shapes("prior", data["prior"], None)
    dims = {key: list(value) for key, value in (dims or {}).items()}
    coords = {key: list(value) for key, value in (coords or {}).items()}
    if _is_v1():
        return _arviz().from_dict(data, dims=dims, coords=coords)
    return _arviz().from_dict(**data, dims=dims, coords=coords)


def _as_arrays(group: str, variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {str(name): np.asarray(value) for name, value in variables.items()}


def _check_sample_shapes(
    group: str, variables: dict[str, np.ndarray], expected: tuple[int, int] | None
) -> tuple[int, int]:
    for name, value in variables.items():
        if value.ndim < 2:
            raise DataError(f"{group}[{name!r}] has shape {value.shape}: expected [chain, draw, ...]")
        if expected is None:
            expected = value.shape[:2]
        if value.shape[:2] != expected:
            raise DataError(
                f"{group}[{name!r}] has (chain, draw) = {value.shape[:2]}, but the posterior has {expected}"
            )
    return expected


def save(results: Any, path: str | Path) -> Path:
    """Write results to a NetCDF file (a run folder's ``posterior.nc``), atomically; returns the path."""
    path = Path(path)
    temporary = path.with_name(path.name + ".tmp")
    results.to_netcdf(str(temporary))
    os.replace(temporary, path)
    return path


def load(path: str | Path) -> Any:
    """Read results written by ``save`` (or by ArviZ), fully into memory."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such results file")
    try:
        if _is_v1():
            return xr.load_datatree(path)
        az = _arviz()
        with az.rc_context(rc={"data.load": "eager"}):
            return az.from_netcdf(str(path))
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: not a readable NetCDF results file ({error})") from error


def groups(results: Any) -> list[str]:
    """Names of the groups in results, e.g. ["posterior", "sample_stats", ...]."""
    if isinstance(results, xr.DataTree):
        return list(results.children)
    return list(results.groups())


def get_group(results: Any, name: str) -> xr.Dataset:
    """One group of results as an ``xarray.Dataset``."""
    present = groups(results)
    if name not in present:
        raise DataError(f"results have no {name!r} group (groups: {', '.join(present) or 'none'})")
    group = results[name]
    return group.to_dataset() if isinstance(group, xr.DataTree) else group


def _check_var_names(results: Any, group: str, var_names: Sequence[str] | None) -> list[str] | None:
    if var_names is None:
        return None
    known = list(get_group(results, group).data_vars)
    for name in var_names:
        if name not in known:
            raise SpecError(f"var_names: unknown variable {name!r} in {group} (variables: {', '.join(known)})")
    return list(var_names)


# ------------------------------------------------------------------------------------------------------ statistics


def summary(results: Any, var_names: Sequence[str] | None = None, hdi_prob: float = 0.94) -> pd.DataFrame:
    """ArviZ's posterior summary with unrounded values and ArviZ 0.x column names (``SUMMARY_COLUMNS``).

    Rows are ``name`` or ``name[index]``; the HDI columns are named for ``hdi_prob`` (``hdi_3%``, ``hdi_97%`` at
    0.94). ESS and R-hat are the rank-normalized ones of Vehtari et al. (2021), arXiv:1903.08008.
    """
    var_names = _check_var_names(results, "posterior", var_names)
    az = _arviz()
    # One chain has no between-chain variance: R-hat is NaN (checks.summarize says so), not a numpy warning.
    with np.errstate(invalid="ignore", divide="ignore"), _without_numba():
        return _summary(az, results, var_names, hdi_prob)


def _summary(az: Any, results: Any, var_names: list[str] | None, hdi_prob: float) -> pd.DataFrame:
    if _is_v1():
        table = az.summary(results, var_names=var_names, ci_prob=hdi_prob, ci_kind="hdi", round_to="none")
        renames = {}
        for column in table.columns:
            if column.endswith("_lb"):
                renames[column] = _hdi_column(hdi_prob, lower=True)
            elif column.endswith("_ub"):
                renames[column] = _hdi_column(hdi_prob, lower=False)
        table = table.rename(columns=renames)
    else:
        table = az.summary(results, var_names=var_names, hdi_prob=hdi_prob, round_to="none")
    columns = ["mean", "sd", _hdi_column(hdi_prob, True), _hdi_column(hdi_prob, False)] + list(SUMMARY_COLUMNS[4:])
    return table[columns].astype(float)


def _hdi_column(prob: float, lower: bool) -> str:
    tail = 100 * (1 - prob) / 2
    return f"hdi_{tail if lower else 100 - tail:g}%"


def _as_results(data: Any) -> tuple[Any, bool]:
    if isinstance(data, np.ndarray):
        return build_inference_data({"x": data}), True
    return data, False


def _per_variable(values: Any, var_names: list[str] | None, array_input: bool, last_dim: str | None = None):
    dataset = values.to_dataset() if isinstance(values, xr.DataTree) else values
    names = var_names or list(dataset.data_vars)
    result = {}
    for name in names:
        variable = dataset[name]
        if last_dim is not None:
            variable = variable.transpose(..., last_dim)
        result[name] = np.asarray(variable.values)
    return result["x"] if array_input else result


def hdi(data: Any, prob: float = 0.94, var_names: Sequence[str] | None = None):
    """Highest density intervals of the posterior.

    Args:
        data: results, or an array [chain, draw, ...].
    Returns:
        name -> array [..., 2] (lower, upper); an array [..., 2] when ``data`` is an array.
    """
    results, array_input = _as_results(data)
    var_names = _check_var_names(results, "posterior", var_names)
    if _is_v1():
        values = _arviz().hdi(results, prob=prob, var_names=var_names)
        return _per_variable(values, var_names, array_input, last_dim="ci_bound")
    values = _arviz().hdi(results, hdi_prob=prob, var_names=var_names)
    return _per_variable(values, var_names, array_input, last_dim="hdi")


def ess(data: Any, method: str = "bulk", var_names: Sequence[str] | None = None):
    """Effective sample size (``method`` "bulk", "tail", "mean", ...; Vehtari et al. 2021, arXiv:1903.08008).

    Args:
        data: results, or an array [chain, draw, ...].
    Returns:
        name -> array [...]; an array [...] when ``data`` is an array.
    """
    results, array_input = _as_results(data)
    var_names = _check_var_names(results, "posterior", var_names)
    values = _arviz().ess(results, var_names=var_names, method=method)
    return _per_variable(values, var_names, array_input)


def rhat(data: Any, var_names: Sequence[str] | None = None):
    """Rank-normalized split R-hat (Vehtari et al. 2021, arXiv:1903.08008); same arguments as ``ess``."""
    results, array_input = _as_results(data)
    var_names = _check_var_names(results, "posterior", var_names)
    values = _arviz().rhat(results, var_names=var_names, method="rank")
    return _per_variable(values, var_names, array_input)


def mcse(data: Any, method: str = "mean", var_names: Sequence[str] | None = None):
    """Monte Carlo standard error of the posterior ``method`` ("mean", "sd", ...); same arguments as ``ess``."""
    results, array_input = _as_results(data)
    var_names = _check_var_names(results, "posterior", var_names)
    with _without_numba():
        values = _arviz().mcse(results, var_names=var_names, method=method)
    return _per_variable(values, var_names, array_input)


@contextlib.contextmanager
def _without_numba() -> Iterator[None]:
    """ArviZ 0.x takes a numba path for the MCSE of the sd whenever numba is importable, and that path calls
    float() on a one-element array, which numpy >= 2.4 refuses. The numpy path computes the same figure, so
    numba is switched off for the call and the user's setting restored after it."""
    numba = None if _is_v1() else getattr(_arviz(), "Numba", None)
    if numba is None or not numba.numba_flag:
        yield
        return
    numba.disable_numba()
    try:
        yield
    finally:
        numba.enable_numba()


@dataclass(frozen=True)
class ElpdEstimate:
    """An estimate of the expected log pointwise predictive density (Vehtari, Gelman & Gabry 2017, arXiv:1507.04544).

    Attributes:
        method: "loo" (PSIS-LOO) or "waic".
        elpd, se: the estimate (log scale) and its standard error over data points, sqrt(n) * sd(pointwise) with
            the n - 1 divisor as in ArviZ 1.x and R's loo (ArviZ 0.x divides by n; ppgen recomputes it).
        p: effective number of parameters (p_loo or p_waic).
        pointwise: per-data-point elpd [n].
        pareto_k: per-data-point Pareto shape [n] (loo only, else None).
        good_k: the threshold above which k is unreliable, min(1 - 1/log10(S), 0.7) (loo only, else None;
            Vehtari et al. 2024, arXiv:1507.02646).
        warning: ArviZ's flag: some k > good_k (loo), or some posterior variance of a log density > 0.4 (waic).
        num_samples, num_data: S and n.
    """

    method: str
    elpd: float
    se: float
    p: float
    pointwise: np.ndarray
    pareto_k: np.ndarray | None
    good_k: float | None
    warning: bool
    num_samples: int
    num_data: int


def _log_likelihood_name(results: Any, var_name: str | None) -> str:
    names = list(get_group(results, "log_likelihood").data_vars)
    if var_name is None:
        if len(names) != 1:
            raise SpecError(f"var_name: log_likelihood has several variables ({', '.join(names)}); name one")
        return names[0]
    if var_name not in names:
        raise SpecError(f"var_name: unknown log_likelihood variable {var_name!r} (variables: {', '.join(names)})")
    return var_name


def loo(results: Any, var_name: str | None = None) -> ElpdEstimate:
    """PSIS-LOO (Vehtari, Gelman & Gabry 2017, arXiv:1507.04544) from the ``log_likelihood`` group."""
    var_name = _log_likelihood_name(results, var_name)
    with _quiet(_PARETO_WARNING):
        estimate = _arviz().loo(results, pointwise=True, var_name=var_name)
    if _is_v1():
        elpd, p, pointwise, pareto_k = estimate.elpd, estimate.p, estimate.elpd_i, estimate.pareto_k
        num_samples = estimate.n_samples
    else:
        elpd, p, pointwise, pareto_k = (estimate[key] for key in ("elpd_loo", "p_loo", "loo_i", "pareto_k"))
        num_samples = estimate["n_samples"]
    pointwise, pareto_k = np.asarray(pointwise).ravel(), np.asarray(pareto_k).ravel()
    good_k = min(1 - 1 / math.log10(num_samples), 0.7) if num_samples > 1 else 0.7
    return ElpdEstimate(
        method="loo",
        elpd=float(elpd),
        se=_standard_error(pointwise),
        p=float(p),
        pointwise=pointwise,
        pareto_k=pareto_k,
        good_k=good_k,
        warning=bool(np.any(pareto_k > good_k)),
        num_samples=int(num_samples),
        num_data=pareto_k.size,
    )


def waic(results: Any, var_name: str | None = None) -> ElpdEstimate:
    """WAIC (Watanabe 2010; Vehtari, Gelman & Gabry 2017, arXiv:1507.04544) from the ``log_likelihood`` group.

    ArviZ 1.x dropped WAIC (LOO is the recommended estimate); there it is ``waic_from_log_likelihood``.
    """
    var_name = _log_likelihood_name(results, var_name)
    if _is_v1():
        values = get_group(results, "log_likelihood")[var_name].transpose(*_SAMPLE_DIMS, ...).values
        return waic_from_log_likelihood(values.reshape(-1, int(np.prod(values.shape[2:], dtype=int))))
    with _quiet(_WAIC_WARNING):
        estimate = _arviz().waic(results, pointwise=True, var_name=var_name)
    pointwise = np.asarray(estimate["waic_i"]).ravel()
    return ElpdEstimate(
        method="waic",
        elpd=float(estimate["elpd_waic"]),
        se=_standard_error(pointwise),
        p=float(estimate["p_waic"]),
        pointwise=pointwise,
        pareto_k=None,
        good_k=None,
        warning=bool(estimate["warning"]),
        num_samples=int(estimate["n_samples"]),
        num_data=pointwise.size,
    )


def _standard_error(pointwise: np.ndarray) -> float:
    return float(math.sqrt(pointwise.size * np.var(pointwise, ddof=1))) if pointwise.size > 1 else math.nan


def waic_from_log_likelihood(log_likelihood: np.ndarray) -> ElpdEstimate:
    """WAIC from pointwise log-likelihoods [S, n], as ArviZ 0.x computes it (arXiv:1507.04544, eqs. 11-13, 23).

    elpd_i = log mean_s p(y_i | theta_s) - var_s log p(y_i | theta_s) (var with divisor S, as ArviZ 0.x);
    se = sqrt(n) * sd_i(elpd_i).
    """
    from scipy.special import logsumexp

    num_samples, num_data = log_likelihood.shape
    lppd = logsumexp(log_likelihood, axis=0) - math.log(num_samples)
    variance = np.var(log_likelihood, axis=0)  # ddof=0, as ArviZ 0.x
    pointwise = lppd - variance
    return ElpdEstimate(
        method="waic",
        elpd=float(pointwise.sum()),
        se=_standard_error(pointwise),
        p=float(variance.sum()),
        pointwise=pointwise,
        pareto_k=None,
        good_k=None,
        warning=bool(np.any(variance > 0.4)),
        num_samples=num_samples,
        num_data=num_data,
    )


def compare(named_results: Mapping[str, Any], var_name: str | None = None) -> pd.DataFrame:
    """Models ranked by PSIS-LOO elpd with stacking weights (Yao et al. 2018, arXiv:1704.02030).

    Returns a table indexed by model name with ``COMPARE_COLUMNS``: rank (0 is best), elpd, p, elpd_diff (from the
    best), weight, se, dse (se of the difference) and warning (unreliable Pareto k).
    """
    if len(named_results) < 2:
        raise SpecError(f"compare: needs at least two models, got {len(named_results)}")
    with _quiet(_PARETO_WARNING, *_ARVIZ_0_DEPRECATIONS):
        if _is_v1():
            table = _arviz().compare(dict(named_results), var_name=var_name, round_to="none")
            table["warning"] = table["diag_elpd"].fillna("").astype(str).str.len() > 0
            table["elpd_diff"] = table["elpd_diff"].abs()  # ArviZ 1.x counts worse models' differences as < 0
        else:
            table = _arviz().compare(dict(named_results), ic="loo", var_name=var_name)
            table = table.rename(columns={"elpd_loo": "elpd", "p_loo": "p"})
    table = table[list(COMPARE_COLUMNS)].copy()
    table["warning"] = table["warning"].astype(bool)
    return table.sort_values("rank")


# ----------------------------------------------------------------------------------------------------------- plots


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
    get_group(results, "posterior_predictive")
    az = _arviz()
    if _is_v1():
        collection = az.plot_ppc_dist(results, var_names=var_names, num_samples=num_samples, backend="matplotlib")
        return _save_figure(collection.get_viz("figure"), path)
    with _quiet(*_ARVIZ_0_DEPRECATIONS):
        axes = az.plot_ppc(results, var_names=var_names, num_pp_samples=num_samples, random_seed=seed, show=False)
    return _save_figure(_figure_of(axes), path)


def plot_khat(results: Any, path: str | Path, var_name: str | None = None) -> Path:
    """PSIS-LOO Pareto k of every data point against its index, written as a PNG."""
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
