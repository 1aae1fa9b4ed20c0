"""The posterior inference methods of declarative models, one registry entry each: ``METHODS[name].run(model,
settings, data=None, progress=False) -> Draws``.

| name      | settings                | engine                                                          |
|-----------|-------------------------|-----------------------------------------------------------------|
| nuts, hmc | ``MCMCSettings``        | NumPyro (``ppgen.infer.numpyro_sampler``) or Pyro (``mcmc``)    |
| mala, ula | ``LangevinSettings``    | ppgen's Langevin kernels, run by ``ppgen.infer.mcmc.pyro_mcmc`` |
| sgld      | ``SGLDSettings``        | SGLD on minibatches of one plate, run by ``pyro_mcmc``          |
| svi       | ``VariationalSettings`` | an autoguide fitted by SVI, then draws from it (``autoguides``) |
| pathfinder| ``PathfinderSettings``  | blackjax's multi-path Pathfinder on the NumPyro model (``pathfinder``) |

``model`` is a compiled declarative model (``ppgen.models.bayes.BayesModel``); ``data`` replaces some of its data
(numpy arrays, e.g. simulated ones for calibration). How chains run is resolved once, by ``chain_method``.
A new method is one class with a ``run`` method and one entry here.
"""

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from ppgen.errors import SamplingInterrupted, SpecError
from ppgen.infer.bayes_data import float64, jax_data, torch_data
from ppgen.infer.draws import Draws
from ppgen.infer.mcmc import pyro_mcmc
from ppgen.infer.numpyro_sampler import NumpyroSampler, numpyro_chain_method
from ppgen.infer.posterior_settings import (
    LangevinSettings,
    MCMCSettings,
    PathfinderSettings,
    SGLDSettings,
    VariationalSettings,
)
from ppgen.infer.remembered import data_digest
from ppgen.models.initialization import pyro_init_strategy, pyro_init_to_uniform
from ppgen.models.reparam import DECENTERED_SUFFIX, noncentered, noncentered_names

__all__ = [
    "InferenceMethod",
    "METHODS",
    "HMC",
    "Langevin",
    "SGLD",
    "AutoguideSVI",
    "Pathfinder",
    "chain_method",
    "numpyro_sampler",
]


class InferenceMethod(Protocol):
    """What every entry of ``METHODS`` does."""

    def run(self, model, settings, data: Mapping | None = None, progress: bool = False) -> Draws:
        """Posterior draws [chain, draw, ...] of the model's latent variables."""


def chain_method(settings) -> str:
    """How the chains run: "sequential", "vectorized" or "parallel". NumPyro: ``numpyro_chain_method`` (which asks
    JAX for devices, so call this before JAX's first computation); Pyro: "auto" is "sequential", since each
    worker process takes seconds to import torch and Pyro."""
    if getattr(settings, "backend", "pyro") == "numpyro":
        return numpyro_chain_method(settings)
    if settings.num_chains == 1 or settings.chain_method == "auto":
        return "sequential"
    return settings.chain_method


class HMC:
    """NUTS or static HMC (``MCMCSettings``), compiled with NumPyro or run by Pyro."""

    def run(self, model, settings: MCMCSettings, data: Mapping | None = None, progress: bool = False) -> Draws:
        method = chain_method(settings)
        if settings.backend == "numpyro":
            with float64():
                given = jax_data(model, data)
                observed = {key: given[key] for key in model.spec.observed_data_keys if key in given}
                if set(data or ()) <= set(observed):
                    sampler = numpyro_sampler(model, dataclasses.replace(settings, seed=0, chain_method="auto"))
                else:  # data that may set shapes is held fixed, in a sampler of its own
                    sampler = _numpyro_sampler(model, settings, given)
                with _kept_as(functools.partial(_as_written, model)):
                    draws = sampler(settings.seed, {"observed": observed}, chain_method=method, progress=progress)
                return _as_written(model, draws)
        _pyro_can_solve(model)
        init = _pyro_init(model, settings)
        with _kept_as(functools.partial(_gathered, model)):
            draws = pyro_mcmc(
                model.pyro_model,
                {"data": torch_data(model, data, settings.device)},
                dataclasses.replace(settings, chain_method=method),
                progress=progress,
                init_strategy=init,
                max_plate_nesting=model.max_plate_nesting,
            )
        return _gathered(model, draws)


@functools.lru_cache(maxsize=4)
def numpyro_sampler(model, settings: MCMCSettings) -> NumpyroSampler:
    """The compiled sampler of ``model`` given its observed data, kept for later calls (SBC's replicates) with the
    same settings (pass them with seed 0 and chain_method "auto": each call gives its own); call it in
    ``float64()``."""
    return _numpyro_sampler(model, settings, model.jax_data())


def _numpyro_sampler(model, settings: MCMCSettings, given: dict) -> NumpyroSampler:
    observed = set(model.spec.observed_data_keys)
    fixed = {key: value for key, value in given.items() if key not in observed}
    fingerprint = None if model.fingerprint is None else f"{model.fingerprint} {data_digest(fixed)}"
    return NumpyroSampler(_sampled_model(model, fixed), settings, fingerprint)


def _sampled_model(model, fixed: dict):
    """The NumPyro model that NumPyro's methods infer: the data that sets shapes ``fixed``, the observed data an
    argument (``observed``), non-centred variables through their standardized sites."""
    return noncentered(functools.partial(_observed_model, model.numpyro_model, fixed), model.spec)


def _as_written(model, draws: Draws) -> Draws:
    """Draws of the variables the spec names, without the standardized sites of non-centred ones, which the
    sampler's choices name."""
    names = noncentered_names(model.spec)
    if not names:
        return draws
    extra = {name + DECENTERED_SUFFIX for name in names}
    posterior = {name: value for name, value in draws.posterior.items() if name not in extra}
    choices = {**draws.choices, "non-centred": ", ".join(names)}
    return dataclasses.replace(draws, posterior=posterior, choices=choices)


def _observed_model(numpyro_model, fixed: dict, observed: dict) -> None:
    """The NumPyro model with the data that sets shapes fixed and the observed data as a (traced) argument."""
    numpyro_model({**fixed, **observed})


class Langevin:
    """Metropolis-adjusted (MALA) or unadjusted (ULA) Langevin (``LangevinSettings``), run by Pyro."""

    def run(self, model, settings: LangevinSettings, data: Mapping | None = None, progress: bool = False) -> Draws:
        _pyro_can_solve(model)
        options = dict(init_strategy=_pyro_init(model, settings), max_plate_nesting=model.max_plate_nesting)
        with _kept_as(functools.partial(_gathered, model)):
            draws = pyro_mcmc(
                model.pyro_model,
                {"data": torch_data(model, data, settings.device)},
                dataclasses.replace(settings, chain_method=chain_method(settings)),
                kernel=functools.partial(_langevin_kernel, settings, options),
                progress=progress,
                **options,
            )
        return _gathered(model, draws)


def _langevin_kernel(settings: LangevinSettings, options: dict, model):
    """The MALA or ULA MCMCKernel of ``settings`` for ``model`` (module level, so that workers can unpickle it)."""
    from ppgen.infer.langevin_kernels import MALA, ULA

    if settings.method == "mala":
        return MALA(
            model,
            step_size=settings.step_size,
            adapt_step_size=settings.adapt_step_size,
            target_accept_prob=settings.target_accept_prob,
            **options,
        )
    return ULA(model, step_size=settings.step_size, **options)


class SGLD:
    """Stochastic-gradient Langevin dynamics (``SGLDSettings``) on minibatches of one plate, drawn afresh at every
    step (Welling & Teh 2011), run by Pyro."""

    def run(self, model, settings: SGLDSettings, data: Mapping | None = None, progress: bool = False) -> Draws:
        from ppgen.spec.subsample import likelihood_plate

        _pyro_can_solve(model)
        subsample = {settings.plate or likelihood_plate(model.spec): settings.batch_size}
        model.subsample_plans(subsample)  # a plate that cannot be minibatched is named before sampling starts
        init = _pyro_init(model, settings)
        with _kept_as(lambda draws: _gathered(model, draws.thinned(settings.thin))):
            draws = pyro_mcmc(
                functools.partial(model.pyro_model, subsample=subsample),
                {"data": torch_data(model, data, settings.device)},
                dataclasses.replace(settings, chain_method=chain_method(settings)),
                kernel=functools.partial(_sgld_kernel, settings, init),
                progress=progress,
                init_strategy=init,
                max_plate_nesting=model.max_plate_nesting,
            )
        return _gathered(model, draws.thinned(settings.thin))


def _sgld_kernel(settings: SGLDSettings, init_strategy, model):
    """The SGLD MCMCKernel of ``settings`` for ``model``: step sizes a (b + t)^-gamma."""
    from ppgen.infer.langevin_kernels import SGLD
    from ppgen.samplers.step_size import PolynomialDecay

    schedule = PolynomialDecay(settings.step_size, settings.step_offset, settings.step_decay)
    return SGLD(model, step_size=schedule, init_strategy=init_strategy)


class AutoguideSVI:
    """An autoguide fitted by SVI (``VariationalSettings``; ADVI when diagonal), then draws from it."""

    def run(self, model, settings: VariationalSettings, data: Mapping | None = None, progress: bool = False) -> Draws:
        from ppgen.infer.autoguides import fit_autoguide

        _pyro_can_solve(model)
        draws = fit_autoguide(model.pyro_model, {"data": torch_data(model, data, settings.device)}, settings, progress)
        return _gathered(model, draws[0])


class Pathfinder:
    """Multi-path Pathfinder (``PathfinderSettings``) by blackjax on the NumPyro model: draws [4, num_samples / 4, ...]
    when 4 divides num_samples, else one chain (importance-resampled draws are exchangeable: any split into chains is
    one, and four let R-hat and ESS be checked), their log density as ``lp``, the Pareto k of the importance
    weights in ``choices`` and, above 0.7, in ``warnings``."""

    def run(self, model, settings: PathfinderSettings, data: Mapping | None = None, progress: bool = False) -> Draws:
        from ppgen.infer.pathfinder import pathfinder, warnings_of

        started = time.perf_counter()
        with float64():
            given = jax_data(model, data)
            observed = set(model.spec.observed_data_keys)
            fixed = {key: value for key, value in given.items() if key not in observed}
            kwargs = {"observed": {key: value for key, value in given.items() if key in observed}}
            found = pathfinder(_sampled_model(model, fixed), kwargs, settings)
        chains = 4 if settings.num_samples % 4 == 0 else 1

        def per_chain(value):
            return value.reshape(chains, -1, *value.shape[1:])

        choices = {"paths": f"{found.paths} of {settings.num_paths}", "Pareto k": f"{found.pareto_k:.2f}"}
        draws = Draws(
            {site: per_chain(value) for site, value in found.constrained.items()},
            {"lp": per_chain(found.log_density)},
            time.perf_counter() - started,
            choices,
            warnings_of(found, settings),
        )
        return _as_written(model, draws)


def _pyro_can_solve(model) -> None:
    """SpecError before Pyro runs a model with an ODE solver that torchdiffeq lacks (the stiff ones): Pyro could
    only solve it forward, without the gradients inference needs."""
    from ppgen.spec.ode import SOLVERS

    for variable in model.spec.variables.values():
        if variable.ode is not None and SOLVERS[variable.ode.solver].torchdiffeq is None:
            raise SpecError(
                f"variables.{variable.name}.solver: {variable.ode.solver!r} runs on NumPyro only (diffrax); use"
                " inference.backend = 'numpyro' (NUTS, HMC), or a solver torchdiffeq has for Pyro's methods:"
                f" {', '.join(name for name, solver in SOLVERS.items() if solver.torchdiffeq)}"
            )


@contextlib.contextmanager
def _kept_as(convert: Callable[[Draws], Draws]) -> Iterator[None]:
    """Draws that a Ctrl-C kept (``SamplingInterrupted``) converted as a finished run's are by ``convert``."""
    try:
        yield
    except SamplingInterrupted as stopped:
        kept = (None if draws is None else convert(draws) for draws in (stopped.draws, stopped.partial))
        raise SamplingInterrupted(str(stopped), *kept) from None


def _gathered(model, draws: Draws) -> Draws:
    """Pyro's draws with the time-plate variables gathered from their step sites (``BayesModel.gather_steps``)."""
    if not model.spec.time_plates:
        return draws
    return dataclasses.replace(draws, posterior=model.gather_steps(draws.posterior))


def _pyro_init(model, settings):
    """Pyro's initialization strategy of ``settings``; "uniform" is Pyro's uniform start that also starts improper
    priors, on the device the model computes on."""
    if settings.init_strategy != "uniform":
        return pyro_init_strategy(settings.init_strategy)
    from ppgen.device import resolve_device

    return pyro_init_to_uniform(device=resolve_device(settings.device))


METHODS: dict[str, InferenceMethod] = {
    "nuts": HMC(),
    "hmc": HMC(),
    "mala": Langevin(),
    "ula": Langevin(),
    "sgld": SGLD(),
    "svi": AutoguideSVI(),
    "pathfinder": Pathfinder(),
}
