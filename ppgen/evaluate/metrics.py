"""Unit conversions for reported figures."""

import math

import torch

__all__ = ["bits_per_dim"]


def bits_per_dim(log_prob: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """-log p(x) in bits per dimension, for log_prob in nats over num_dims dimensions.

    For discrete data (binarized pixels) this is the usual figure. For densities of continuous data it
    depends on the data's scale; compare such figures only at the same scaling.
    """
    return -log_prob / (num_dims * math.log(2.0))
