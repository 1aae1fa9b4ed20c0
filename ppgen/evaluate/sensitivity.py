"""Prior and likelihood sensitivity by power-scaling (Kallioinen et al. 2023, "Detecting and diagnosing prior and
likelihood sensitivity with power-scaling", arXiv:2107.14054; the R package priorsense).

Raising the prior (or the likelihood) to a power alpha near 1 and reweighting the posterior draws by Pareto-smoothed
importance sampling shows how much the posterior would move: the sensitivity of a parameter is the derivative, in
log alpha, of the cumulative Jensen-Shannon distance between its posterior and the power-scaled one. ArviZ computes
it (``az.psens`` on 0.x, ``az.psense`` on 1.x) from the ``log_prior`` and ``log_likelihood`` groups; no refit. It
costs two PSIS fits per component and one weighted ECDF per parameter element: milliseconds for thousands of draws.
"""

from typing import Any

import numpy as np

from ppgen.evaluate.inference_data import _arviz, _is_v1, get_group, groups

__all__ = ["SENSITIVITY_THRESHOLD", "sensitivity", "can_compute"]

# priorsense's threshold: a power-scaling sensitivity above 0.05 is a notable change of the posterior.
SENSITIVITY_THRESHOLD = 0.05


def sensitivity(results: Any) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Prior and likelihood power-scaling sensitivity of every continuous posterior variable, element by element,
    with priorsense's diagnosis: prior sensitivity above ``SENSITIVITY_THRESHOLD`` with likelihood sensitivity also
    above it is a prior-data conflict, with likelihood sensitivity below it a strong prior or weak likelihood.

    Args:
        results: with ``posterior`` [chain, draw, ...], ``log_prior`` and ``log_likelihood`` groups.
    Returns:
        ({"name" or "name[i, ...]": {"prior", "likelihood", "diagnosis" (None when neither)}}, one warning per
        diagnosis naming its parameters)
    """
    posterior = get_group(results, "posterior")
    var_names = [name for name in posterior.data_vars if not np.issubdtype(posterior[name].dtype, np.integer)]
    prior, likelihood = (_power_scaling(results, component, var_names) for component in ("prior", "likelihood"))
    table, flagged = {}, {"prior-data conflict": [], "strong prior / weak likelihood": []}
    for name in var_names:
        for index in np.ndindex(prior[name].shape):
            label = f"{name}[{', '.join(map(str, index))}]" if index else name
            values = {"prior": float(prior[name][index]), "likelihood": float(likelihood[name][index])}
            diagnosis = None
            if values["prior"] > SENSITIVITY_THRESHOLD:
                conflict = values["likelihood"] > SENSITIVITY_THRESHOLD
                diagnosis = "prior-data conflict" if conflict else "strong prior / weak likelihood"
                flagged[diagnosis].append(label)
            table[label] = {**values, "diagnosis": diagnosis}
    return table, [_warning(diagnosis, labels) for diagnosis, labels in flagged.items() if labels]


def _power_scaling(results: Any, component: str, var_names: list[str]) -> dict[str, np.ndarray]:
    """{variable: sensitivity [...]} to power-scaling ``component`` ("prior" or "likelihood") by alpha in
    [1/1.01, 1.01] (0.x) or [0.99, 1.01] (1.x), ArviZ's defaults."""
    az = _arviz()
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        if _is_v1():
            values = az.psense(results, var_names=var_names, group=component)
        else:
            values = az.psens(results, var_names=var_names, component=component)
    if len(var_names) == 1 and not hasattr(values, "data_vars"):  # ArviZ 0.x: one variable comes as a DataArray
        return {var_names[0]: np.asarray(values.values)}
    return {name: np.asarray(values[name].values) for name in var_names}


def _warning(diagnosis: str, labels: list[str]) -> str:
    shown = ", ".join(labels[:5]) + (f", ... ({len(labels)} in all)" if len(labels) > 5 else "")
    if diagnosis == "prior-data conflict":
        rule = f"prior and likelihood sensitivity > {SENSITIVITY_THRESHOLD}"
        advice = "the prior and the data pull the posterior apart; check the prior against the data"
    else:
        rule = f"prior sensitivity > {SENSITIVITY_THRESHOLD}, likelihood sensitivity <= {SENSITIVITY_THRESHOLD}"
        advice = "the prior outweighs the data here; check that it says what you know"
    return f"sensitivity: {diagnosis} ({rule}) in {shown}: {advice}"


def can_compute(results: Any) -> bool:
    """Whether the results hold what power-scaling needs: posterior, log_prior and log_likelihood groups."""
    return {"posterior", "log_prior", "log_likelihood"} <= set(groups(results))
