"""Variational inference on models with global latents (declarative Bayesian models, or any Pyro model):
the guide family maps onto one of Pyro's autoguides, here and nowhere else, and the fitted guide's draws come
back through the same result path as MCMC draws. The guide's parameters live in the guide (Pyro's module-local
parameters), never in Pyro's global parameter store.

| guide.family          | Pyro autoguide                                      |
|-----------------------|-----------------------------------------------------|
| "diagonal"            | AutoNormal (ADVI, Kucukelbir et al. 2017, 1603.00788) |
| "multivariate_normal" | AutoMultivariateNormal                              |
| "low_rank"            | AutoLowRankMultivariateNormal                       |
| "iaf"                 | AutoIAFNormal (Kingma et al. 2016, 1606.04934)      |
| "affine_coupling"     | AutoNormalizingFlow with affine coupling layers     |
| "spline"              | AutoNormalizingFlow with spline coupling layers     |
"""

import functools
import math
import time
from collections.abc import Callable, Mapping

import numpy as np
import pyro
import pyro.distributions.transforms as T
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import (
    AutoGuide,
    AutoIAFNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    AutoNormalizingFlow,
)
from pyro.optim.clipped_adam import ClippedAdam

from ppgen.errors import SpecError, TrainingError
from ppgen.flows import Flip
from ppgen.infer.draws import Draws
from ppgen.infer.posterior_settings import AutoguideSettings, VariationalSettings
from ppgen.progress import reporter

__all__ = ["autoguide", "fit_autoguide"]


def autoguide(model: Callable, settings: AutoguideSettings) -> AutoGuide:
    """The autoguide of ``model`` of the family that ``settings`` names."""
    if settings.family == "diagonal":
        return AutoNormal(model)
    if settings.family == "multivariate_normal":
        return AutoMultivariateNormal(model)
    if settings.family == "low_rank":
        return AutoLowRankMultivariateNormal(model, rank=settings.rank)
    if settings.family == "iaf":
        return AutoIAFNormal(model, hidden_dim=list(settings.hidden), num_transforms=settings.flows)
    layer = {"affine_coupling": T.affine_coupling, "spline": T.spline_coupling}[settings.family]
    return AutoNormalizingFlow(model, functools.partial(_flow, layer, settings.flows, list(settings.hidden)))


def fit_autoguide(
    model: Callable, model_kwargs: Mapping, settings: VariationalSettings, progress: bool | None = False
) -> tuple[Draws, list[float]]:
    """Fit the ``settings.guide`` autoguide by maximizing the ELBO with clipped Adam (learning rate decaying from
    lr to lr * lr_decay), then draw from it ``settings.num_samples`` times. Pyro's global parameter store is
    neither read nor changed.

    Returns the draws ([4, num_samples / 4, ...] when 4 divides num_samples, else one chain) and the loss
    (negative ELBO) every 10 steps.
    """
    pyro.set_rng_seed(settings.seed)
    with pyro.settings.context(module_local_params=True):
        discrete, nesting = _enumerated_sites(model, model_kwargs)
        guide = autoguide(poutine.block(model, hide=discrete) if discrete else model, settings.guide)
        if discrete:  # summed out of the ELBO exactly; the guide is over the continuous sites
            elbo = TraceEnum_ELBO(num_particles=settings.num_particles, max_plate_nesting=nesting)
        else:
            elbo = Trace_ELBO(num_particles=settings.num_particles)
        loss = elbo(model, guide)
        losses = []
        started = time.perf_counter()
        with torch.no_grad():
            guide(**model_kwargs)  # an autoguide makes its parameters on its first call
        # A decaying step size lets the final iterate settle at the optimum instead of jittering around it.
        decay = settings.lr_decay ** (1 / settings.num_steps)
        optimizer = ClippedAdam(guide.parameters(), lr=settings.lr, lrd=decay)
        with reporter("svi", settings.num_steps, "step", progress=progress) as bar:
            for step in range(settings.num_steps):
                optimizer.zero_grad()
                value = loss(**model_kwargs)
                value.backward()
                optimizer.step()
                value = value.item()
                if not math.isfinite(value):
                    raise TrainingError(
                        f"the ELBO became {value} at step {step}: lower inference.lr or check the model"
                    )
                if step % 10 == 0:
                    losses.append(value)
                    bar.update(step + 1, elbo=f"{-value:.4g}")
            bar.update(settings.num_steps)
        with torch.no_grad():
            draws = [guide(**model_kwargs) for _ in range(settings.num_samples)]
    # The draws are independent, so any split into chains is exchangeable: four let R-hat and ESS be checked.
    chains = 4 if settings.num_samples % 4 == 0 else 1
    posterior = {
        name: np.stack([draw[name].cpu().numpy() for draw in draws]).reshape(chains, -1, *draws[0][name].shape)
        for name in draws[0]
    }
    return Draws(posterior, {}, time.perf_counter() - started), losses


def _enumerated_sites(model: Callable, model_kwargs: Mapping) -> tuple[list[str], int]:
    """The sample sites that ``model`` marks for parallel enumeration (discrete latent variables), and how many
    batch dims its plates use."""
    from pyro.infer.autoguide.initialization import InitMessenger

    from ppgen.models.initialization import pyro_init_to_uniform

    with torch.no_grad(), poutine.block(), InitMessenger(pyro_init_to_uniform()):  # improper priors too
        trace = poutine.trace(model).get_trace(**model_kwargs)
    sites = [site for site in trace.nodes.values() if site["type"] == "sample"]
    discrete = [
        site["name"] for site in sites if not site["is_observed"] and site["infer"].get("enumerate") == "parallel"
    ]
    dims = [frame.dim for site in sites for frame in site["cond_indep_stack"] if frame.dim is not None]
    return discrete, -min(dims, default=0)


def _flow(layer: Callable, num_layers: int, hidden: list[int], dim: int) -> T.ComposeTransformModule:
    """Coupling layers with the dimensions flipped between them, so that every dimension is transformed."""
    if dim < 2:
        raise SpecError("guide.family: coupling flows need at least two latent dimensions; use 'iaf' or 'diagonal'")
    parts = []
    for index in range(num_layers):
        if index:
            parts.append(Flip())
        parts.append(layer(dim, hidden_dims=hidden))
    return T.ComposeTransformModule(parts)
