"""Posterior draws [chain, draw, ...] as every inference method hands them back (MCMC, Langevin, SGLD, or draws
from a fitted autoguide), with the sampler's per-draw statistics named as ArviZ names them."""

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Draws", "stack_chains"]


@dataclass(frozen=True)
class Draws:
    """Posterior draws and what the sampler says about them.

    posterior: site name -> [chain, draw, ...] constrained values.
    sample_stats: ArviZ names (``diverging``, ``acceptance_rate``, ``step_size``, ``tree_depth``, ``lp``, ...)
        -> [chain, draw].
    seconds: wall time of warmup and sampling.
    choices: what the sampler chose for itself, e.g. {"mass": "dense"} for NUTS's mass = "auto", or found (Pathfinder's
        {"Pareto k": "0.41"}).
    warnings: what the method says is wrong with its draws (one line each), added to the run's warnings.
    """

    posterior: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    choices: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def thinned(self, step: int) -> "Draws":
        """Every ``step``-th draw of each chain (draws [chain, ceil(draw / step), ...])."""
        if step == 1:
            return self
        return Draws(
            {name: value[:, ::step] for name, value in self.posterior.items()},
            {name: value[:, ::step] for name, value in self.sample_stats.items()},
            self.seconds,
            self.choices,
            self.warnings,
        )

    def flat(self, names) -> dict[str, np.ndarray]:
        """The draws of ``names`` with the chains concatenated: name -> [chain * draw, ...]."""
        return {name: self.posterior[name].reshape(-1, *self.posterior[name].shape[2:]) for name in names}


def stack_chains(chains: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """[{name: [draw, ...]}] per chain -> {name: [chain, draw, ...]}."""
    return {name: np.stack([chain[name] for chain in chains]) for name in chains[0]}
