"""The effects a compiled declarative model calls (plate, sample, deterministic, factor, scan), from Pyro or from
NumPyro: the one part of a backend (``ppgen.models.backends``) that is the probabilistic programming library's.

A time plate's steps (``scan``) are NumPyro's ``scan``, or a loop under ``pyro.markov`` whose step t names its sites
``name__t`` (``ppgen.models.time_steps``); both keep enumerated discrete states to the dims the Markov chain needs.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

__all__ = ["Effects", "pyro_effects", "numpyro_effects"]


@dataclass(frozen=True)
class Effects:
    """The effects a compiled model calls, from one probabilistic programming library.

    Attributes:
        plate: ``(name, size, dim, subsample_size=None)`` -> a plate; with ``subsample_size``, entering it
            gives that many random indices, the same each time.
        sample: ``(name, distribution, obs=None, infer=None)`` -> the site's value; ``infer`` is the site's
            inference config (``{"enumerate": "parallel"}`` for a discrete latent variable).
        deterministic: ``(name, value, event_dim)`` -> value, recorded as a site.
        factor: ``(name, log_density)``: adds ``log_density`` (summed) to the model's log density.
        scan: ``(step, init, length)`` -> outputs stacked [length, ...]: runs ``step(carry, t) -> (carry, outputs)``
            for t = 0, ..., length - 1 (dicts of arrays), the sites of each step recorded as a Markov chain in time.
    """

    plate: Callable[..., AbstractContextManager]
    sample: Callable[..., Any]
    deterministic: Callable[[str, Any, int], Any]
    factor: Callable[[str, Any], None]
    scan: Callable[[Callable, dict, int], dict]


def pyro_effects(dtypes) -> Effects:
    """Pyro's effects, plates on ``dtypes.device`` and observed counts in ``dtypes.dtype``."""
    import pyro

    def plate(name: str, size: int, dim: int, subsample_size: int | None = None):
        return pyro.plate(name, size, subsample_size=subsample_size, dim=dim, device=dtypes.device)

    def sample(name: str, distribution, obs=None, infer=None):
        if obs is not None and not obs.dtype.is_floating_point:
            obs = obs.to(dtypes.dtype)  # torch's discrete log-densities want float counts
        return pyro.sample(name, distribution, obs=obs, infer=infer or {})

    def deterministic(name: str, value, event_dim: int):
        return pyro.deterministic(name, value, event_dim=event_dim)

    return Effects(plate, sample, deterministic, pyro.factor, _pyro_scan)


def numpyro_effects() -> Effects:
    """NumPyro's effects."""
    import numpyro

    def plate(name: str, size: int, dim: int, subsample_size: int | None = None):
        return numpyro.plate(name, size, subsample_size=subsample_size, dim=dim)

    def deterministic(name: str, value, event_dim: int):
        return numpyro.deterministic(name, value)  # NumPyro infers the event dims itself

    return Effects(plate, numpyro.sample, deterministic, numpyro.factor, _numpyro_scan)


def _pyro_scan(step: Callable, init: dict, length: int) -> dict:
    """A loop under ``pyro.markov`` (so that enumerated states need only two dims): step t's sample sites are named
    ``name__t`` (``ppgen.models.time_steps``), and each sampled variable is also recorded stacked, as a deterministic
    site ``name`` [length, ...], like NumPyro's ``scan`` records it."""
    import pyro
    import torch

    from ppgen.models.pyro_steps import StepSites

    carry, outputs, sampled = init, [], {}
    for t in pyro.markov(range(length)):
        with StepSites(t) as sites:
            carry, output = step(carry, t)
        outputs.append(output)
        sampled.update(dict.fromkeys(sites.sampled))
    stacked = {name: torch.stack([output[name] for output in outputs]) for name in (outputs[0] if outputs else {})}
    for name in sampled:
        if name in stacked:
            pyro.deterministic(name, stacked[name], event_dim=stacked[name].ndim)
    return stacked


def _numpyro_scan(step: Callable, init: dict, length: int) -> dict:
    """NumPyro's ``scan`` over t = 0, ..., length - 1 (its sites stacked along a leading time dim)."""
    import jax.numpy as jnp
    from numpyro.contrib.control_flow import scan

    if length == 0:
        return {}
    return scan(step, init, jnp.arange(length))[1]
