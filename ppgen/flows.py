"""Normalizing flows from ``pyro.distributions.transforms``, as stacks of layers to build guides and densities.

Guides: a diagonal Gaussian q0(z | x) pushed through flows conditioned on features h(x) of the example,
so that the whole guide q(z | x) stays amortized. Densities: a standard normal pushed through
unconditional flows, x = f(z).

| family            | layer (Pyro)                                       | reference                      |
|-------------------|----------------------------------------------------|--------------------------------|
| "iaf"             | (Conditional)AffineAutoregressive                  | Kingma et al. 2016, 1606.04934 |
| "affine_coupling" | (Conditional)AffineCoupling, dimensions flipped    | Dinh et al. 2017, 1605.08803   |
| "planar"          | (Conditional)Planar                                | Rezende & Mohamed 2015, 1505.05770 |
| "radial"          | (Conditional)Radial                                | Rezende & Mohamed 2015         |
| "spline"          | (Conditional)SplineAutoregressive                  | Durkan et al. 2019, 1906.04032 |
| "maf"             | AffineAutoregressive, inverted (densities only)    | Papamakarios et al. 2017, 1705.07057 |
| "nice"            | additive coupling and a diagonal scale (densities) | Dinh et al. 2015, 1410.8516    |

Coupling layers flip the order of the dimensions between layers, so every dimension is transformed;
autoregressive layers draw their own random orders.
"""

from collections.abc import Sequence

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions.torch_transform import TransformModule
from pyro.nn import DenseNN
from torch import nn
from torch.distributions import constraints

from ppgen.precision import full_precision

__all__ = [
    "GUIDE_FLOWS",
    "DENSITY_FLOWS",
    "AUTOREGRESSIVE_FLOWS",
    "Flip",
    "ConditionalFlow",
    "DensityFlow",
    "center",
]

GUIDE_FLOWS = ("iaf", "affine_coupling", "planar", "radial", "spline")
DENSITY_FLOWS = ("realnvp", "maf", "nice")
AUTOREGRESSIVE_FLOWS = ("iaf", "spline", "maf")  # masked networks: every hidden width >= the dimension


class Flip(T.Transform):
    """Reverse the order of the last dimension: a volume-preserving permutation with no parameters."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __eq__(self, other):
        return isinstance(other, Flip)

    def _call(self, x):
        return x.flip(-1)

    def _inverse(self, y):
        return y.flip(-1)

    def log_abs_det_jacobian(self, x, y):
        return x.new_zeros(x.shape[:-1])


class ConditionalFlow(nn.Module):
    """A stack of flow layers conditioned on a context h [..., C], for amortized guides.

    ``transforms(h)`` gives the conditioned transforms for ``dist.TransformedDistribution``.
    """

    def __init__(self, family: str, dim: int, context_dim: int, num_layers: int, hidden: Sequence[int]):
        super().__init__()
        if family not in GUIDE_FLOWS:
            raise ValueError(f"unknown guide flow {family!r}; expected one of {GUIDE_FLOWS}")
        hidden = list(hidden)
        build = {
            "iaf": lambda: T.conditional_affine_autoregressive(dim, context_dim, hidden_dims=hidden),
            "affine_coupling": lambda: T.conditional_affine_coupling(dim, context_dim, hidden_dims=hidden),
            "planar": lambda: T.conditional_planar(dim, context_dim, hidden_dims=hidden),
            "radial": lambda: T.conditional_radial(dim, context_dim, hidden_dims=hidden),
            "spline": lambda: T.conditional_spline_autoregressive(dim, context_dim, hidden_dims=hidden),
        }[family]
        self.layers = nn.ModuleList(build() for _ in range(num_layers))
        self.flip_between = family == "affine_coupling"
        _hypernets_in_full_precision(self.layers)

    def transforms(self, context: torch.Tensor) -> list[T.Transform]:
        transforms: list[T.Transform] = []
        for index, layer in enumerate(self.layers):
            if self.flip_between and index:
                transforms.append(Flip())
            transforms.append(layer.condition(context))
        return transforms


class _AdditiveCouplingNet(nn.Module):
    """The shift network of an additive (NICE) coupling: AffineCoupling with log-scale fixed at 0."""

    def __init__(self, split_dim: int, out_dim: int, hidden: Sequence[int]):
        super().__init__()
        self.net = DenseNN(split_dim, list(hidden), param_dims=[out_dim])

    def forward(self, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shift = self.net(x1)
        return shift, torch.zeros_like(shift)


class _DiagonalScale(TransformModule):
    """y = x * exp(s) with a learned s [D]: NICE's final scaling layer."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, dim: int):
        super().__init__(cache_size=1)
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def _call(self, x):
        return x * self.log_scale.exp()

    def _inverse(self, y):
        return y * (-self.log_scale).exp()

    def log_abs_det_jacobian(self, x, y):
        return self.log_scale.sum().expand(x.shape[:-1])


class DensityFlow(nn.Module):
    """x = f(z), z ~ N(0, I_D): ``distribution()`` is the density of x, with event shape [D]."""

    def __init__(self, family: str, dim: int, num_layers: int, hidden: Sequence[int]):
        super().__init__()
        if family not in DENSITY_FLOWS:
            raise ValueError(f"unknown density flow {family!r}; expected one of {DENSITY_FLOWS}")
        hidden, split = list(hidden), dim // 2
        if family == "realnvp":
            layers = [T.affine_coupling(dim, hidden_dims=hidden) for _ in range(num_layers)]
        elif family == "maf":
            layers = [T.affine_autoregressive(dim, hidden_dims=hidden) for _ in range(num_layers)]
        else:
            layers = [
                T.AffineCoupling(split, _AdditiveCouplingNet(split, dim - split, hidden)) for _ in range(num_layers)
            ]
            layers.append(_DiagonalScale(dim))
        self.family = family
        self.layers = nn.ModuleList(layers)
        _hypernets_in_full_precision(self.layers)
        self.register_buffer("base_loc", torch.zeros(dim))
        self.register_buffer("base_scale", torch.ones(dim))

    def distribution(self) -> dist.TransformedDistribution:
        base = dist.Normal(self.base_loc, self.base_scale).to_event(1)
        transforms: list[T.Transform] = []
        for index, layer in enumerate(self.layers):
            if self.family != "maf" and index and not isinstance(layer, _DiagonalScale):
                transforms.append(Flip())
            # MAF evaluates densities in one pass: its autoregressive layer runs data -> noise.
            transforms.append(layer.inv if self.family == "maf" else layer)
        return dist.TransformedDistribution(base, transforms)


def _hypernets_in_full_precision(layers: nn.ModuleList) -> None:
    """Under bf16 autocast the flows' networks run in bf16; their outputs (shifts, log-scales, spline knots) are
    cast to fp32, so that the transforms and their log-Jacobians, summed over dimensions, are computed in fp32."""
    for layer in layers:
        for network in layer.children():
            network.register_forward_hook(_outputs_in_full_precision)


def _outputs_in_full_precision(module, inputs, outputs):
    if isinstance(outputs, torch.Tensor):
        return full_precision(outputs)
    return tuple(full_precision(output) for output in outputs)


def center(distribution: dist.Distribution) -> torch.Tensor:
    """A representative point: the mean, or for a flow the image of its base distribution's mean."""
    if isinstance(distribution, dist.TransformedDistribution):
        point = center(distribution.base_dist)
        for transform in distribution.transforms:
            point = transform(point)
        return point
    if isinstance(distribution, dist.Independent):
        return center(distribution.base_dist)
    return distribution.mean
