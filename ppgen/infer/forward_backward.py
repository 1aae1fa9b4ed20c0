"""The states of a discrete Markov chain given its log factors, in JAX: forward filtering, backward sampling
(temperature 1) or the Viterbi path (temperature 0).

A chain z_0, ..., z_{T-1} on K states has the joint log density
    log p(z) = init[z_0] + sum_{t >= 1} transitions[t - 1][z_{t-1}, z_t] + const,
where the factors hold every term that depends on the states (emissions included). NumPyro's ``infer_discrete``
does the same for models without ``scan``; this is what ``ppgen.infer.discrete`` uses inside a time plate.
References: Rabiner 1989 (the forward algorithm, Viterbi); Chib 1996, J. Econometrics 75:79 (backward sampling).
"""

__all__ = ["chain_states"]


def chain_states(init, transitions, key, temperature: int):
    """One draw (temperature 1) or the most likely value (temperature 0) of the chain.

    Args:
        init: [K] log factor of z_0.
        transitions: [T - 1, K, K] log factors of (z_{t-1}, z_t), t = 1..T-1.
        key: a JAX PRNG key (unused at temperature 0).
    Returns:
        [T] int states.
    """
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    combine = logsumexp if temperature else jnp.max

    def forward(alpha, factor):
        return combine(alpha[:, None] + factor, axis=0), alpha

    last, alphas = jax.lax.scan(forward, init, transitions)  # alphas: alpha_0..alpha_{T-2}; last: alpha_{T-1}
    keys = jax.random.split(key, len(transitions) + 1)

    def choose(logits, key):
        return jax.random.categorical(key, logits) if temperature else jnp.argmax(logits)

    def backward(following, inputs):
        alpha, factor, key = inputs
        state = choose(alpha + factor[:, following], key)
        return state, state

    final = choose(last, keys[-1])
    _, states = jax.lax.scan(backward, final, (alphas, transitions, keys[:-1]), reverse=True)
    return jnp.concatenate([states, final[None]])
