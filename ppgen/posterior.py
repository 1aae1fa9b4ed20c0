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

import numpy as np

from ppgen.evaluate import inference_data
from ppgen.infer.bayes_data import float64, jax_data
from ppgen.infer.discrete import discrete_draws, has_pointwise_marginal, map_name, marginal_log_likelihood
from ppgen.infer.draws import Draws
from ppgen.infer.methods import METHODS
from ppgen.models.bayes import BayesModel
from ppgen.spec.bayes_inference import BayesInferenceSpec

__all__ = ["infer", "results_of", "draws_only"]


def infer(model: BayesModel, spec: BayesInferenceSpec, data: Mapping | None = None, progress: bool = False) -> Draws:
    """Posterior draws of the latent variables by the ``[inference]`` method, given ``data`` (default the
    model's own data; numpy arrays, e.g. simulated ones for calibration)."""
    return METHODS[spec.inference.method].run(model, spec.settings(), data=data, progress=progress)


def results_of(model: BayesModel, draws: Draws, data: Mapping | None = None, seed: int = 0):
    """ArviZ results from latent draws: posterior (latent and deterministic variables), sample_stats,
    observed_data, posterior_predictive and pointwise log-likelihood of every observed variable.

    Discrete latent variables, which the samplers marginalize, are drawn given each continuous draw
    (``ppgen.infer.discrete``): ``z`` holds draws from p(z | theta, y) and ``z_map`` the most likely value given
    theta; the deterministic variables and the posterior predictive use those draws. The log-likelihood sums
    them out pointwise, or is left out when they tie the data points together (a change point, a hidden Markov
    chain: no points for LOO to leave out).
    """
    import jax
    from numpyro.infer import Predictive, log_likelihood

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
        replicate = functools.partial(model.numpyro_model, predict=True)
        predictive = Predictive(replicate, posterior_samples=flat)(jax.random.PRNGKey(seed), data=given)
        if not model.discrete_names:
            pointwise = log_likelihood(model.numpyro_model, flat, data=given)  # also has prior terms (factor_names)
        observed = dict(model.observed_values)
        observed.update({name: np.asarray(given[key]) for name, key in model.observed.items() if key in given})

    deterministic = per_chain({k: predictive[k] for k in model.deterministic_names if k in predictive})
    return inference_data.build_inference_data(
        posterior={**posterior, **deterministic},
        sample_stats=draws.sample_stats or None,
        observed_data=observed,
        posterior_predictive=per_chain({name: predictive[name] for name in model.observed}),
        log_likelihood=None if pointwise is None else per_chain({name: pointwise[name] for name in model.observed}),
    )


def draws_only(draws: Draws):
    """ArviZ results holding just the latent draws [chain, draw, ...] and their sample_stats: what a run saves as
    soon as sampling ends, before the steps that can still fail."""
    return inference_data.build_inference_data(posterior=draws.posterior, sample_stats=draws.sample_stats or None)
