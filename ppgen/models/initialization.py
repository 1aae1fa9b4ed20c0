"""Initialization strategies for the samplers: the libraries' own ("median", "sample", "uniform"), made to start
the sites they cannot sample.

- A bounded variable with a density (``theta = { dist = "Normal(1, 0.5)", lower = 0 }``) is an improper uniform
  site on its support plus a factor (``ppgen.models.constraints``), which NumPyro's and Pyro's "median" and
  "sample" cannot draw from: they fall back to a uniform (NumPyro) or fixed (Pyro) start, far out in the tails
  where an ODE model's sampler can stall (posteriordb's Lotka-Volterra: potential energy 8800 against 140 at the
  posterior, step size 1e-6). The site carries its density in ``infer[DENSITY_KEY]``, and "median" starts it at
  the median of 15 draws of that density that fall inside the support ("sample": one such draw), elementwise;
  where none does, at a uniform draw in (-2, 2) on the unconstrained scale.
- Pyro's "uniform" also starts improper ``Flat`` sites, as NumPyro's does (``pyro_init_to_uniform``).
- NumPyro's "pathfinder" is "uniform" here: the NUTS sampler starts each chain at a Pathfinder draw itself
  (``NumpyroSampler``), and the kernel's strategy only sets up its model.

Torch and JAX are imported where used: a NumPyro run imports neither torch nor Pyro.
"""

import functools

__all__ = ["DENSITY_KEY", "numpyro_init_strategy", "pyro_init_strategy", "pyro_init_to_uniform"]

DENSITY_KEY = "ppgen_density"  # a site's infer entry: the density of a bounded variable on its support
_DRAWS = {"median": 15, "sample": 1}


def numpyro_init_strategy(name: str):
    """NumPyro's initialization strategy of an ``init_strategy`` key: "median", "uniform", "sample" or "pathfinder"
    (uniform: the chains' starts are passed to the kernel's init instead)."""
    from numpyro.infer import init_to_median, init_to_sample, init_to_uniform

    name = "uniform" if name == "pathfinder" else name
    return _strategy(name, (init_to_median, init_to_sample, init_to_uniform), _numpyro_from_density)


def _strategy(name: str, library: tuple, from_density):
    """The library's (median, sample, uniform) strategy of ``name``, "median" and "sample" through
    ``from_density`` for bounded variables with a density."""
    median, sample, uniform = library
    if name == "uniform":
        return uniform
    fallback = {"median": median, "sample": sample}[name]
    return functools.partial(from_density, num_samples=_DRAWS[name], fallback=fallback)


def _numpyro_from_density(site: dict, num_samples: int, fallback):
    density = site.get("infer", {}).get(DENSITY_KEY) if site["type"] == "sample" else None
    if density is None or site["is_observed"] or site["value"] is not None or site["fn"].support.event_dim:
        return fallback(site)
    import jax
    import jax.numpy as jnp
    from numpyro.distributions.transforms import biject_to

    support = site["fn"].support
    shape = (*site["kwargs"].get("sample_shape", ()), *site["fn"].shape())
    draw_key, uniform_key = jax.random.split(site["kwargs"]["rng_key"])
    draws = jnp.broadcast_to(density.sample(draw_key, _draw_shape(num_samples, shape, density)), (num_samples, *shape))
    transform = biject_to(support)
    inside = support(draws)
    unconstrained = jnp.where(inside, transform.inv(jnp.where(inside, draws, transform(jnp.zeros(shape)))), jnp.nan)
    median = jnp.nanmedian(unconstrained, axis=0)
    uniform = jax.random.uniform(uniform_key, shape, median.dtype, -2.0, 2.0)
    return transform(jnp.where(jnp.isnan(median), uniform, median))


def _draw_shape(num_samples: int, shape: tuple, density) -> tuple:
    """The sample shape that gives each element of a site of ``shape`` its own ``num_samples`` draws of
    ``density``, whose batch and event shape broadcast to ``shape`` from the right."""
    own = len(density.batch_shape) + len(density.event_shape)
    return (num_samples, *shape[: len(shape) - own])


def pyro_init_strategy(name: str):
    """Pyro's initialization strategy of an ``init_strategy`` key: "median", "uniform" or "sample"."""
    from pyro.infer.autoguide.initialization import init_to_median, init_to_sample, init_to_uniform

    return _strategy(name, (init_to_median, init_to_sample, init_to_uniform), _pyro_from_density)


def _pyro_from_density(site: dict, num_samples: int, fallback):
    density = site.get("infer", {}).get(DENSITY_KEY)
    if density is None or site["is_observed"] or site["fn"].support.event_dim:
        return fallback(site)
    import torch
    from torch.distributions import transform_to

    support = site["fn"].support
    shape = site["fn"].shape()
    with torch.no_grad():
        draws = density.sample(_draw_shape(num_samples, shape, density)).expand(num_samples, *shape)
        transform = transform_to(support)
        inside = support.check(draws)
        safe = torch.where(inside, draws, transform(torch.zeros(shape, dtype=draws.dtype, device=draws.device)))
        median = torch.where(inside, transform.inv(safe), torch.nan).nanmedian(dim=0).values
        uniform = torch.rand_like(median) * 4 - 2
        return transform(torch.where(median.isnan(), uniform, median))


def pyro_init_to_uniform(site: dict | None = None, radius: float = 2.0, dtype=None, device=None):
    """Pyro's ``init_to_uniform`` that also initializes improper ``Flat`` sites (which cannot be sampled):
    a uniform draw in (-radius, radius) on the unconstrained scale, mapped onto the site's support, as
    NumPyro's ``init_to_uniform`` does. Pass it as ``init_strategy`` to Pyro's NUTS or HMC; ``device`` is
    where Flat sites start (the model's data device; other sites start where their distribution lives);
    ``dtype`` defaults to float64."""
    if site is None:
        return functools.partial(pyro_init_to_uniform, radius=radius, dtype=dtype, device=device)
    import torch
    from torch.distributions import transform_to

    function = site["fn"]
    try:
        value = function.sample().detach()
    except NotImplementedError:
        transform = transform_to(function.support)
        shape = transform.inverse_shape(function.shape())
        return transform(torch.rand(shape, dtype=dtype or torch.float64, device=device) * (2 * radius) - radius)
    if function.support.is_discrete:  # enumerated by the samplers; a prior draw serves a plain run of the model
        return value
    transform = transform_to(function.support)
    return transform(torch.rand_like(transform.inv(value)) * (2 * radius) - radius)
