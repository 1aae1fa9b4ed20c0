"""Posterior checks: a summary with convergence warnings, posterior predictive checks, LOO/WAIC and model comparison.

Every check returns its numbers and a list of warnings, one line each, naming the variable at fault; a run writes
the lines to ``summary.txt`` (``format_summary``). Results are read through ``ppgen.evaluate.inference_data`` and
``ppgen.evaluate.elpd``, so the checks work on ArviZ 0.x and 1.x alike.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ppgen.errors import DataError, SpecError
from ppgen.evaluate import elpd, inference_data
from ppgen.evaluate.sensitivity import SENSITIVITY_THRESHOLD

__all__ = [
    "RHAT_THRESHOLD",
    "ESS_PER_CHAIN",
    "PPC_STATISTICS",
    "PPC_EXTREME",
    "WAIC_VARIANCE_LIMIT",
    "TREE_DEPTH_FRACTION",
    "MIN_STEP_SIZE",
    "STEP_SIZE_RATIO",
    "BFMI_THRESHOLD",
    "MIN_LOO_DRAWS",
    "LOO_PIT_ALPHA",
    "num_draws",
    "summarize",
    "bfmi",
    "format_summary",
    "ppc",
    "interval_coverage",
    "loo",
    "loo_pit",
    "waic",
    "compare",
]

# Vehtari et al. (2021), "Rank-normalization, folding, and localization", arXiv:1903.08008, section 4:
# trust the draws when R-hat < 1.01 and bulk and tail ESS exceed 100 per chain.
RHAT_THRESHOLD = 1.01
ESS_PER_CHAIN = 100
# Posterior predictive p-values outside [0.05, 0.95] flag a statistic the model does not reproduce (BDA3, ch. 6).
PPC_EXTREME = 0.05
# Vehtari, Gelman & Gabry (2017), arXiv:1507.04544, section 2.2: WAIC is unreliable past this posterior variance.
WAIC_VARIANCE_LIMIT = 0.4
# NUTS draws at the maximum tree depth had their trajectories cut short; past 1% of draws the chains crawl.
TREE_DEPTH_FRACTION = 0.01
# With the mass matrix adapted to the posterior's scale, NUTS needs about 1 / step size leapfrog steps to cross
# the posterior: below 1e-3 that is more than the 1023 steps of the default maximum tree depth (10).
MIN_STEP_SIZE = 1e-3
# A chain whose adapted step size is this many times below the median chain's has adapted to a harder region.
STEP_SIZE_RATIO = 10
# Betancourt (2016), arXiv:1604.00695, section 6.1, and Stan: E-BFMI below 0.3 means the momentum resampling
# explores the energy distribution poorly.
BFMI_THRESHOLD = 0.3
# PSIS-LOO fits a generalized Pareto distribution to the largest 20% of the S importance ratios of each point; ArviZ
# 1.x needs 5 of them (S >= 25), ArviZ 0.x fails outright on 1 draw, and the threshold for a reliable Pareto k,
# 1 - 1/log10(S) (arXiv:1507.02646), is 0.28 at S = 25: below that no estimate could be trusted.
MIN_LOO_DRAWS = 25
# LOO-PIT values of a calibrated model for continuous data are uniform (Gabry et al. 2019, arXiv:1709.01449): a
# Kolmogorov-Smirnov test rejecting uniformity at this level flags a miscalibrated predictive distribution (a
# well-specified model warns in 1% of data sets).
LOO_PIT_ALPHA = 0.01
# The summary's sensitivity table lists at most this many parameters, the most sensitive first; metrics.json has all.
SENSITIVITY_ROWS = 10
COMPONENTS = ["prior", "likelihood"]


def _quantile(q: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda values: np.quantile(values, q, axis=-1)


# Test statistics T(y), each reducing the last axis (the data points) of an array [..., n].
PPC_STATISTICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda values: np.mean(values, axis=-1),
    "sd": lambda values: np.std(values, axis=-1),
    "var": lambda values: np.var(values, axis=-1),
    "min": lambda values: np.min(values, axis=-1),
    "max": lambda values: np.max(values, axis=-1),
    "range": lambda values: np.ptp(values, axis=-1),
    "median": lambda values: np.median(values, axis=-1),
    "q05": _quantile(0.05),
    "q25": _quantile(0.25),
    "q75": _quantile(0.75),
    "q95": _quantile(0.95),
    "iqr": lambda values: np.quantile(values, 0.75, axis=-1) - np.quantile(values, 0.25, axis=-1),
    "skew": lambda values: stats.skew(values, axis=-1),
    "kurtosis": lambda values: stats.kurtosis(values, axis=-1),
    "fraction_zeros": lambda values: np.mean(values == 0, axis=-1),
}


# --------------------------------------------------------------------------------------------------------- summary


def summarize(
    results: Any, var_names: Sequence[str] | None = None, max_tree_depth: int | None = None
) -> tuple[pd.DataFrame, list[str]]:
    """Posterior summary (mean, sd, 94% HDI, MCSE, bulk and tail ESS, R-hat) and convergence warnings.

    Warns, one line per continuous variable and problem, when R-hat > 1.01 or bulk or tail ESS < 100 per chain
    (Vehtari et al. 2021, arXiv:1903.08008), and once per sampler problem its ``sample_stats`` show: divergent
    transitions, more than 1% of draws at ``max_tree_depth`` (the NUTS setting; no check without it), a collapsed
    step size (``MIN_STEP_SIZE``, ``STEP_SIZE_RATIO``), E-BFMI < 0.3 (``bfmi``). Only HMC and NUTS report
    ``diverging``; without it, none of these is checked. With one chain, one line says that R-hat (which compares
    chains) was not computed.

    Returns:
        (table with ``inference_data.SUMMARY_COLUMNS``, indexed by ``name`` or ``name[index]``; warnings)
    """
    table = inference_data.summary(results, var_names=var_names)
    posterior = inference_data.get_group(results, "posterior")
    num_chains = posterior.sizes["chain"]
    min_ess = ESS_PER_CHAIN * num_chains
    lines = []
    if num_chains == 1:
        lines.append("R-hat: not computed, it compares 2 or more chains (inference.num_chains = 1)")
    variables = table.index.str.split("[", n=1).str[0]
    for name in dict.fromkeys(variables):
        if np.issubdtype(posterior[name].dtype, np.integer):
            continue  # a discrete variable's draws (mostly one value each, or a most likely value): no R-hat or ESS
        rows = table[variables == name]
        if num_chains > 1:
            lines += _rhat_warnings(name, rows)
        for kind in ("bulk", "tail"):
            lines += _ess_warnings(name, rows, kind, min_ess, num_chains)
    if "sample_stats" in inference_data.groups(results):
        lines += _sampler_warnings(inference_data.get_group(results, "sample_stats"), max_tree_depth)
    return table, lines


def num_draws(results: Any) -> int:
    """Posterior draws over all chains."""
    posterior = inference_data.get_group(results, "posterior")
    return posterior.sizes["chain"] * posterior.sizes["draw"]


def bfmi(energy: np.ndarray) -> np.ndarray:
    """E-BFMI per chain, sum_t (E_t - E_t-1)^2 / sum_t (E_t - mean E)^2, as Stan computes it.

    Args:
        energy: the Hamiltonian at each draw [chain, draw].
    Returns:
        [chain]; Betancourt (2016), arXiv:1604.00695, eq. 6.1.
    """
    energy = np.asarray(energy, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):  # a stuck chain (constant energy) has none: NaN
        centred = energy - energy.mean(axis=1, keepdims=True)
        return np.sum(np.diff(energy, axis=1) ** 2, axis=1) / np.sum(centred**2, axis=1)


def _elements(rows: pd.DataFrame, mask: pd.Series) -> str:
    labels = list(rows.index[mask])
    if len(rows) == 1:
        return ""
    shown = ", ".join(labels[:3]) + (", ..." if len(labels) > 3 else "")
    return f" in {len(labels)} of {len(rows)} elements ({shown})"


def _rhat_warnings(name: str, rows: pd.DataFrame) -> list[str]:
    r_hat = rows["r_hat"]
    lines = []
    undefined = ~np.isfinite(r_hat)
    if undefined.any():
        lines.append(f"{name}: R-hat is undefined{_elements(rows, undefined)}: constant or non-finite draws")
    high = r_hat > RHAT_THRESHOLD
    if high.any():
        lines.append(
            f"{name}: R-hat {r_hat[high].max():.3f} > {RHAT_THRESHOLD}{_elements(rows, high)}: "
            "the chains disagree; run longer or reparameterize"
        )
    return lines


def _ess_warnings(name: str, rows: pd.DataFrame, kind: str, min_ess: int, num_chains: int) -> list[str]:
    ess = rows[f"ess_{kind}"]
    low = ess < min_ess
    if not low.any():
        return []
    return [
        f"{name}: {kind} ESS {ess[low].min():.0f} < {min_ess} (100 per chain x {num_chains}){_elements(rows, low)}: "
        f"too few effective draws for reliable {'means' if kind == 'bulk' else 'intervals'}; run longer"
    ]


def _per_chain(sample_stats: Any, name: str) -> np.ndarray:
    return np.asarray(sample_stats[name].transpose("chain", "draw").values)


def _chains(mask: np.ndarray) -> str:
    return ", ".join(str(chain) for chain in np.flatnonzero(mask))


def _sampler_warnings(sample_stats: Any, max_tree_depth: int | None) -> list[str]:
    if "diverging" not in sample_stats:  # not HMC or NUTS: Langevin step sizes may be small by design (ULA, SGLD)
        return []
    lines = _divergence_warnings(sample_stats)
    if "tree_depth" in sample_stats and max_tree_depth is not None:
        lines += _tree_depth_warnings(_per_chain(sample_stats, "tree_depth"), max_tree_depth)
    if "step_size" in sample_stats:
        lines += _step_size_warnings(np.median(_per_chain(sample_stats, "step_size"), axis=1))
    if "energy" in sample_stats:
        lines += _bfmi_warnings(bfmi(_per_chain(sample_stats, "energy")))
    return lines


def _divergence_warnings(sample_stats: Any) -> list[str]:
    diverging = np.asarray(sample_stats["diverging"].values, dtype=bool)
    count = int(diverging.sum())
    if count == 0:
        return []
    return [
        f"sampler: {count} divergent transitions ({count / diverging.size:.2%} of {diverging.size} draws): "
        "the posterior may be biased; reparameterize or raise target_accept_prob"
    ]


def _tree_depth_warnings(tree_depth: np.ndarray, max_tree_depth: int) -> list[str]:
    count = int(np.sum(tree_depth >= max_tree_depth))
    if count <= TREE_DEPTH_FRACTION * tree_depth.size:
        return []
    return [
        f"sampler: {count} transitions ({count / tree_depth.size:.2%} of {tree_depth.size} draws) hit the maximum "
        f"tree depth {max_tree_depth}: their trajectories were cut short and the chains explore slowly; raise "
        "inference.max_tree_depth, or reparameterize; a dense mass matrix (inference.mass = 'dense') helps "
        "correlated posteriors"
    ]


def _step_size_warnings(step_size: np.ndarray) -> list[str]:
    median = np.median(step_size)
    collapsed = (step_size < MIN_STEP_SIZE) | (step_size * STEP_SIZE_RATIO < median)
    if not collapsed.any():
        return []
    return [
        f"sampler: the adapted step size collapsed in chains {_chains(collapsed)} (smallest "
        f"{step_size[collapsed].min():.2g}, median chain {median:.2g}; warn below {MIN_STEP_SIZE:g} or "
        f"{STEP_SIZE_RATIO}x below the median): the chains met regions of high curvature; reparameterize, check "
        "for funnels (non-centred scales), or raise inference.num_warmup"
    ]


def _bfmi_warnings(values: np.ndarray) -> list[str]:
    low = values < BFMI_THRESHOLD
    if not low.any():
        return []
    return [
        f"sampler: E-BFMI {values[low].min():.2f} < {BFMI_THRESHOLD} in chains {_chains(low)}: the momentum "
        "resampling explores the energy poorly; reparameterize (e.g. non-centred) or use a dense mass matrix "
        "(inference.mass = 'dense')"
    ]


def format_summary(
    table: pd.DataFrame | None,
    warnings: Sequence[str],
    ppc: Mapping | None = None,
    loo: Mapping | None = None,
    loo_pit: Mapping | None = None,
    sensitivity: Mapping | None = None,
    coverage: Mapping | None = None,
    predictive: str = "posterior",
) -> str:
    """The text of ``summary.txt``: the summary table, the ``predictive`` ("posterior" or "prior") predictive
    p-values (``ppc``'s result) and interval coverage (``interval_coverage``'s), the LOO estimate (``loo``'s), the
    LOO-PIT test (``loo_pit``'s) and the power-scaling sensitivity (``sensitivity.sensitivity``'s) when given, then
    the warnings (or a line saying there are none)."""
    text = "" if table is None else table.to_string(float_format=lambda value: f"{value:.4g}")
    if ppc:
        text += (
            f"\n\n{predictive.capitalize()} predictive p-values, P(T(y_rep) > T(y)) (extreme outside [{PPC_EXTREME},"
            f" {1 - PPC_EXTREME}]):\n"
        )
        for name, statistics in ppc.items():
            text += (
                f"  {name}: " + ", ".join(f"{key} {check['p_value']:.3f}" for key, check in statistics.items()) + "\n"
            )
        text = text.rstrip("\n")
    for name, covered in (coverage or {}).items():
        text += (
            f"\n  {name}: {covered['covered']} of {covered['num_data']} data points ({covered['share']:.0%}) in their"
            f" central {covered['prob']:.0%} {predictive} predictive interval"
        )
    if loo:
        counts = loo["pareto_k"]
        text += (
            f"\n\nPSIS-LOO: elpd_loo {loo['elpd_loo']:.2f} (se {loo['se']:.2f}), p_loo {loo['p_loo']:.2f}, over"
            f" {loo['num_data']} data points; Pareto k (max {loo['max_k']:.2f}): {counts['good']} good (<="
            f" {loo['good_k']:.2f}), {counts['bad']} bad, {counts['very_bad']} very bad (> 1)"
        )
    if loo_pit:
        text += (
            f"\nLOO-PIT uniformity: Kolmogorov-Smirnov D {loo_pit['ks_statistic']:.3f}, p = {loo_pit['p_value']:.3f}"
            f" (miscalibrated below {LOO_PIT_ALPHA})"
        )
    if sensitivity:
        text += "\n\n" + _sensitivity_table(sensitivity)
    text = text.lstrip("\n")
    if warnings:
        return text + "\n\nWarnings:\n" + "".join(f"- {line}\n" for line in warnings)
    return text + "\n\nNo warnings.\n"


def _sensitivity_table(sensitivity: Mapping[str, Mapping[str, Any]]) -> str:
    """The power-scaling table of the summary: the most sensitive ``SENSITIVITY_ROWS`` parameters (diagnosed
    ones first, then by the larger sensitivity), and how many more metrics.json holds."""
    rows = pd.DataFrame.from_dict(sensitivity, orient="index")
    rows["diagnosis"] = [value["diagnosis"] or "-" for value in sensitivity.values()]
    order = sorted(rows.index, key=lambda name: (rows.at[name, "diagnosis"] == "-", -rows.loc[name, COMPONENTS].max()))
    shown = rows.loc[order[:SENSITIVITY_ROWS]]
    more = len(rows) - len(shown)
    return (
        f"Power-scaling sensitivity (Kallioinen et al. 2023; notable above {SENSITIVITY_THRESHOLD}):\n"
        + shown.to_string(float_format=lambda value: f"{value:.3f}")
        + (f"\n({more} more parameters in metrics.json)" if more else "")
    )


# ------------------------------------------------------------------------------------ posterior predictive checks


def ppc(
    results: Any,
    statistics: Sequence[str] = ("mean", "sd", "min", "max"),
    var_names: Sequence[str] | None = None,
    group: str = "posterior_predictive",
) -> tuple[dict[str, dict[str, dict[str, float]]], list[str]]:
    """Posterior (or, with ``group`` "prior_predictive", prior) predictive checks with Bayesian p-values
    p = P(T(y_rep) > T(y) | y) + P(T(y_rep) = T(y) | y) / 2 (Gelman et al., BDA3, 6.3, with ties counted half:
    the mid-p-value of Lancaster 1961, doi:10.1080/01621459.1961.10482105). Ties happen for discrete data: the
    maximum of binary outcomes is 1 in almost every replicate, and counting ties in full would give p = 1 and a
    false alarm; for continuous statistics ties have probability 0 and the two definitions agree.

    Args:
        results: with ``observed_data`` y [...] and ``posterior_predictive`` y_rep [chain, draw, ...].
        statistics: names from ``PPC_STATISTICS``, each computed over all data points of a variable.
        var_names: observed variables to check (default: every one that has replicates).
    Returns:
        ({variable: {statistic: {"observed", "replicated_mean", "p_value"}}}, warnings for p outside
        [0.05, 0.95]). Of the prior predictive, such a p-value says that the prior rarely produces data sets like the
        observed one.
    """
    for name in statistics:
        if name not in PPC_STATISTICS:
            raise SpecError(f"statistics: unknown test statistic {name!r} (known: {', '.join(PPC_STATISTICS)})")
    observed = inference_data.get_group(results, "observed_data")
    replicated = inference_data.get_group(results, group)
    if var_names is None:
        var_names = [name for name in observed.data_vars if name in replicated.data_vars]
        if not var_names:
            raise DataError(f"{group}: no variable shares a name with observed_data")
    checks, lines = {}, []
    for name in var_names:
        if name not in observed.data_vars:
            raise SpecError(f"var_names: {name!r} is not an observed variable ({', '.join(observed.data_vars)})")
        if name not in replicated.data_vars:
            raise DataError(f"{group}: no replicates of observed variable {name!r}")
        y = np.asarray(observed[name].values, dtype=float).ravel()
        y_rep = replicated[name].transpose("chain", "draw", ...).values.astype(float)
        y_rep = y_rep.reshape(-1, math.prod(y_rep.shape[2:]))
        if y_rep.shape[1] != y.size:
            raise DataError(f"{group}[{name!r}] has {y_rep.shape[1]} values per draw, y has {y.size}")
        checks[name] = {}
        for statistic in statistics:
            check = _p_value(PPC_STATISTICS[statistic], y, y_rep)
            checks[name][statistic] = check
            if not PPC_EXTREME <= check["p_value"] <= 1 - PPC_EXTREME:
                lines.append(
                    f"{name}: {group.replace('_', ' ')} p-value of {statistic} is {check['p_value']:.3f} "
                    f"(observed {check['observed']:.4g}, replicated mean {check['replicated_mean']:.4g}): "
                    + ("the model does not reproduce" if group == "posterior_predictive" else "the prior rarely gives")
                    + " this statistic"
                )
    return checks, lines


def interval_coverage(
    results: Any, group: str = "posterior_predictive", prob: float = 0.9
) -> dict[str, dict[str, float]]:
    """How many observed data points lie in their central ``prob`` predictive interval (the ``group`` replicates'
    quantiles (1 - prob) / 2 and (1 + prob) / 2, point by point).

    Returns:
        {variable: {"prob", "covered", "num_data", "share"}} for each observed variable with replicates, binary ones
        (two values or fewer) left out.
    """
    observed = inference_data.get_group(results, "observed_data")
    replicated = inference_data.get_group(results, group)
    coverage = {}
    for name in (name for name in observed.data_vars if name in replicated.data_vars):
        y = np.asarray(observed[name].values, dtype=float).ravel()
        y_rep = replicated[name].transpose("chain", "draw", ...).values.reshape(-1, y.size)
        if np.unique(y_rep).size <= 2:  # binary data: every interval that holds both values covers every point
            continue
        low, high = np.quantile(y_rep, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
        covered = int(np.sum((low <= y) & (y <= high)))
        coverage[name] = {"prob": prob, "covered": covered, "num_data": y.size, "share": covered / y.size}
    return coverage


def _p_value(statistic: Callable[[np.ndarray], np.ndarray], y: np.ndarray, y_rep: np.ndarray) -> dict[str, float]:
    observed = float(statistic(y))
    replicated = statistic(y_rep)
    return {
        "observed": observed,
        "replicated_mean": float(np.mean(replicated)),
        "p_value": float(np.mean(replicated > observed) + np.mean(replicated == observed) / 2),
    }


# ------------------------------------------------------------------------------------- predictive accuracy (ELPD)


def loo(results: Any, var_name: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """PSIS-LOO estimate of the expected log predictive density (Vehtari, Gelman & Gabry 2017, arXiv:1507.04544).

    Returns:
        ({"elpd_loo", "se", "p_loo", "num_data", "num_samples", "good_k", "max_k", "pareto_k": {"good", "bad",
        "very_bad"} counts}, warnings). k above good_k = min(1 - 1/log10(S), 0.7) makes a point's estimate
        unreliable (Vehtari et al. 2024, arXiv:1507.02646); k > 1 makes it unusable. With fewer than
        ``MIN_LOO_DRAWS`` draws: ({}, a warning that says so).
    """
    draws = num_draws(results)
    if draws < MIN_LOO_DRAWS:
        return {}, [
            f"loo: skipped, {draws} posterior draws are too few (PSIS-LOO needs {MIN_LOO_DRAWS}: below that no Pareto k"
            " can be trusted); draw more (inference.num_samples, inference.num_chains)"
        ]
    estimate = elpd.loo(results, var_name=var_name)
    pareto_k = estimate.pareto_k
    good_k = estimate.good_k
    counts = {
        "good": int(np.sum(pareto_k <= good_k)),
        "bad": int(np.sum((pareto_k > good_k) & (pareto_k <= 1))),
        "very_bad": int(np.sum(pareto_k > 1)),
    }
    summary = {
        "elpd_loo": estimate.elpd,
        "se": estimate.se,
        "p_loo": estimate.p,
        "num_data": estimate.num_data,
        "num_samples": estimate.num_samples,
        "good_k": good_k,
        "max_k": float(np.max(pareto_k)),
        "pareto_k": counts,
    }
    lines = []
    unreliable = counts["bad"] + counts["very_bad"]
    if unreliable:
        lines.append(
            f"loo: {unreliable} of {estimate.num_data} data points have Pareto k > {good_k:.2f} "
            f"({counts['very_bad']} > 1, max {summary['max_k']:.2f}): their LOO estimates are unreliable; "
            "check for influential observations or use a more robust model"
        )
    return summary, lines


def loo_pit(results: Any, var_name: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """LOO-PIT uniformity: a Kolmogorov-Smirnov test of the LOO-PIT values (``elpd.loo_pit``) against U(0, 1).

    A U shape (values piled at 0 and 1) says the predictive distributions are too narrow, a hump too wide, a slope
    biased. A discrete likelihood (whole-number replicates) is not tested: its PIT values are not uniform even under
    the true model.

    Returns:
        ({"ks_statistic", "p_value", "num_data"}, a warning when p < ``LOO_PIT_ALPHA``); ({}, []) for a discrete
        likelihood.
    """
    name = elpd._log_likelihood_name(results, var_name)
    y_rep = inference_data.get_group(results, "posterior_predictive")[name].values
    if np.all(y_rep == np.round(y_rep)):  # replicates of a discrete likelihood (the data may be whole numbers anyway)
        return {}, []
    values = elpd.loo_pit(results, name)
    test = stats.kstest(values, "uniform")
    summary = {"ks_statistic": float(test.statistic), "p_value": float(test.pvalue), "num_data": values.size}
    lines = []
    if test.pvalue < LOO_PIT_ALPHA:
        shape = _pit_shape(values)
        lines.append(
            f"{name}: LOO-PIT values are not uniform (Kolmogorov-Smirnov p = {test.pvalue:.2g} < {LOO_PIT_ALPHA},"
            f" {values.size} data points; {shape}): the predictive distributions are miscalibrated; see loo_pit.png"
        )
    return summary, lines


def _pit_shape(values: np.ndarray) -> str:
    """What the LOO-PIT values' departure from uniform suggests, from the share in the outer fifths."""
    tails, middle = np.mean((values < 0.1) | (values > 0.9)), np.mean(np.abs(values - 0.5) < 0.1)
    if tails > 0.3:
        return f"{tails:.0%} in the outer 10% tails, 20% expected: predictions too narrow"
    if middle > 0.3:
        return f"{middle:.0%} in the middle 20%, 20% expected: predictions too wide"
    return f"mean {values.mean():.2f}, 0.5 expected: predictions biased"


def waic(results: Any, var_name: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """WAIC estimate of the expected log predictive density (arXiv:1507.04544; prefer ``loo``).

    Returns:
        ({"elpd_waic", "se", "p_waic", "num_data", "num_samples"}, warnings)
    """
    estimate = elpd.waic(results, var_name=var_name)
    summary = {
        "elpd_waic": estimate.elpd,
        "se": estimate.se,
        "p_waic": estimate.p,
        "num_data": estimate.num_data,
        "num_samples": estimate.num_samples,
    }
    lines = []
    if estimate.warning:
        lines.append(
            f"waic: the posterior variance of some pointwise log-likelihoods exceeds {WAIC_VARIANCE_LIMIT}: "
            "WAIC may be unreliable; use LOO"
        )
    return summary, lines


def compare(named_results: Mapping[str, Any], var_name: str | None = None) -> pd.DataFrame:
    """Models ranked by PSIS-LOO elpd (ArviZ ``compare``; Yao et al. 2018, arXiv:1704.02030 for the weights).

    Args:
        named_results: model name -> results with a ``log_likelihood`` group, all over the same data.
    Returns:
        table indexed by model name, best first, with rank, elpd, p, elpd_diff (>= 0, from the best), weight,
        se, dse (se of the difference) and warning (unreliable Pareto k).
    """
    return elpd.compare(named_results, var_name=var_name)
