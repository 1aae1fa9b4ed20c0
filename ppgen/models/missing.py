"""Missing values of observed data, imputed by the samplers.

A NaN (an empty CSV cell, a JSON null, a TOML nan) in the data that a likelihood observes directly (``y = { dist =
"Normal(mu, sigma)", plate = "obs", observed = "y" }`` with y[3] missing) makes that entry a parameter. The latent
site ``y_missing`` [number missing], improper uniform on the distribution's support, holds the missing entries,
and the likelihood scores the data completed with them: their density is the likelihood's, counted once. So the
posterior of the other parameters is that of the observed entries alone, and ``y_missing`` is drawn from the
posterior predictive of the missing entries given each draw (the exact posterior, tested on a conjugate model).
The checks after sampling look at the observed entries only (``cut_to_observed``): posterior predictive p-values,
LOO, plots.

Missing entries are imputed in univariate likelihoods of the ``IMPUTABLE`` families outside time plates, in data
read by nothing else; anywhere else a NaN is an error naming the data (``ppgen.spec.bayes``). A discrete variable
cannot be imputed by NUTS: its missing rows must be dropped.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

from ppgen.errors import SpecError
from ppgen.models.initialization import DENSITY_KEY

__all__ = ["MISSING_SUFFIX", "IMPUTABLE", "missing_site", "sample_missing", "complete", "cut_to_observed"]

MISSING_SUFFIX = "_missing"
# The likelihoods whose missing entries can be imputed: continuous, with a support fixed by the family
IMPUTABLE = ("Normal", "StudentT", "Cauchy", "LogNormal", "Gamma", "InverseGamma", "Exponential", "HalfNormal")
IMPUTABLE += ("HalfCauchy", "Beta")


def missing_site(name: str) -> str:
    """The latent site of an observed variable's missing entries."""
    return name + MISSING_SUFFIX


def sample_missing(backend, name: str, dist_name: str, data: np.ndarray):
    """The latent site ``missing_site(name)`` [number of NaNs in ``data``], improper uniform on the support of
    ``dist_name`` (one of ``IMPUTABLE``); sampled outside the variable's plates, it starts at the median of the
    observed entries."""
    from ppgen.models.constraints import library_of

    library, _ = library_of(backend)
    count = int(np.isnan(data).sum())
    start = backend.asarray(np.full(count, float(np.nanmedian(data))))
    site = library.ImproperUniform(getattr(library, dist_name).support, (count,), ())
    return backend.effects.sample(missing_site(name), site, infer={DENSITY_KEY: library.Delta(start)})


def complete(backend, name: str, obs, data: np.ndarray, imputed):
    """``obs`` [shape] (``data`` as the backend's array) with its NaN entries replaced by ``imputed`` [number
    missing], in order."""
    if tuple(obs.shape) != data.shape:
        raise SpecError(f"variables.{name}: missing values cannot be imputed in a subsampled plate (use NUTS or SVI)")
    flat_mask = np.isnan(data).reshape(-1)
    missing, observed = np.flatnonzero(flat_mask), np.flatnonzero(~flat_mask)
    order = np.empty(flat_mask.size, dtype=np.int64)  # completed = concatenate([observed, imputed])[order]
    order[observed], order[missing] = np.arange(len(observed)), len(observed) + np.arange(len(missing))
    values = obs.reshape(-1)[backend.asarray(observed)]
    completed = backend.concatenate([values, imputed])[backend.asarray(order)]
    return completed.reshape(tuple(obs.shape))


def cut_to_observed(variables: Mapping[str, Any], masks: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """``variables`` (name -> [chain, draw, *shape] or [*shape]) with each imputed variable's values cut to its
    observed entries, [chain, draw, observed] or [observed] (``masks``: True where missing)."""
    out = {}
    for name, value in variables.items():
        if name in masks:
            mask = masks[name]
            value = np.asarray(value)
            flat = value.reshape(*value.shape[: value.ndim - mask.ndim], -1)
            value = flat[..., ~mask.reshape(-1)]
        out[name] = value
    return out
