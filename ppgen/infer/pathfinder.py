"""Pathfinder (Zhang et al. 2022, "Pathfinder: parallel quasi-Newton variational inference", arXiv 2108.03782) on a
NumPyro model, by blackjax: a quick approximate posterior (``inference.method = "pathfinder"``) and starting points
for NUTS (``inference.init_strategy = "pathfinder"``).

Multi-path Pathfinder, as Stan runs it (``PathfinderSettings``): ``num_paths`` L-BFGS paths, each from a uniform
start in (-2, 2) on the unconstrained space; along each path, the normal approximation (at an iterate, with the
L-BFGS inverse Hessian as covariance) of highest ELBO, estimated from ``num_elbo_draws`` draws, gives
``draws_per_path`` draws; all the paths' draws are resampled to ``num_samples`` by their Pareto-smoothed importance
weights p / q (PSIS, ``ppgen.evaluate.elpd.psis``; q is a draw's own path's approximation). The Pareto k of those
weights says how far to trust the draws: above 0.7 (``K_THRESHOLD``) the approximations miss the posterior's tails
(a funnel, heavy tails, several modes) and importance resampling cannot mend it.

blackjax 1.7 centres the approximation at an iterate theta at theta + Sigma grad(-log p), where the paper has
theta + Sigma grad(log p): it hands ``bfgs_sample`` the gradient of the objective it minimizes. Away from the mode
its draws then land beyond theta rather than at the mode, and its ELBO picks the iterate nearest the mode rather
than the best approximation. Here the path's gradients are negated before sampling, and each iterate's ELBO is
estimated afresh (blackjax's own, from one draw, only marks the iterations L-BFGS made: -inf past its end).
"""

import math
from dataclasses import dataclass

import numpy as np

from ppgen.errors import PpgenError
from ppgen.infer.posterior_settings import PathfinderSettings

__all__ = ["K_THRESHOLD", "PathfinderDraws", "pathfinder", "warnings_of"]

K_THRESHOLD = 0.7  # Pareto k above which importance weights are unreliable (Vehtari et al. 2024, arXiv 1507.02646)


@dataclass(frozen=True)
class PathfinderDraws:
    """Draws of multi-path Pathfinder.

    unconstrained: site -> [num_samples, ...] values on the unconstrained space.
    constrained: site -> [num_samples, ...] values of the latent (and deterministic) sites.
    log_density: [num_samples] log p of each draw on the unconstrained space (Jacobian included), up to a constant.
    pareto_k: of the importance weights of all paths' draws (-inf when they are all equal: q is p).
    paths: the paths whose best approximation has a finite ELBO (the others' draws weigh nothing).
    """

    unconstrained: dict[str, np.ndarray]
    constrained: dict[str, np.ndarray]
    log_density: np.ndarray
    pareto_k: float
    paths: int


def pathfinder(model, model_kwargs: dict, settings: PathfinderSettings, replace: bool = True) -> PathfinderDraws:
    """Multi-path Pathfinder on ``model(**model_kwargs)`` (a NumPyro model; call it in ``float64()``), resampled
    with replacement, or without (``replace=False``: distinct draws, e.g. chains' starts, while enough weigh
    anything). Raises PpgenError when no path finds an approximation with a finite ELBO."""
    import jax
    from numpyro.infer import init_to_uniform
    from numpyro.infer.util import initialize_model

    from ppgen.evaluate.elpd import psis

    start_key, path_key = jax.random.split(jax.random.PRNGKey(settings.seed))
    starts = jax.random.split(start_key, settings.num_paths)
    info = initialize_model(starts, model, init_strategy=init_to_uniform, model_kwargs=model_kwargs)

    def log_density(z):
        return -info.potential_fn(z)

    # One path after another (lax.map): under vmap, L-BFGS's per-iteration cond would run every iteration's line
    # search for all paths until max_iterations, long after they converged.
    run_paths = jax.jit(
        lambda keys, starts: jax.lax.map(lambda both: _path(log_density, settings, *both), (keys, starts))
    )
    draws, log_q, log_p, elbo = jax.device_get(
        run_paths(jax.random.split(path_key, settings.num_paths), info.param_info.z)
    )
    found = np.isfinite(elbo)  # [path]
    log_weights = np.where(found[:, None], log_p - log_q, -np.inf).ravel()
    kept = np.flatnonzero(np.isfinite(log_weights))
    if not kept.size:
        raise PpgenError(
            f"pathfinder: none of the {settings.num_paths} L-BFGS paths found a normal approximation with a finite"
            " ELBO (the log density is not finite near the starts); try inference.method = 'nuts'"
        )
    smoothed, pareto_k = psis(log_weights[kept])
    weights = np.exp(smoothed - smoothed.max())
    weights /= weights.sum()
    distinct = not replace and np.count_nonzero(weights) >= settings.num_samples
    rng = np.random.default_rng(settings.seed)
    chosen = kept[rng.choice(kept.size, size=settings.num_samples, replace=not distinct, p=weights)]
    unconstrained = {site: value.reshape(-1, *value.shape[2:])[chosen] for site, value in draws.items()}
    constrained = jax.device_get(jax.jit(jax.vmap(info.postprocess_fn))(unconstrained))
    return PathfinderDraws(
        unconstrained,
        {site: np.asarray(value) for site, value in constrained.items()},
        log_p.ravel()[chosen],
        pareto_k,
        int(found.sum()),
    )


def _path(log_density, settings: PathfinderSettings, key, start: dict):
    """One path from ``start`` {site: unconstrained value}: (draws {site: [draws_per_path, ...]}, their log q and
    log p [draws_per_path], the ELBO of the approximation they come from (-inf: none had a finite one))."""
    import jax
    import jax.numpy as jnp
    from blackjax.vi import pathfinder as blackjax_pathfinder

    approximate_key, elbo_key, draw_key = jax.random.split(key, 3)
    _, info = blackjax_pathfinder.approximate(
        approximate_key, log_density, start, 1, maxiter=settings.max_iterations, maxcor=settings.history_size
    )
    path = info.path._replace(grad_position=jax.tree.map(jnp.negative, info.path.grad_position))

    def elbo(state, key):
        draws, log_q = blackjax_pathfinder.sample(key, state, settings.num_elbo_draws)
        return jnp.mean(jax.vmap(log_density)(draws) - log_q)

    # lax.map, not vmap: vmapped over the max_iterations + 1 iterates (1001), the program hung XLA:CPU (jax 0.10.2)
    elbos = jax.lax.map(lambda both: elbo(*both), (path, jax.random.split(elbo_key, len(path.elbo))))
    elbos = jnp.where(jnp.isfinite(info.path.elbo) & jnp.isfinite(elbos), elbos, -jnp.inf)
    best = jax.tree.map(lambda value: value[jnp.argmax(elbos)], path)
    draws, log_q = blackjax_pathfinder.sample(draw_key, best, settings.draws_per_path)
    return draws, log_q, jax.vmap(log_density)(draws), jnp.max(elbos)


def warnings_of(draws: PathfinderDraws, settings: PathfinderSettings) -> tuple[str, ...]:
    """One line per problem of the draws: paths that found no approximation, Pareto k > ``K_THRESHOLD``."""
    lines = []
    if draws.paths < settings.num_paths:
        lines.append(
            f"pathfinder: {settings.num_paths - draws.paths} of {settings.num_paths} paths found no approximation"
            " with a finite ELBO; the draws come from the others"
        )
    if draws.pareto_k > K_THRESHOLD or math.isnan(draws.pareto_k):
        lines.append(
            f"pathfinder: Pareto k {draws.pareto_k:.2f} > {K_THRESHOLD} of the importance weights: the normal"
            " approximations miss the posterior (heavy tails, a funnel or several modes) and the draws are"
            " unreliable; use inference.method = 'nuts' (inference.init_strategy = 'pathfinder' starts it here)"
        )
    return tuple(lines)
