"""The discrete latent variables of a declarative model after sampling: the samplers marginalize them by
enumeration, and this module recovers them from the continuous draws.

- ``discrete_draws``: per continuous draw theta, a draw of the discrete variables from p(z | theta, y)
  (temperature 1) or their most likely joint value argmax_z p(z | theta, y) (temperature 0), by
  ``infer_discrete`` (forward filtering, backward sampling or Viterbi over the enumerated model; Pyro's
  ``infer_discrete`` is the same algorithm, arXiv:1902.03210), vectorized over draws. NumPyro's does not run
  NumPyro's ``scan``; a chain of scalar states in a time plate (a hidden Markov model) is recovered by
  ``ppgen.infer.forward_backward`` from the model's per-step log densities, vectorized too, and any other
  discrete variable in a time plate by Pyro's ``infer_discrete`` on the model's ``pyro.markov`` loop, one draw at
  a time (about 0.05 s per draw for 60 steps).
- ``marginal_log_likelihood``: the pointwise log-likelihood with the discrete variables summed out,
  log p(y_n | theta) = logsumexp_z [log p(z | theta) + log p(y_n | z, theta)], when each discrete variable is
  local to the data points it explains (``has_pointwise_marginal``).
"""

from collections.abc import Mapping

import numpy as np

from ppgen.models.bayes import BayesModel

__all__ = ["MAP_SUFFIX", "map_name", "discrete_draws", "has_pointwise_marginal", "marginal_log_likelihood"]

MAP_SUFFIX = "_map"


def map_name(name: str) -> str:
    """The posterior variable holding the most likely value (temperature 0) of discrete variable ``name``."""
    return name + MAP_SUFFIX


def discrete_draws(
    model: BayesModel, flat: Mapping[str, np.ndarray], data: Mapping | None, seed: int, temperature: int
) -> dict[str, np.ndarray]:
    """Draws of every discrete latent variable given each continuous draw.

    Args:
        model: the model (``model.discrete_names`` non-empty).
        flat: continuous latent name -> [n, ...] draws (chains concatenated).
        data: data replacing the model's own (numpy arrays), or None.
        seed: seeds the draws (temperature 1).
        temperature: 1 draws z ~ p(z | theta, y); 0 takes the most likely joint value.
    Returns:
        discrete name -> [n, ...] int64 (a time plate's variable [n, T, ...]).
    """
    if not any(model.spec.time_plate_of(name) for name in model.discrete_names):
        draws = _numpyro_discrete(model, flat, data, seed, temperature)
    elif (chain := _markov_chain(model)) is not None:
        draws = {chain: _chain_discrete(model, chain, flat, data, seed, temperature)}
    else:
        draws = _pyro_discrete(model, flat, data, seed, temperature)
    return {name: np.asarray(draws[name]).astype(np.int64) for name in model.discrete_names}


def _markov_chain(model: BayesModel) -> str | None:
    """The model's one discrete variable when it is a chain of scalar states in a time plate whose every
    dependent stochastic variable lies in that plate (so the log density is a sum of factors of (z[t-1], z[t]));
    None otherwise."""
    if len(model.discrete_names) != 1:
        return None
    name = model.discrete_names[0]
    variable, plate = model.spec.variables[name], model.spec.time_plate_of(name)
    if plate is None or variable.shape or len(variable.plates) > 1:
        return None
    outside = [v.name for v in model.spec.variables.values() if model.spec.time_plate_of(v.name) != plate]
    if any(model.spec.variables[v].is_stochastic and name in _ancestors(model, v) for v in outside):
        return None
    return name


def _chain_discrete(model, name: str, flat, data, seed: int, temperature: int) -> np.ndarray:
    """[n, T] states of the chain ``name``: the model's per-step log densities along 2 K^2 paths that alternate
    two states give every factor of (z[t-1], z[t]); ``chain_states`` does the rest."""
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    from ppgen.infer.bayes_data import float64, jax_data
    from ppgen.infer.forward_backward import chain_states

    members = model.spec.time_plates[model.spec.time_plate_of(name)].members
    with float64():
        given = jax_data(model, data)
        first = {key: jnp.asarray(value[0]) for key, value in flat.items()}
        site = handlers.trace(handlers.seed(handlers.condition(model.numpyro_model, data=first), 0)).get_trace(given)
        steps, states = len(site[name]["value"]), site[name]["fn"].enumerate_support(expand=False).shape[0]
        times = jnp.arange(steps)
        parity, previous, current = jnp.meshgrid(jnp.arange(2), jnp.arange(states), jnp.arange(states), indexing="ij")
        # path (p, i, j) is j at the steps of parity p and i between them: at such a step t, z[t-1] = i, z[t] = j.
        paths = jnp.where(times % 2 == parity[..., None], current[..., None], previous[..., None])
        paths = paths.astype(site[name]["value"].dtype).reshape(-1, steps)

        def step_log_densities(sample: dict, path) -> jax.Array:
            conditioned = handlers.condition(model.numpyro_model, data={**sample, name: path})
            trace = handlers.trace(handlers.seed(conditioned, 0)).get_trace(given)
            sites = [trace[m] for m in members if trace.get(m, {}).get("type") == "sample"]
            return sum(site["fn"].log_prob(site["value"]).reshape(steps, -1).sum(1) for site in sites)

        def one(sample: dict, key) -> jax.Array:
            per_path = jax.vmap(lambda path: step_log_densities(sample, path))(paths)
            per_path = per_path.reshape(2, states, states, steps)
            transitions = per_path[times[1:] % 2, :, :, times[1:]]  # [T - 1, K, K]
            return chain_states(per_path[0, 0, :, 0], transitions, key, temperature)

        count = len(next(iter(flat.values())))
        keys = jax.random.split(jax.random.PRNGKey(seed), count)
        return np.asarray(jax.jit(jax.vmap(one))(dict(flat), keys))


def _numpyro_discrete(model, flat, data, seed: int, temperature: int) -> dict:
    import jax
    from numpyro import handlers
    from numpyro.contrib.funsor import infer_discrete

    from ppgen.infer.bayes_data import float64, jax_data

    with float64():
        given = jax_data(model, data)

        def one(sample: dict, key) -> dict:
            conditioned = handlers.condition(model.numpyro_model, data=sample)
            recovered = infer_discrete(
                conditioned, first_available_dim=-1 - model.max_plate_nesting, temperature=temperature, rng_key=key
            )
            trace = handlers.trace(recovered).get_trace(given)
            return {name: trace[name]["value"] for name in model.discrete_names}

        count = len(next(iter(flat.values())))
        keys = jax.random.split(jax.random.PRNGKey(seed), count)
        return {name: np.asarray(value) for name, value in jax.jit(jax.vmap(one))(dict(flat), keys).items()}


def _pyro_discrete(model, flat, data, seed: int, temperature: int) -> dict:
    import pyro
    import torch
    from pyro import poutine
    from pyro.infer import infer_discrete

    from ppgen.infer.bayes_data import torch_data

    given = torch_data(model, data)
    count = len(next(iter(flat.values())))
    recovered = {name: [] for name in model.discrete_names}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        pyro.set_rng_seed(seed)
        for index in range(count):
            sample = {name: torch.as_tensor(np.array(value[index])) for name, value in flat.items()}
            conditioned = poutine.condition(model.pyro_model, data=sample)
            discrete = infer_discrete(
                conditioned, first_available_dim=-1 - model.max_plate_nesting, temperature=temperature
            )
            trace = poutine.trace(discrete).get_trace(given)
            for name in model.discrete_names:
                recovered[name].append(_stacked(trace, name))
    return {name: np.stack(values) for name, values in recovered.items()}


def _stacked(trace, name: str) -> np.ndarray:
    """A variable's value; a time plate's [T, ...] from its step sites ``name__t`` (``ppgen.models.time_steps``)."""
    from ppgen.models.time_steps import step_site

    if name in trace.nodes and step_site(name, 0) not in trace.nodes:
        return trace.nodes[name]["value"].cpu().numpy()
    steps = []
    while step_site(name, len(steps)) in trace.nodes:
        steps.append(trace.nodes[step_site(name, len(steps))]["value"].cpu().numpy())
    return np.stack(steps)


def _ancestors(model: BayesModel, name: str) -> set[str]:
    """The variables that ``name``'s value depends on, directly or through others (previous steps included)."""
    variables = model.spec.variables
    found, stack = set(), [name]
    while stack:
        variable = variables[stack.pop()]
        for parent in (*variable.depends, *variable.previous):
            if parent in variables and parent not in found and parent != name:
                found.add(parent)
                stack.append(parent)
    return found


def has_pointwise_marginal(model: BayesModel) -> bool:
    """Whether every discrete latent variable is local to the data points it explains: outside time plates, in
    exactly the plates of each observed variable that depends on it (a mixture's assignments). Then the data
    points are conditionally independent given the continuous variables, and LOO can leave them out one by one;
    a change point or a hidden Markov chain ties all points together."""
    variables = model.spec.variables
    for name in model.discrete_names:
        plates = set(variables[name].plates)
        if not plates or model.spec.time_plate_of(name) is not None:
            return False
        for observed in model.observed:
            if name in _ancestors(model, observed) and set(variables[observed].plates) != plates:
                return False
    return True


def _trailing(array, ndim: int):
    """``array`` without its leading dims of size 1 beyond its last ``ndim`` (the plates it does not use)."""
    shape = tuple(array.shape)
    while len(shape) > ndim and shape[0] == 1:
        shape = shape[1:]
    return array.reshape(shape)


def marginal_log_likelihood(
    model: BayesModel, flat: Mapping[str, np.ndarray], data: Mapping | None
) -> dict[str, np.ndarray]:
    """Pointwise log p(y_n | theta) of every observed variable, its discrete ancestors summed out by enumeration
    (valid when ``has_pointwise_marginal``).

    Args:
        flat: continuous latent name -> [n, ...] draws (chains concatenated).
    Returns:
        observed name -> [n, *its batch shape].
    """
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp
    from numpyro import handlers
    from numpyro.contrib.funsor import enum

    from ppgen.infer.bayes_data import float64, jax_data

    nesting = model.max_plate_nesting
    parents = {name: _ancestors(model, name) & set(model.discrete_names) for name in model.observed}
    with float64():
        given = jax_data(model, data)

        def one(sample: dict) -> dict:
            substituted = handlers.substitute(handlers.seed(model.numpyro_model, 0), data=sample)
            with enum(first_available_dim=-1 - nesting):
                trace = handlers.trace(substituted).get_trace(given)
            pointwise = {}
            for name in model.observed:
                site = trace[name]
                batch_shape = jnp.shape(site["value"])[: jnp.ndim(site["value"]) - site["fn"].event_dim]
                log_prob = site["fn"].log_prob(site["value"])
                for parent in parents[name]:
                    log_prob = log_prob + trace[parent]["fn"].log_prob(trace[parent]["value"])
                enumerated = jnp.ndim(log_prob) - nesting
                if enumerated > 0:
                    log_prob = logsumexp(log_prob, axis=tuple(range(enumerated)))
                pointwise[name] = jnp.broadcast_to(_trailing(log_prob, len(batch_shape)), batch_shape)
            return pointwise

        return {name: np.asarray(value) for name, value in jax.jit(jax.vmap(one))(dict(flat)).items()}
