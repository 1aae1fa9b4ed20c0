"""Small network blocks shared by the model zoo: MLPs, and heads that turn a network's output into a distribution.

A head is an ``nn.Module`` whose ``forward(context)`` returns a Pyro distribution, so guides read as
``pyro.sample("z", self.encoder(x))`` and likelihoods as ``pyro.sample("x", self.decoder(z), obs=x)``.
"""

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

__all__ = [
    "ACTIVATIONS",
    "mlp",
    "DiagonalNormal",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "ContinuousBernoulliLikelihood",
    "LIKELIHOODS",
    "likelihood_head",
]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
}

# Keeps scales away from zero, where log-densities (and their gradients) blow up.
MIN_SCALE = 1e-4


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "tanh") -> nn.Sequential:
    """A fully connected network in_dim -> hidden[0] -> ... -> out_dim, with no activation on the output."""
    widths = [in_dim, *hidden]
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(width_in, width_out), ACTIVATIONS[activation]()]
    layers.append(nn.Linear(widths[-1], out_dim))
    return nn.Sequential(*layers)


class DiagonalNormal(nn.Module):
    """context [..., C] -> Normal(loc, scale) with event shape [D]; ``net`` maps C to 2 D outputs."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, context: torch.Tensor) -> dist.Distribution:
        loc, raw_scale = self.net(context).chunk(2, dim=-1)
        return dist.Normal(loc, softplus(raw_scale) + MIN_SCALE).to_event(1)


class BernoulliLikelihood(nn.Module):
    """z [..., Z] -> Bernoulli(logits = net(z)) with event shape [D], for binary data."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> dist.Distribution:
        return dist.Bernoulli(logits=self.net(z)).to_event(1)


class ContinuousBernoulliLikelihood(nn.Module):
    """z -> ContinuousBernoulli(logits = net(z)), a normalized density on [0, 1]^D
    (Loaiza-Ganem & Cunningham 2019, arXiv:1907.06845)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, z: torch.Tensor) -> dist.Distribution:
        return dist.ContinuousBernoulli(logits=self.net(z)).to_event(1)


class GaussianLikelihood(nn.Module):
    """z -> Normal(net(z), scale) with event shape [D].

    ``scale="learned"`` learns one scale shared by all dimensions (a calibrated decoder, Rybkin et al.
    2021, arXiv:2006.13202), which cannot collapse on constant pixels the way per-pixel scales can;
    a number fixes the scale.
    """

    def __init__(self, net: nn.Module, scale: float | str = "learned"):
        super().__init__()
        self.net = net
        self.raw_scale = nn.Parameter(torch.zeros(())) if scale == "learned" else None
        self.register_buffer("fixed_scale", None if scale == "learned" else torch.tensor(float(scale)))

    def scale(self) -> torch.Tensor:
        if self.raw_scale is None:
            return self.fixed_scale
        return softplus(self.raw_scale) + MIN_SCALE

    def forward(self, z: torch.Tensor) -> dist.Distribution:
        loc = self.net(z)
        return dist.Normal(loc, self.scale().expand(loc.shape[-1:])).to_event(1)


LIKELIHOODS = {
    "bernoulli": BernoulliLikelihood,
    "gaussian": GaussianLikelihood,
    "continuous_bernoulli": ContinuousBernoulliLikelihood,
}


def likelihood_head(name: str, net: nn.Module, scale: float | str = "learned") -> nn.Module:
    """The decoder head for a likelihood name in LIKELIHOODS; ``scale`` applies to "gaussian" only."""
    if name == "gaussian":
        return GaussianLikelihood(net, scale)
    return LIKELIHOODS[name](net)
