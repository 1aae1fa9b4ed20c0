"""ArviZ results behind one small interface: building, saving and reading them, and their posterior summaries.

ArviZ 0.x (pip's choice on Python 3.11) stores results as ``arviz.InferenceData``; ArviZ 1.x (Python >= 3.12)
stores them as ``xarray.DataTree``, drops ``waic`` and ``from_pyro``, and renames arguments (``hdi_prob`` became
``prob``). The rest of ppgen builds, saves and reads results, and calls ArviZ's statistics and plots, only through
this module, ``ppgen.evaluate.elpd`` (LOO, LOO-PIT, WAIC, compare), ``ppgen.evaluate.arviz_plots`` and
``ppgen.evaluate.sensitivity`` (power-scaling): every difference between ArviZ 0.x and 1.x lives in these four.
Their functions take plain numpy arrays and return numpy arrays, ``xarray.Dataset`` or pandas tables. ArviZ is
imported lazily, so importing them neither imports ArviZ nor needs torch.
"""

import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
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
    "arviz_version",
    "import_in_background",
    "build_inference_data",
    "save",
    "load",
    "groups",
    "get_group",
    "has_pointwise_log_likelihood",
    "summary",
    "hdi",
    "ess",
    "rhat",
    "mcse",
]

GROUPS = (
    "posterior",
    "sample_stats",
    "observed_data",
    "constant_data",
    "posterior_predictive",
    "log_likelihood",
    "log_prior",
    "prior",
    "prior_predictive",
)
SAMPLE_STATS_NAMES = ("diverging", "acceptance_rate", "step_size", "tree_depth", "lp")
SUMMARY_COLUMNS = ("mean", "sd", "hdi_3%", "hdi_97%", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat")

_PER_DRAW_GROUPS = ("posterior", "sample_stats", "posterior_predictive", "log_likelihood", "log_prior")
# ArviZ's own warning that ppgen turns into its one-line check warnings (see ppgen.evaluate.checks).
_PARETO_WARNING = "Estimated shape parameter of Pareto distribution"
# ArviZ 0.2x calls APIs that newer pandas and matplotlib deprecate; users cannot act on these, so the 0.x branches
# (here and in ppgen.evaluate.elpd and arviz_plots) silence exactly them.
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


_ARVIZ: list = []  # the imported, configured module, once ``_arviz`` has run
_ARVIZ_LOCK = threading.Lock()


def import_in_background() -> None:
    """Start importing ArviZ (about a second) in a thread of its own, to overlap with sampling, which spends its
    time in XLA without Python's lock; the first use of ArviZ then waits for the import to finish."""
    threading.Thread(target=_arviz, name="ppgen-import-arviz", daemon=True).start()


def _arviz() -> Any:
    """ArviZ, imported and configured once (by whichever thread comes first; the others wait)."""
    with _ARVIZ_LOCK:
        if not _ARVIZ:
            _ARVIZ.append(_import_arviz())
    return _ARVIZ[0]


def _import_arviz() -> Any:
    with warnings.catch_warnings(), _numba_hidden():
        # ArviZ 0.2x announces its 1.0 refactor with a FutureWarning on the first import of each day.
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning)
        import arviz
    # ArviZ 0.x logs "Shape validation failed" for every statistic of one chain (R-hat needs two), through a logger
    # of its own (not logging's "arviz"): checks.summarize says so once, in words.
    logger = getattr(arviz, "_log", None) or logging.getLogger("arviz")
    logger.addFilter(lambda record: not record.getMessage().startswith("Shape validation failed"))
    if hasattr(arviz, "Numba"):
        # ArviZ 0.x compiles its numba kernels afresh in every process (about 0.5 s for the summary and LOO of a
        # small model), which is longer than its numpy code takes on posteriors of ordinary size.
        arviz.Numba.disable_numba()
    return arviz


@contextlib.contextmanager
def _numba_hidden() -> Iterator[None]:
    """While ArviZ 0.x is imported, let numba look absent (unless it is imported already), so that ArviZ neither
    imports it nor compiles its vectorized kernels at import (0.45 s of a 1.5 s import) only to have them
    disabled; afterwards numba imports as usual, and ``arviz.Numba.enable_numba()`` still turns them on."""
    if "numba" in sys.modules:
        yield
        return
    sys.modules["numba"] = None  # importlib.util.find_spec("numba") is then None, and `import numba` fails
    try:
        yield
    finally:
        del sys.modules["numba"]


def arviz_version() -> tuple[int, int]:
    """(major, minor) of the installed ArviZ."""
    major, minor = _arviz().__version__.split(".")[:2]
    return int(major), int(minor)


def _is_v1() -> bool:
    return arviz_version()[0] >= 1


# ---------------------------------------------------------------------------------------------- building and files


def build_inference_data(
    posterior: Mapping[str, np.ndarray] | None,
    sample_stats: Mapping[str, np.ndarray] | None = None,
    observed_data: Mapping[str, np.ndarray] | None = None,
    posterior_predictive: Mapping[str, np.ndarray] | None = None,
    log_likelihood: Mapping[str, np.ndarray] | None = None,
    prior: Mapping[str, np.ndarray] | None = None,
    dims: Mapping[str, Sequence[str]] | None = None,
    coords: Mapping[str, Sequence[Any]] | None = None,
    constant_data: Mapping[str, np.ndarray] | None = None,
    log_prior: Mapping[str, np.ndarray] | None = None,
    prior_predictive: Mapping[str, np.ndarray] | None = None,
) -> Any:
    """ArviZ results (InferenceData on ArviZ 0.x, DataTree on 1.x) from numpy arrays.

    Args:
        posterior, sample_stats, posterior_predictive, log_likelihood, log_prior: name -> array [chain, draw, ...],
            all with the posterior's (chain, draw). sample_stats names follow ArviZ: ``diverging``,
            ``acceptance_rate``, ``step_size``, ``tree_depth``, ``lp``. log_prior: the log prior density of each
            draw (what ``az.psens`` power-scales).
        observed_data, constant_data: name -> array [...] (no sample dimensions): the data the model observes, and
            the rest of its data (sizes, covariates, known constants).
        prior, prior_predictive: name -> array [chain, draw, ...] (their own chain and draw counts); results of a
            prior predictive check have these and no posterior (``posterior`` None).
        dims: variable name -> names of its non-sample dimensions (e.g. its plates), in every group that holds it;
            coords: dimension name -> labels.
    """
    given = {
        "posterior": posterior,
        "sample_stats": sample_stats,
        "observed_data": observed_data,
        "constant_data": constant_data,
        "posterior_predictive": posterior_predictive,
        "log_likelihood": log_likelihood,
        "log_prior": log_prior,
        "prior": prior,
        "prior_predictive": prior_predictive,
    }
    if not posterior and not prior:
        raise DataError("posterior: no variables given")
    data = {name: _as_arrays(name, group) for name, group in given.items() if group}
    if posterior:
        sample_shape = _check_sample_shapes("posterior", data["posterior"], None)
        for name in _PER_DRAW_GROUPS[1:]:
            if name in data:
                _check_sample_shapes(name, data[name], sample_shape)
    if prior:
        prior_shape = _check_sample_shapes("prior", data["prior"], None)
        if "prior_predictive" in data:
            _check_sample_shapes("prior_predictive", data["prior_predictive"], prior_shape)
    dims = {key: list(value) for key, value in (dims or {}).items()}
    coords = {key: list(value) for key, value in (coords or {}).items()}
    if _is_v1():
        return _arviz().from_dict(data, dims=dims, coords=coords)
    log_prior = data.pop("log_prior", None)
    results = _arviz().from_dict(**data, dims=dims, coords=coords)
    if log_prior:  # ArviZ 0.x's from_dict drops the groups it does not know, log_prior among them
        results.add_groups({"log_prior": log_prior}, dims=dims, coords=coords)
    return results


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


def has_pointwise_log_likelihood(results: Any) -> bool:
    """Whether the results hold one log-likelihood variable over data points [chain, draw, point, ...], which LOO
    and its Pareto k need. A plate-less likelihood (one multivariate observation) has one term per draw: nothing
    to leave out."""
    if "log_likelihood" not in groups(results):
        return False
    variables = list(get_group(results, "log_likelihood").data_vars.values())
    return len(variables) == 1 and variables[0].ndim > 2


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


def mcse(data: Any, method: str = "mean", var_names: Sequence[str] | None = None, prob: float | None = None):
    """Monte Carlo standard error of the posterior ``method`` ("mean", "sd", "median", or "quantile" at ``prob``);
    same arguments as ``ess``."""
    results, array_input = _as_results(data)
    var_names = _check_var_names(results, "posterior", var_names)
    quantile = {} if prob is None else {"prob": prob}
    with _without_numba():
        values = _arviz().mcse(results, var_names=var_names, method=method, **quantile)
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
