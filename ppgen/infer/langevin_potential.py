"""A Pyro model's unconstrained potential -log p for the Langevin kernels: of the full data (``full_data_potential``,
Pyro's ``initialize_model``, as HMC uses), or of a fresh minibatch at every call (``minibatch_potential``, for SGLD).

Both map (model, args, kwargs, transforms, max_plate_nesting, init_strategy, initial_params, name) to
(initial unconstrained params, potential_fn, transforms); ``name`` is the kernel's, for error messages.
"""

from collections.abc import Callable

from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.mcmc.util import initialize_model
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from torch.distributions import biject_to

from ppgen.errors import SpecError

__all__ = ["PotentialFromModel", "full_data_potential", "minibatch_potential"]

PotentialFromModel = Callable[..., tuple[dict, Callable, dict]]
"""(model, args, kwargs, transforms, max_plate_nesting, init_strategy, initial_params, name)
-> (initial unconstrained params, potential_fn, transforms)."""


def full_data_potential(
    model: Callable,
    args: tuple,
    kwargs: dict,
    transforms: dict | None,
    max_plate_nesting: int | None,
    init_strategy: Callable,
    initial_params: dict | None,
    name: str,
) -> tuple[dict, Callable, dict]:
    """The full-data potential of ``model``; a model that subsamples a plate is refused (its log density would be a
    minibatch estimate, which only SGLD is built for)."""
    try:
        params, potential_fn, transforms, _ = initialize_model(
            model,
            args,
            kwargs,
            transforms=transforms,
            max_plate_nesting=max_plate_nesting,
            init_strategy=init_strategy,
            initial_params=initial_params,
        )
    except NotImplementedError as error:
        if "subsample" not in str(error):
            raise
        raise SpecError(
            f"{name} needs the full-data log density but the model subsamples a plate; use SGLD for minibatches"
        ) from None
    return params, potential_fn, transforms


def minibatch_potential(
    model: Callable,
    args: tuple,
    kwargs: dict,
    transforms: dict | None,
    max_plate_nesting: int | None,
    init_strategy: Callable,
    initial_params: dict | None,
    name: str,
) -> tuple[dict, Callable, dict]:
    """A potential of ``model`` that runs it once per call, so that a subsampling plate draws a new minibatch and
    Pyro scales its log-likelihood by N / B: an unbiased estimate of the full-data potential and of its gradient."""
    prior_trace = prune_subsample_sites(poutine.trace(model).get_trace(*args, **kwargs))
    for site_name, site in prior_trace.iter_stochastic_nodes():
        if site["fn"].support.is_discrete:
            raise SpecError(
                f"{name}: latent site {site_name!r} is discrete; Langevin dynamics needs continuous latents"
            )
    trace = prune_subsample_sites(poutine.trace(InitMessenger(init_strategy)(model)).get_trace(*args, **kwargs))
    sites = dict(trace.iter_stochastic_nodes())
    if transforms is None:
        transforms = {site_name: biject_to(site["fn"].support).inv for site_name, site in sites.items()}
    params = {site_name: transforms[site_name](site["value"].detach()) for site_name, site in sites.items()}

    def potential_fn(params: dict):
        constrained = {site_name: transforms[site_name].inv(value) for site_name, value in params.items()}
        model_trace = poutine.trace(poutine.condition(model, constrained)).get_trace(*args, **kwargs)
        # Without the subsample sites: their log density is 0, made from a host number on every call.
        log_joint = model_trace.log_prob_sum(lambda _, site: not site_is_subsample(site))
        for site_name, value in params.items():
            log_joint = log_joint - transforms[site_name].log_abs_det_jacobian(constrained[site_name], value).sum()
        return -log_joint

    return initial_params or params, potential_fn, transforms
