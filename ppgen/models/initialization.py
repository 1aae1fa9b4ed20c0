"""An initialization strategy for Pyro's HMC and NUTS that also starts improper ``Flat`` sites."""

import functools

import torch
from torch.distributions import transform_to

__all__ = ["pyro_init_to_uniform"]


def pyro_init_to_uniform(
    site: dict | None = None,
    radius: float = 2.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
):
    """Pyro's ``init_to_uniform`` that also initializes improper ``Flat`` sites (which cannot be sampled):
    a uniform draw in (-radius, radius) on the unconstrained scale, mapped onto the site's support, as
    NumPyro's ``init_to_uniform`` does. Pass it as ``init_strategy`` to Pyro's NUTS or HMC; ``device`` is
    where Flat sites start (the model's data device; other sites start where their distribution lives)."""
    if site is None:
        return functools.partial(pyro_init_to_uniform, radius=radius, dtype=dtype, device=device)
    function = site["fn"]
    try:
        value = function.sample().detach()
    except NotImplementedError:
        transform = transform_to(function.support)
        shape = transform.inverse_shape(function.shape())
        return transform(torch.rand(shape, dtype=dtype, device=device) * (2 * radius) - radius)
    if function.support.is_discrete:  # enumerated by the samplers; a prior draw serves a plain run of the model
        return value
    transform = transform_to(function.support)
    return transform(torch.rand_like(transform.inv(value)) * (2 * radius) - radius)
