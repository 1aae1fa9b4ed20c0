"""The sites of a time plate's steps under Pyro: a loop names step t's sites ``name__t`` (``StepSites`` in
``ppgen.models.pyro_steps``); draws of those sites are gathered back into one array per variable,
[chain, draw, T, ...], as NumPyro's ``scan`` records them (``gather_steps``), and a point's values split into them
(``split_steps``)."""

from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["step_site", "gather_steps", "split_steps"]


def step_site(name: str, t: int) -> str:
    """The Pyro site name of variable ``name`` at step ``t``."""
    return f"{name}__{t}"


def gather_steps(posterior: Mapping[str, np.ndarray], names: Iterable[str], lengths: Mapping[str, int]) -> dict:
    """Posterior draws with each variable in ``names`` gathered from its step sites: ``{name__0, ..., name__(T-1)}``
    [chain, draw, ...] -> ``name`` [chain, draw, T, ...]; ``lengths`` gives each variable's T."""
    gathered = dict(posterior)
    for name in names:
        keys = [step_site(name, t) for t in range(lengths[name])]
        if keys and all(key in gathered for key in keys):
            gathered[name] = np.stack([gathered.pop(key) for key in keys], axis=2)
    return gathered


def split_steps(values: Mapping, names: Iterable[str]) -> dict:
    """The inverse of ``gather_steps`` for one point: each variable in ``names``, [T, ...], split into its step
    sites ``name__t`` (to condition a Pyro model on it)."""
    split = dict(values)
    for name in names:
        if name in split:
            value = split.pop(name)
            split.update({step_site(name, t): value[t] for t in range(len(value))})
    return split
