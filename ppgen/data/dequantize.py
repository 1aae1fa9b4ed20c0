"""Uniform dequantization of pixels on a grid of levels, for continuous densities of discrete data."""

import math

import torch
from torch import Tensor

__all__ = ["DATASET_LEVELS", "dequantize", "discrete_bits_per_dim"]

# Pixel values per data set: digits count 0..16, MNIST 0..255.
DATASET_LEVELS = {"digits": 17, "mnist": 256}


def dequantize(x: Tensor, levels: int, generator: torch.Generator | None = None) -> Tensor:
    """(k + u) / levels for pixels x = k / (levels - 1) and u ~ U(0, 1): a continuous y in [0, 1) whose
    density lower-bounds the discrete probability, log P(k) >= E_u[log p(y)] - D log(levels)
    (Theis et al. 2016, arXiv:1511.01844). Without a generator the global RNG is used, as the trainer
    checkpoints it."""
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device if generator is None else "cpu")
    return ((x * (levels - 1)).round() + noise.to(x.device)) / levels


def discrete_bits_per_dim(log_density: float, num_dims: int, levels: int) -> float:
    """Bits per dimension of the discrete data from the log-density (nats) of its dequantized version."""
    return -(log_density - num_dims * math.log(levels)) / (num_dims * math.log(2.0))
