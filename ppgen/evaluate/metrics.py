"""Unit conversions for reported figures, and the record of every importance-sampled estimate of a run."""

import math

import torch

__all__ = ["bits_per_dim", "ESTIMATES", "estimate_key", "keep_estimates"]

# Figures of the test split estimated with K importance samples on its first N examples: ``{name}`` with
# ``{name}_num_samples`` (K), ``{name}_num_examples`` (N) and other ``{name}_...`` figures of the same estimate.
ESTIMATES = ("nll", "accuracy")


def bits_per_dim(log_prob: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """-log p(x) in bits per dimension, for log_prob in nats over num_dims dimensions.

    For discrete data (binarized pixels) this is the usual figure. For densities of continuous data it
    depends on the data's scale; compare such figures only at the same scaling.
    """
    return -log_prob / (num_dims * math.log(2.0))


def estimate_key(figures: dict, name: str) -> str:
    """How an estimate is filed in ``{name}_estimates``: by its K and example count."""
    return f"K={figures[f'{name}_num_samples']}, {figures[f'{name}_num_examples']} examples"


def keep_estimates(old: dict, new: dict) -> dict:
    """One split's figures: ``new`` over ``old``, except that no estimate is lost. Every estimate of ESTIMATES
    either holds is filed in ``{name}_estimates`` by K and example count (a new one replaces only one of the same
    K and count), and the headline ``{name}...`` figures are those over the most examples, then the largest K: a
    partial or cheaper re-evaluation never replaces a fuller one."""
    merged = {**old, **new}
    for name in ESTIMATES:
        estimates = dict(old.get(f"{name}_estimates") or {})
        for figures in (old, new):  # old's headline may predate {name}_estimates
            if {name, f"{name}_num_samples", f"{name}_num_examples"} <= figures.keys():
                estimates[estimate_key(figures, name)] = _figures_of(figures, name)
        if not estimates:
            continue
        best = max(
            estimates.values(), key=lambda f: (f.get(f"{name}_num_examples", 0), f.get(f"{name}_num_samples", 0))
        )
        merged = {key: value for key, value in merged.items() if key not in _figures_of(merged, name)}
        merged.update(best, **{f"{name}_estimates": estimates})
    return merged


def _figures_of(figures: dict, name: str) -> dict:
    """The figures of one estimate: ``name`` and its ``name_...`` companions, without the record of all."""
    return {
        key: value
        for key, value in figures.items()
        if (key == name or key.startswith(f"{name}_")) and key != f"{name}_estimates"
    }
