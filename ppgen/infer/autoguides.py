"""Variational inference on models with global latents (declarative Bayesian models, or any Pyro model):
the ``[guide]`` family maps onto one of Pyro's autoguides, here and nowhere else, and the fitted guide's
draws come back through the same result path as MCMC draws.

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
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import (
    AutoGuide,
    AutoIAFNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    AutoNormalizingFlow,
)

from ppgen.errors import SpecError, TrainingError
from ppgen.flows import Flip
from ppgen.infer.mcmc import Draws
from ppgen.spec.workflow import AutoguideSpec, VariationalSpec

__all__ = ["autoguide", "fit_autoguide"]


def autoguide(model: Callable, spec: AutoguideSpec) -> AutoGuide:
    """The autoguide of ``model`` that the ``[guide]`` table names."""
    if spec.family == "diagonal":
        return AutoNormal(model)
    if spec.family == "multivariate_normal":
        return AutoMultivariateNormal(model)
    if spec.family == "low_rank":
        return AutoLowRankMultivariateNormal(model, rank=spec.rank)
    if spec.family == "iaf":
        return AutoIAFNormal(model, hidden_dim=spec.hidden, num_transforms=spec.flows)
    layer = {"affine_coupling": T.affine_coupling, "spline": T.spline_coupling}[spec.family]
    return AutoNormalizingFlow(model, functools.partial(_flow, layer, spec.flows, spec.hidden))


def fit_autoguide(
    model: Callable,
    model_kwargs: Mapping,
    inference: VariationalSpec,
    guide_spec: AutoguideSpec,
    progress: bool = False,
) -> tuple[Draws, list[float]]:
    """Fit the guide by maximizing the ELBO with Adam (decaying learning rate), then draw from it
    ``inference.num_samples`` times.

    Returns the draws ([4, num_samples / 4, ...] when 4 divides num_samples, else one chain) and the loss
    (negative ELBO) every 10 steps.
    """
    from tqdm.auto import tqdm

    pyro.clear_param_store()
    pyro.set_rng_seed(inference.seed)
    guide = autoguide(model, guide_spec)
    # A decaying step size lets the final iterate settle at the optimum instead of jittering around it.
    decay = inference.lr_decay ** (1 / inference.num_steps)
    optimizer = pyro.optim.ClippedAdam({"lr": inference.lr, "lrd": decay})
    svi = SVI(model, guide, optimizer, Trace_ELBO(num_particles=inference.num_particles))
    losses = []
    started = time.perf_counter()
    for step in tqdm(range(inference.num_steps), disable=not progress, desc="svi"):
        loss = svi.step(**model_kwargs)
        if not math.isfinite(loss):
            raise TrainingError(f"the ELBO became {loss} at step {step}: lower inference.lr or check the model")
        if step % 10 == 0:
            losses.append(loss)
    with torch.no_grad():
        draws = [guide(**model_kwargs) for _ in range(inference.num_samples)]
    # The draws are independent, so any split into chains is exchangeable: four let R-hat and ESS be checked.
    chains = 4 if inference.num_samples % 4 == 0 else 1
    posterior = {
        name: np.stack([draw[name].cpu().numpy() for draw in draws]).reshape(chains, -1, *draws[0][name].shape)
        for name in draws[0]
    }
    return Draws(posterior, {}, time.perf_counter() - started), losses


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
