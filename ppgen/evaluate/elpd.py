"""Expected log pointwise predictive density: PSIS-LOO, WAIC and model comparison by ArviZ, on ArviZ 0.x and 1.x
alike (Vehtari, Gelman & Gabry 2017, arXiv:1507.04544); and the Pareto-smoothed importance weights they rest on
(``psis``)."""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ppgen.errors import SpecError
from ppgen.evaluate.inference_data import (
    _ARVIZ_0_DEPRECATIONS,
    _PARETO_WARNING,
    _arviz,
    _is_v1,
    _quiet,
    get_group,
)

__all__ = [
    "COMPARE_COLUMNS",
    "ElpdEstimate",
    "reliable_k",
    "psis",
    "loo",
    "loo_pit",
    "waic",
    "waic_from_log_likelihood",
    "compare",
]

COMPARE_COLUMNS = ("rank", "elpd", "p", "elpd_diff", "weight", "se", "dse", "warning")

_SAMPLE_DIMS = ("chain", "draw")
# Log weights that differ by less are equal up to rounding (log densities of float64 computations): no tail to fit.
EQUAL_LOG_WEIGHTS = 1e-8
_WAIC_WARNING = "For one or more samples the posterior variance"  # ArviZ 0.x's, reported by ppgen's checks instead


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


def reliable_k(num_samples: int) -> float:
    """The Pareto k above which a point's PSIS estimate from ``num_samples`` draws is unreliable, min(1 - 1/log10(S),
    0.7) (Vehtari et al. 2024, arXiv:1507.02646); 0.7 for a single draw, where the formula has no meaning."""
    return min(1 - 1 / math.log10(num_samples), 0.7) if num_samples > 1 else 0.7


def psis(log_weights: np.ndarray) -> tuple[np.ndarray, float]:
    """Pareto-smoothed importance sampling (Vehtari et al. 2024, arXiv:1507.02646) of independent draws with log
    weights [S] (finite): (smoothed log weights [S], normalized to sum to one; Pareto k of the weights' tail). Weights
    all equal (the proposal is the target up to a constant; to within ``EQUAL_LOG_WEIGHTS``) have no tail: k = -inf
    (ArviZ 0.x says inf, and fits rounding errors)."""
    log_weights = np.asarray(log_weights, dtype=float)
    if np.ptp(log_weights) < EQUAL_LOG_WEIGHTS:
        return np.full(log_weights.shape, -math.log(log_weights.size)), -math.inf
    with _quiet(_PARETO_WARNING), np.errstate(over="ignore", divide="ignore"):
        if _is_v1():
            from arviz_stats.base import array_stats

            smoothed, k = array_stats.psislw(log_weights, r_eff=1.0)
        else:
            smoothed, k = _arviz().psislw(log_weights, reff=1.0)
    return np.asarray(smoothed), float(k)


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
    # The generalized Pareto fit weighs its candidate shapes by 1 / sum(exp(...)), which overflows to a weight of 0
    # for a poor candidate: right, but numpy warns of it (ArviZ's numba version, which ppgen turns off, is silent).
    with _quiet(_PARETO_WARNING), np.errstate(over="ignore"):
        estimate = _arviz().loo(results, pointwise=True, var_name=var_name)
    if _is_v1():
        elpd, p, pointwise, pareto_k = estimate.elpd, estimate.p, estimate.elpd_i, estimate.pareto_k
        num_samples = estimate.n_samples
    else:
        elpd, p, pointwise, pareto_k = (estimate[key] for key in ("elpd_loo", "p_loo", "loo_i", "pareto_k"))
        num_samples = estimate["n_samples"]
    pointwise, pareto_k = np.asarray(pointwise).ravel(), np.asarray(pareto_k).ravel()
    good_k = reliable_k(int(num_samples))
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


def loo_pit(results: Any, var_name: str | None = None) -> np.ndarray:
    """LOO-PIT values [n]: each observed point's quantile in its leave-one-out predictive distribution, P(y_rep_i <=
    y_i | y_-i), from the ``posterior_predictive`` replicates weighted by PSIS-LOO (Gabry et al. 2019,
    arXiv:1709.01449, section 5). Uniform on (0, 1) when the model is calibrated and the data continuous."""
    var_name = _log_likelihood_name(results, var_name)
    with _quiet(_PARETO_WARNING), np.errstate(over="ignore"):
        if _is_v1():
            values = _arviz().loo_pit(results, var_names=[var_name])[var_name]
        else:
            values = _arviz().loo_pit(results, y=var_name)
    return np.asarray(values, dtype=float).ravel()


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
            table = _arviz().compare(dict(named_results), method="stacking", var_name=var_name, round_to="none")
            table["warning"] = table["diag_elpd"].fillna("").astype(str).str.len() > 0
            table["elpd_diff"] = table["elpd_diff"].abs()  # ArviZ 1.x counts worse models' differences as < 0
        else:
            table = _arviz().compare(dict(named_results), ic="loo", method="stacking", var_name=var_name)
            table = table.rename(columns={"elpd_loo": "elpd", "p_loo": "p"})
    table = table[list(COMPARE_COLUMNS)].copy()
    table["warning"] = table["warning"].astype(bool)
    return table.sort_values("rank")
