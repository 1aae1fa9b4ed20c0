"""Checks of a model's numbers before it runs, in the spec's terms: distribution parameters outside their domain
(``Normal(0, -1)``) and observed data outside its likelihood's support (a Poisson count of 1.5).

The rules are the libraries' (Pyro's and NumPyro's constraints), the looser of the two where they differ, so that
a spec valid for either is never refused. Parameters are checked where they are constants or data; observed
values where they are data.
"""

from collections.abc import Callable

import numpy as np

from ppgen.errors import SpecError
from ppgen.spec.bayes import BayesSpec

__all__ = ["is_checked", "check_parameters", "check_observed_support"]

Rule = tuple[str, Callable[[np.ndarray], np.ndarray]]  # what the values must be, in words; elementwise test

_POSITIVE: Rule = ("> 0", lambda x: x > 0)
_NONNEGATIVE: Rule = (">= 0", lambda x: x >= 0)
_PROBABILITY: Rule = ("in [0, 1]", lambda x: (x >= 0) & (x <= 1))
_COUNT: Rule = ("a non-negative integer", lambda x: (x >= 0) & (x % 1 == 0))
_BINARY: Rule = ("0 or 1", lambda x: (x == 0) | (x == 1))

PARAMETER_RULES: dict[str, Rule] = {
    "scale": _POSITIVE,
    "df": _POSITIVE,
    "rate": _POSITIVE,
    "concentration": _POSITIVE,
    "concentration1": _POSITIVE,
    "concentration0": _POSITIVE,
    "probs": _PROBABILITY,
    "total_count": _COUNT,
}
DISTRIBUTION_PARAMETER_RULES: dict[tuple[str, str], Rule] = {  # where a distribution differs from the above
    ("Poisson", "rate"): _NONNEGATIVE,
    ("NegativeBinomial", "total_count"): _NONNEGATIVE,
    ("Categorical", "probs"): _NONNEGATIVE,  # a row's sum is the library's check
}
SUPPORTS: dict[str, Rule] = {  # supports that no parameter moves (Binomial's and Categorical's upper ends do)
    "Poisson": _COUNT,
    "NegativeBinomial": _COUNT,
    "Binomial": _COUNT,
    "Categorical": _COUNT,
    "Bernoulli": _BINARY,
    "HalfNormal": _NONNEGATIVE,
    "HalfCauchy": _NONNEGATIVE,
    "HalfStudentT": _NONNEGATIVE,
    "Exponential": _NONNEGATIVE,
    "Gamma": _NONNEGATIVE,
    "LogNormal": _POSITIVE,
    "InverseGamma": _POSITIVE,
    "Beta": _PROBABILITY,
}


def is_checked(distribution: str, param: str) -> bool:
    """Whether ``check_parameters`` has a rule for a distribution's parameter."""
    return (
        (distribution, param) in DISTRIBUTION_PARAMETER_RULES
        or param in PARAMETER_RULES
        or (distribution == "Uniform" and param in ("low", "high"))
    )


def check_parameters(variable: str, distribution: str, params: dict[str, np.ndarray], note: str = "") -> None:
    """SpecError naming ``variables.<variable>.dist``, the parameter, the first bad value and its index (and
    ``note``), unless each of the given parameters (numpy arrays or numbers) lies in its domain, and a Uniform's
    low < high."""
    for param, value in params.items():
        rule = DISTRIBUTION_PARAMETER_RULES.get((distribution, param), PARAMETER_RULES.get(param))
        if rule is None:
            continue
        value = np.asarray(value, dtype=float)
        bad = _first_bad(rule[1](value))
        if bad is not None:
            raise SpecError(
                f"variables.{variable}.dist: {distribution}'s {param} must be {rule[0]}, got"
                f" {_number(value[bad])}{_at(bad)}{note}"
            )
    if distribution == "Uniform" and "low" in params and "high" in params:
        low, high = np.broadcast_arrays(np.asarray(params["low"], float), np.asarray(params["high"], float))
        bad = _first_bad(low < high)
        if bad is not None:
            raise SpecError(
                f"variables.{variable}.dist: Uniform's low must be < high, got low = {_number(low[bad])} and"
                f" high = {_number(high[bad])}{_at(bad)}{note}"
            )


def check_observed_support(spec: BayesSpec) -> None:
    """SpecError naming the variable, the first value outside its likelihood's support and its index, for each
    likelihood term that observes a data key directly."""
    for name, key in spec.observed.items():
        variable = spec.variables[name]
        rule = SUPPORTS.get(variable.dist.name) if variable.dist is not None and key in spec.data else None
        if rule is None:
            continue
        values = spec.data[key]
        bad = _first_bad(rule[1](values))
        if bad is not None:
            raise SpecError(
                f"variables.{name}.observed: data {key!r} holds {_number(values[bad])}{_at(bad)}, outside the"
                f" support of {variable.dist.name} (values must be {rule[0]})"
            )


def _first_bad(ok: np.ndarray) -> tuple[int, ...] | None:
    """The index of the first False in ``ok``, or None when all hold."""
    ok = np.asarray(ok)
    if ok.all():
        return None
    return tuple(int(i) for i in np.unravel_index(int(np.argmin(ok)), ok.shape))


def _at(index: tuple[int, ...]) -> str:
    if not index:
        return ""
    return f" at index {index[0]}" if len(index) == 1 else f" at index {index}"


def _number(value) -> str:
    return f"{float(value):g}"
