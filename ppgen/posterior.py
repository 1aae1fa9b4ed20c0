"""The posterior of a declarative model: draws by the ``[inference]`` method (``infer``), then ArviZ results
(``results_of``).

Every inference method (``ppgen.infer.methods.METHODS``) hands back draws [chain, draw, ...] of the latent
variables (the continuous ones: discrete latent variables are summed out by enumeration); one result path then adds
the discrete variables (drawn given each continuous draw, ``ppgen.infer.discrete``), the deterministic variables,
the posterior predictive and the pointwise log-likelihood (from the NumPyro compilation of the same spec,
vectorized over draws) and builds the ArviZ results.
"""

import functools
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np

from ppgen.evaluate import inference_data
from ppgen.infer.bayes_data import float64, jax_data
from ppgen.infer.discrete import discrete_draws, has_pointwise_marginal, map_name, marginal_log_likelihood
from ppgen.infer.draws import Draws
from ppgen.infer.methods import METHODS
from ppgen.infer.remembered import data_digest
from ppgen.models.backends import numpyro_backend
from ppgen.models.bayes import BayesModel
from ppgen.models.interpreter import plate_sizes
from ppgen.models.missing import cut_to_observed
from ppgen.spec.bayes_inference import BayesInferenceSpec

__all__ = ["infer", "results_of", "log_prior", "plate_dims", "data_dims", "draws_only"]


def infer(
    model: BayesModel, spec: BayesInferenceSpec, data: Mapping | None = None, progress: bool | None = False
) -> Draws:
    """Posterior draws of the latent variables by the ``[inference]`` method, given ``data`` (default the
    model's own data; numpy arrays, e.g. simulated ones for calibration); ``progress`` as ``ppgen.progress`` says
    (None: bars on a terminal, lines otherwise)."""
    return METHODS[spec.inference.method].run(model, spec.settings(), data=data, progress=progress)


def results_of(model: BayesModel, draws: Draws, data: Mapping | None = None, seed: int = 0):
    """ArviZ results from latent draws: posterior (latent and deterministic variables), sample_stats,
    observed_data, constant_data (the rest of the data), posterior_predictive, pointwise log-likelihood of every
    observed variable and the log prior density of each draw (``log_prior``). A variable's dimensions are named
    after its plates (``plate_dims``).

    Discrete latent variables, which the samplers marginalize, are drawn given each continuous draw
    (``ppgen.infer.discrete``): ``z`` holds draws from p(z | theta, y) and ``z_map`` the most likely value given
    theta; the deterministic variables and the posterior predictive use those draws. The log-likelihood sums
    them out pointwise, or is left out when they tie the data points together (a change point, a hidden Markov
    chain: no points for LOO to leave out).
    """
    import jax

    chains, num_draws = next(iter(draws.posterior.values())).shape[:2]
    continuous = [name for name in model.latent_names if name not in model.discrete_names]
    flat = draws.flat(continuous)

    def per_chain(values: dict) -> dict[str, np.ndarray]:
        return {k: np.asarray(v).reshape(chains, num_draws, *np.shape(v)[1:]) for k, v in values.items()}

    posterior = dict(draws.posterior)
    pointwise = None
    if model.discrete_names:
        sampled = discrete_draws(model, flat, data, seed, temperature=1)
        most_likely = discrete_draws(model, flat, data, seed, temperature=0)
        posterior.update(per_chain(sampled))
        posterior.update(per_chain({map_name(name): value for name, value in most_likely.items()}))
        if has_pointwise_marginal(model):
            pointwise = marginal_log_likelihood(model, flat, data)
        flat = {**flat, **sampled}
    with float64():
        given = jax_data(model, data)
        compiled, observed_data = _compiled(model, given)
        predictive = compiled.predictive(flat, observed_data, jax.random.PRNGKey(seed))
        if not model.discrete_names:
            pointwise = compiled.log_likelihood(flat, observed_data)  # also has prior terms (factor_names)
        prior_terms = per_chain(compiled.log_prior(flat, observed_data))
        observed = dict(model.observed_values)
        observed.update({name: np.asarray(given[key]) for name, key in model.observed.items() if key in given})
        constant = {key: np.asarray(value) for key, value in given.items() if key not in model.spec.observed_data_keys}
        sizes = plate_sizes(model.spec, given, numpyro_backend())

    deterministic = per_chain({k: predictive[k] for k in model.deterministic_names if k in predictive})
    posterior = {**posterior, **deterministic}
    replicated = per_chain({name: predictive[name] for name in model.observed})
    pointwise = None if pointwise is None else per_chain({name: pointwise[name] for name in model.observed})
    if model.spec.missing:  # the checks compare observed entries only; imputed ones are in the posterior
        observed, replicated, pointwise = (
            None if group is None else cut_to_observed(group, model.spec.missing)
            for group in (observed, replicated, pointwise)
        )
    shapes = {name: np.shape(value)[2:] for name, value in posterior.items()}
    shapes.update({name: np.shape(value) for name, value in observed.items()})
    return inference_data.build_inference_data(
        posterior=posterior,
        sample_stats=draws.sample_stats or None,
        observed_data=observed,
        constant_data=constant or None,
        posterior_predictive=replicated,
        log_likelihood=pointwise,
        log_prior=prior_terms,
        dims={**data_dims(sizes, constant), **plate_dims(model, sizes, shapes)},
    )


def log_prior(model: BayesModel, latent: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The log prior density of latent draws ``latent`` ({name: [S, ...]}) per variable and element, {name: [S,
    ...]}: the log density of every sample site of the NumPyro model but the likelihood terms (prior terms,
    ``factor_names``, included), vectorized over the draws. Power-scaling the prior (``ppgen.evaluate.sensitivity``)
    reweights the draws by its sum. Call it inside ``float64()``."""
    compiled, observed_data = _compiled(model, dict(data))
    return {name: np.asarray(value) for name, value in compiled.log_prior(dict(latent), observed_data).items()}


_COMPILED: dict[tuple, SimpleNamespace] = {}  # (model, digest of its unobserved data) -> _compiled's functions
_COMPILED_KEPT = 8


def _compiled(model: BayesModel, data: dict) -> tuple[SimpleNamespace, dict]:
    """The posterior predictive, pointwise log-likelihood and log prior of ``model``, each vectorized over draws
    and compiled, and the observed part of ``data`` that they take. They are traced once per model and unobserved
    data (which may set shapes, and is built into them), so that a later fit of the model (in a notebook, SBC's
    replicates) skips tracing; the last ``_COMPILED_KEPT`` are kept."""
    import jax
    from numpyro.infer import Predictive, log_likelihood
    from numpyro.infer.util import compute_log_probs

    observed_keys = set(model.spec.observed_data_keys)
    fixed = {key: value for key, value in data.items() if key not in observed_keys}
    observed_data = {key: value for key, value in data.items() if key in observed_keys}
    key = (model, data_digest(fixed))
    if key not in _COMPILED:
        replicate = functools.partial(model.numpyro_model, predict=True)

        def predictive(flat: dict, observed: dict, rng_key) -> dict:
            return Predictive(replicate, posterior_samples=flat)(rng_key, data={**fixed, **observed})

        def pointwise(flat: dict, observed: dict) -> dict:
            return log_likelihood(model.numpyro_model, flat, data={**fixed, **observed})

        def prior(latent: dict, observed: dict) -> dict:
            def one_draw(values: dict) -> dict:
                given = {"data": {**fixed, **observed}}
                terms, _ = compute_log_probs(model.numpyro_model, (), given, values, sum_log_prob=False)
                return {name: term for name, term in terms.items() if name not in model.observed}

            return jax.vmap(one_draw)(latent)

        if len(_COMPILED) >= _COMPILED_KEPT:
            del _COMPILED[next(iter(_COMPILED))]
        _COMPILED[key] = SimpleNamespace(
            predictive=jax.jit(predictive), log_likelihood=jax.jit(pointwise), log_prior=jax.jit(prior)
        )
    return _COMPILED[key], observed_data


def plate_dims(model: BayesModel, sizes: Mapping[str, int], shapes: Mapping[str, tuple]) -> dict[str, list[str]]:
    """Names of the leading dimensions of each variable's values, given their shape without (chain, draw): its
    plates, outermost first (``sizes``: plate name -> size). ArviZ names the event dimensions after them
    (``{name}_dim_{i}``), and every dimension of a variable outside plates or not laid out [plates..., event...]."""
    dims = {}
    for name, shape in shapes.items():
        variable = model.spec.variables.get(name)
        plates = variable.plates if variable is not None else ()
        if plates and tuple(shape[: len(plates)]) == tuple(sizes[plate] for plate in plates):
            dims[name] = list(plates)
    return dims


def data_dims(sizes: Mapping[str, int], data: Mapping[str, np.ndarray]) -> dict[str, list[str]]:
    """Name the first dimension of a data array after the plate of its length, when exactly one plate has it (a
    covariate over ``obs``, the times of a time plate)."""
    dims = {}
    for key, value in data.items():
        plates = [plate for plate, size in sizes.items() if np.ndim(value) and size == np.shape(value)[0]]
        if len(plates) == 1:
            dims[key] = plates
    return dims


def draws_only(draws: Draws):
    """ArviZ results holding just the latent draws [chain, draw, ...] and their sample_stats: what a run saves as
    soon as sampling ends, before the steps that can still fail."""
    return inference_data.build_inference_data(posterior=draws.posterior, sample_stats=draws.sample_stats or None)
