"""Hierarchical loc-scale variables sampled non-centred, the way NUTS samples them without a funnel.

``theta ~ Normal(mu, tau)`` with ``tau`` a parameter is a funnel where tau is small: NUTS's step size cannot fit
its neck, and the chains diverge and miss it (Betancourt & Girolami 2013, arXiv 1312.0906). Sampling
``theta_decentered ~ Normal(0, 1)`` and computing ``theta = mu + tau * theta_decentered`` gives the same posterior
on a geometry without the funnel. NumPyro's ``LocScaleReparam(centered=0)`` does exactly that, as an effect
handler on the site; ``theta`` is then a deterministic site, so the draws still hold ``theta`` as the spec names it.

By default a latent Normal, StudentT or Cauchy whose scale depends on a stochastic variable is sampled non-centred
(brms and Bambi non-centre group-level effects the same way); a variable's ``centered = true`` keeps it as written
(where the data pin each group down, the centred form samples better), ``centered = false`` non-centres one whose
scale is fixed. Variables of time plates, and bounded ones, are sampled as written. NumPyro's NUTS and HMC apply
it; Pyro's samplers run the model as written.
"""

from collections.abc import Callable

from ppgen.spec.bayes import BayesSpec
from ppgen.spec.variables import LOC_SCALE

__all__ = ["noncentered_names", "noncentered", "DECENTERED_SUFFIX"]

DECENTERED_SUFFIX = "_decentered"  # the standardized site NumPyro's LocScaleReparam samples in place of a variable


def noncentered_names(spec: BayesSpec) -> tuple[str, ...]:
    """The latent variables NUTS samples non-centred: loc-scale latents with a stochastic scale (or
    ``centered = false``), unless ``centered = true``, bounded or in a time plate."""
    stochastic = set(spec.latent_names) | set(spec.deterministic_names)
    names = []
    for name in spec.latent_names:
        variable = spec.variables.get(name)
        if (
            variable is None
            or variable.dist is None
            or variable.dist.name not in LOC_SCALE
            or variable.is_constrained
            or spec.time_plate_of(name) is not None
            or variable.centered
        ):
            continue
        scale = variable.dist.params.get("scale")
        if variable.centered is False or (scale is not None and any(n in stochastic for n in scale.names)):
            names.append(name)
    return tuple(names)


def noncentered(model: Callable, spec: BayesSpec) -> Callable:
    """``model`` with the sites ``noncentered_names(spec)`` sampled as ``name + DECENTERED_SUFFIX`` ~ the standard
    distribution and recorded as deterministic ``name`` (NumPyro's ``LocScaleReparam(centered=0)``); ``model``
    itself when there are none."""
    names = noncentered_names(spec)
    if not names:
        return model
    from numpyro.handlers import reparam
    from numpyro.infer.reparam import LocScaleReparam

    shape_params = {name: ("df",) if spec.variables[name].dist.name == "StudentT" else () for name in names}
    return reparam(model, config={n: LocScaleReparam(centered=0, shape_params=shape_params[n]) for n in names})
