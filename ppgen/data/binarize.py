"""Binarization of [0, 1] intensities for Bernoulli likelihoods: fixed by a threshold, or drawn afresh."""

import torch
from torch import Tensor

from ppgen.errors import DataError

__all__ = ["BINARIZE_MODES", "threshold_binarize", "dynamic_binarize", "check_unit_interval"]

BINARIZE_MODES = ("none", "threshold", "dynamic")


def threshold_binarize(x: Tensor, threshold: float = 0.5) -> Tensor:
    """1 where x > threshold, else 0, as float32 of x's shape."""
    return (x > threshold).float()


def dynamic_binarize(x: Tensor) -> Tensor:
    """One Bernoulli(x) draw per entry, same shape, dtype and device as x (Salakhutdinov & Murray, 2008).

    Uses the global torch RNG on purpose: the trainer checkpoints that RNG, so a resumed run draws the
    same binarizations as an uninterrupted one.
    """
    return torch.bernoulli(x)


def check_unit_interval(x: Tensor, source: str) -> None:
    """Raise DataError naming `source` and x's [min, max] if any value of x falls outside [0, 1]."""
    low, high = x.min().item(), x.max().item()
    if not (0.0 <= low and high <= 1.0):  # written so that NaN fails too
        raise DataError(f"{source}: values span [{low:g}, {high:g}], but binarization needs intensities in [0, 1]")
