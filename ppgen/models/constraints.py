"""Constrained parameters of the model language: a sample site on a support, with a density there.

A variable with ``constraint`` (``CONSTRAINTS``) and/or ``lower``/``upper`` bounds lives on that support: the
site is an ``ImproperUniform(support, batch_shape, event_shape)`` and its density (``dist``, unnormalized as in
Stan; flat without one) is added as a factor. Samplers and autoguides then work in the unconstrained space of
the support's ``biject_to`` transform and add its log-det-Jacobian themselves, on both backends with the same
transforms (sum-to-zero on torch: ``ppgen.models.zero_sum``).

Bounds that depend on other parameters need more: Pyro's ``initialize_model`` and both libraries' autoguides
fix each site's transform from one prototype run, so a support that moves with the parameters would be
mapped with stale bounds. Such a variable (``dependent_bounds=True``) is therefore the latent site
``raw_site_name(name)`` on a fixed support, u in (0, 1) with x = lower + (upper - lower) u, or u > 0 with
x = lower + u (``lower`` only) or x = upper - u (``upper`` only); x is the deterministic site ``name``, and
log(upper - lower) joins the factor. At the same unconstrained point the log density equals that of a sampler
re-deriving the transform of (lower, upper) at every step (as NumPyro's HMC does).
"""

from typing import Any

import numpy as np

from ppgen.errors import SpecError
from ppgen.models.initialization import DENSITY_KEY
from ppgen.spec.constraints import CONSTRAINTS, check_constraint, density_site_name, raw_site_name

__all__ = ["constrained_site", "library_of"]

_EVENT_NDIMS = {"ordered": 1, "positive_ordered": 1, "simplex": 1, "cholesky_corr": 2, "sum_to_zero": 1}
_MIN_SIZE = {"ordered": 1, "positive_ordered": 1, "simplex": 2, "cholesky_corr": 2, "sum_to_zero": 2}


def _check_event_shape(name: str, constraint: str, event_shape: tuple[int, ...]) -> None:
    ndims, size = _EVENT_NDIMS[constraint], _MIN_SIZE[constraint]
    square = ndims == 1 or (len(event_shape) == 2 and event_shape[0] == event_shape[1])
    if len(event_shape) != ndims or not square or min(event_shape) < size:
        raise SpecError(
            f"variables.{name}.shape: constraint {constraint!r} is {CONSTRAINTS[constraint]}, but shape is"
            f" {list(event_shape)}"
        )


def library_of(backend):
    """The distribution library of ``backend`` and its sum-to-zero constraint on vectors."""
    if backend.name == "pyro":
        import pyro.distributions

        from ppgen.models.zero_sum import zero_sum

        return pyro.distributions, zero_sum
    import numpyro.distributions

    return numpyro.distributions, numpyro.distributions.constraints.zero_sum(1)


def _support(constraint: str, library, zero_sum):
    c = library.constraints
    return {
        "ordered": c.ordered_vector,
        "positive_ordered": c.positive_ordered_vector,
        "simplex": c.simplex,
        "cholesky_corr": c.corr_cholesky,
        "sum_to_zero": zero_sum,
    }[constraint]


def _bounded_support(c, lower, upper, event_ndims: int):
    if lower is not None and upper is not None:
        support = c.interval(lower, upper)
    else:
        support = c.greater_than(lower) if lower is not None else c.less_than(upper)
    return c.independent(support, event_ndims) if event_ndims else support


def _moving_bounds_site(backend, library, name: str, lower, upper, batch_shape, event_shape):
    """The value x of a variable whose bounds depend on parameters, through the latent site u on a fixed support,
    recorded as the deterministic site ``name``; and log|dx/du| [*batch_shape] (None where it is 0)."""
    c = library.constraints
    unit = c.unit_interval if lower is not None and upper is not None else c.positive
    support = c.independent(unit, len(event_shape)) if event_shape else unit
    u = backend.effects.sample(raw_site_name(name), library.ImproperUniform(support, batch_shape, event_shape))
    log_jacobian = None
    if upper is None:
        value = lower + u
    elif lower is None:
        value = upper - u
    else:
        value = lower + (upper - lower) * u
        width = backend.xp.broadcast_to(backend.xp.log(upper - lower), (*batch_shape, *event_shape))
        log_jacobian = _sum_to(backend, width, batch_shape)
    return backend.effects.deterministic(name, value, event_dim=len(event_shape)), log_jacobian


def _sum_to(backend, log_density, batch_shape: tuple[int, ...]):
    """``log_density`` summed over its dims right of ``batch_shape`` and broadcast to it."""
    extra = len(log_density.shape) - len(batch_shape)
    if extra > 0:
        log_density = backend.xp.sum(log_density, axis=tuple(range(-extra, 0)))
    return backend.xp.broadcast_to(log_density, batch_shape)


def _density(backend, name: str, distribution, value, batch_shape, event_shape):
    """log ``distribution`` at ``value`` [*batch_shape, *event_shape], summed to [*batch_shape]."""
    shape = (*batch_shape, *event_shape)
    scored = (*distribution.batch_shape, *distribution.event_shape)
    try:
        fits = np.broadcast_shapes(scored, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        raise SpecError(
            f"variables.{name}.dist: batch and event shape {scored} do not fit the variable's shape {shape}"
            " (its plates and shape)"
        )
    return _sum_to(backend, distribution.log_prob(value), batch_shape)


def constrained_site(
    backend,
    name: str,
    distribution,
    constraint: str | None,
    lower,
    upper,
    batch_shape: tuple[int, ...],
    event_shape: tuple[int, ...],
    obs=None,
    *,
    dependent_bounds: bool = False,
) -> Any:
    """Sample site ``name`` on its support, with density ``distribution`` there; returns the site's value.

    Args:
        backend: a ``ppgen.models.backends.ArrayBackend`` (its effects are called).
        name: the variable's (and site's) name.
        distribution: the backend's distribution whose (unnormalized) density the variable has on the support,
            scoring values of shape [*batch_shape, *event_shape]; None for a flat density.
        constraint: a key of ``CONSTRAINTS`` or None (then ``lower`` and/or ``upper`` is given).
        lower, upper: bounds (numbers or backend arrays broadcasting to [*batch_shape, *event_shape]) or None.
        batch_shape: the variable's plate shape.
        event_shape: its ``shape``.
        obs: its observed value, or None for a latent variable.
        dependent_bounds: whether the bounds depend on stochastic variables; the latent site is then
            ``raw_site_name(name)`` and ``name`` a deterministic site (see the module's docstring).
    Returns:
        the value, [*batch_shape, *event_shape].
    """
    batch_shape, event_shape = tuple(batch_shape), tuple(event_shape)
    check_constraint(name, constraint, lower is not None or upper is not None)
    if constraint is None and lower is None and upper is None:
        raise SpecError(f"variables.{name}: a constrained variable needs 'constraint', 'lower' or 'upper'")
    library, zero_sum = library_of(backend)
    lower, upper = (None if b is None else backend.floating(b) for b in (lower, upper))
    log_density = None
    if constraint is None and dependent_bounds and obs is None:
        value, log_density = _moving_bounds_site(backend, library, name, lower, upper, batch_shape, event_shape)
    else:
        if constraint is not None:
            _check_event_shape(name, constraint, event_shape)
            support = _support(constraint, library, zero_sum)
        else:
            support = _bounded_support(library.constraints, lower, upper, len(event_shape))
        start = None if distribution is None else {DENSITY_KEY: distribution}  # for "median" and "sample" starts
        improper = library.ImproperUniform(support, batch_shape, event_shape)
        value = backend.effects.sample(name, improper, obs=obs, infer=start)
    if distribution is not None:
        density = _density(backend, name, distribution, value, batch_shape, event_shape)
        log_density = density if log_density is None else log_density + density
    if log_density is not None:
        backend.effects.factor(density_site_name(name), log_density)
    return value
