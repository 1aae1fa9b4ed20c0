"""Small network blocks shared by the model zoo: MLPs, and heads that turn a network's output into a distribution.

A head is an ``nn.Module`` whose ``forward(context)`` returns a Pyro distribution, so guides read as
``pyro.sample("z", self.encoder(x))`` and likelihoods as ``pyro.sample("x", self.decoder(z), obs=x)``.
Under ``torch.autocast`` (bf16 training) a head's network runs in low precision, but the distribution it
returns has fp32 parameters, so log-densities are computed and summed in fp32.
"""

import math
from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from ppgen.flows import ConditionalFlow
from ppgen.precision import full_precision

__all__ = [
    "ACTIVATIONS",
    "MIN_SCALE",
    "trunk",
    "mlp",
    "AmortizedNormal",
    "SinusoidalEmbedding",
    "label_embedding",
    "TimeMLP",
    "SmallUNet",
    "LogitsLikelihood",
    "GaussianLikelihood",
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


def trunk(in_dim: int, hidden: Sequence[int], activation: str = "tanh") -> nn.Sequential:
    """Hidden layers in_dim -> hidden[0] -> ... -> hidden[-1], each followed by the activation."""
    widths = [in_dim, *hidden]
    layers: list[nn.Module] = []
    for width_in, width_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(width_in, width_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "tanh") -> nn.Sequential:
    """A fully connected network in_dim -> hidden... -> out_dim, with no activation on the output."""
    return nn.Sequential(*trunk(in_dim, hidden, activation), nn.Linear(hidden[-1] if hidden else in_dim, out_dim))


class AmortizedNormal(nn.Module):
    """context [..., C] -> a distribution over z [..., Z]: N(loc(h), scale(h)) with h = trunk(context),
    optionally pushed through normalizing flows conditioned on h (see ``ppgen.flows``).

    Args:
        in_dim: C. hidden, activation: the trunk's layers.
        latent_dim: Z.
        flow: None for the diagonal Gaussian, or a family in ``ppgen.flows.GUIDE_FLOWS``.
        flow_layers, flow_hidden: how many flow layers, and the hidden widths of their networks.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        latent_dim: int,
        activation: str = "tanh",
        flow: str | None = None,
        flow_layers: int = 2,
        flow_hidden: Sequence[int] = (64,),
    ):
        super().__init__()
        feature_dim = hidden[-1] if hidden else in_dim
        self.trunk = trunk(in_dim, hidden, activation)
        self.head = nn.Linear(feature_dim, 2 * latent_dim)
        self.flow = None if flow is None else ConditionalFlow(flow, latent_dim, feature_dim, flow_layers, flow_hidden)

    def forward(self, context: torch.Tensor) -> dist.Distribution:
        features = self.trunk(context)
        loc, raw_scale = full_precision(self.head(features)).chunk(2, dim=-1)
        base = dist.Normal(loc, softplus(raw_scale) + MIN_SCALE).to_event(1)
        if self.flow is None:
            return base
        return dist.TransformedDistribution(base, self.flow.transforms(features))


class LogitsLikelihood(nn.Module):
    """z [..., Z] -> family(logits = net(z)) with event shape [D].

    family: ``Bernoulli`` for binary data, or ``ContinuousBernoulli`` for a normalized density on
    [0, 1]^D (Loaiza-Ganem & Cunningham 2019, arXiv:1907.06845).
    """

    def __init__(self, net: nn.Module, family: type[dist.Distribution] = dist.Bernoulli):
        super().__init__()
        self.net, self.family = net, family

    def forward(self, z: torch.Tensor) -> dist.Distribution:
        return self.family(logits=full_precision(self.net(z))).to_event(1)


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
        loc = full_precision(self.net(z))
        return dist.Normal(loc, self.scale().expand(loc.shape[-1:])).to_event(1)


LIKELIHOODS = ("bernoulli", "gaussian", "continuous_bernoulli")


def likelihood_head(name: str, net: nn.Module, scale: float | str = "learned") -> nn.Module:
    """The decoder head for a likelihood name in LIKELIHOODS; ``scale`` applies to "gaussian" only."""
    if name == "gaussian":
        return GaussianLikelihood(net, scale)
    family = {"bernoulli": dist.Bernoulli, "continuous_bernoulli": dist.ContinuousBernoulli}[name]
    return LogitsLikelihood(net, family)


class SinusoidalEmbedding(nn.Module):
    """Integer steps t [...] -> [..., dim] features sin(t w_k), cos(t w_k) with geometric frequencies
    (Vaswani et al. 2017, as used by Ho et al. 2020)."""

    def __init__(self, dim: int):
        super().__init__()
        half = dim // 2
        self.register_buffer("frequencies", torch.exp(-math.log(10000.0) * torch.arange(half) / max(half - 1, 1)))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = t.to(self.frequencies.dtype).unsqueeze(-1) * self.frequencies
        return torch.cat([angles.sin(), angles.cos()], dim=-1)


def label_embedding(num_classes: int, dim: int) -> nn.Embedding | None:
    """A learned [dim] code for each of ``num_classes`` labels and one more, index ``num_classes``, the "null" label
    that stands for no label (classifier-free guidance, Ho & Salimans 2021, arXiv:2207.12598); None for a network
    without labels (``num_classes`` = 0)."""
    return nn.Embedding(num_classes + 1, dim) if num_classes else None


class TimeMLP(nn.Module):
    """(x [..., D], t [...], label [...]) -> [..., D]: an MLP that adds a projection of t's embedding to every hidden
    layer. With ``num_classes`` > 0 it is label-conditional: the label's code (``label_embedding``; label broadcast
    against t) is added to t's embedding."""

    def __init__(
        self, dim: int, hidden: Sequence[int], time_dim: int = 64, activation: str = "silu", num_classes: int = 0
    ):
        super().__init__()
        widths = [dim, *hidden]
        self.embed = nn.Sequential(SinusoidalEmbedding(time_dim), nn.Linear(time_dim, time_dim), nn.SiLU())
        self.label_embed = label_embedding(num_classes, time_dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.times = nn.ModuleList(nn.Linear(time_dim, b) for b in widths[1:])
        self.activation = ACTIVATIONS[activation]()
        self.out = nn.Linear(widths[-1], dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embed(t)
        if self.label_embed is not None:
            e = e + self.label_embed(label)
        h = x
        for layer, time in zip(self.layers, self.times):
            h = self.activation(layer(h) + time(e))
        return self.out(h)


class _ResidualBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the time embedding added in between and a residual connection."""

    def __init__(self, channels_in: int, channels_out: int, time_dim: int):
        super().__init__()
        self.norm1, self.norm2 = (
            nn.GroupNorm(min(8, channels_in), channels_in),
            nn.GroupNorm(min(8, channels_out), channels_out),
        )
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.time = nn.Linear(time_dim, channels_out)
        self.skip = nn.Identity() if channels_in == channels_out else nn.Conv2d(channels_in, channels_out, 1)

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x))) + self.time(e)[:, :, None, None]
        return self.skip(x) + self.conv2(nn.functional.silu(self.norm2(h)))


class SmallUNet(nn.Module):
    """(x [..., H W], t [...], label [...]) -> [..., H W] for one-channel H x W images (H and W divisible by 4): three
    resolutions with skip connections, the time embedding added in every block (after Ho et al. 2020). With
    ``num_classes`` > 0 the label's code (``label_embedding``) is added to the time embedding."""

    def __init__(self, image_shape: tuple[int, int], channels: int = 32, time_dim: int = 64, num_classes: int = 0):
        super().__init__()
        if len(image_shape) != 2 or image_shape[0] % 4 or image_shape[1] % 4:
            raise ValueError(f"the U-Net needs images whose sides are divisible by 4, not {image_shape}")
        c = channels
        self.image_shape = tuple(image_shape)
        self.embed = nn.Sequential(SinusoidalEmbedding(time_dim), nn.Linear(time_dim, time_dim), nn.SiLU())
        self.label_embed = label_embedding(num_classes, time_dim)
        self.conv_in = nn.Conv2d(1, c, 3, padding=1)
        self.down1, self.down2 = _ResidualBlock(c, c, time_dim), _ResidualBlock(c, 2 * c, time_dim)
        self.middle = _ResidualBlock(2 * c, 2 * c, time_dim)
        self.up2, self.up1 = _ResidualBlock(4 * c, 2 * c, time_dim), _ResidualBlock(3 * c, c, time_dim)
        self.downsample1, self.downsample2 = nn.Conv2d(c, c, 3, 2, 1), nn.Conv2d(2 * c, 2 * c, 3, 2, 1)
        self.conv_out = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        batch_shape = x.shape[:-1]
        images = x.reshape(-1, 1, *self.image_shape)
        e = self.embed(t.expand(batch_shape).reshape(-1))
        if self.label_embed is not None:
            e = e + self.label_embed(label.expand(batch_shape).reshape(-1))
        h1 = self.down1(self.conv_in(images), e)
        h2 = self.down2(self.downsample1(h1), e)
        h3 = self.middle(self.downsample2(h2), e)
        u2 = self.up2(torch.cat([nn.functional.interpolate(h3, scale_factor=2.0), h2], dim=1), e)
        u1 = self.up1(torch.cat([nn.functional.interpolate(u2, scale_factor=2.0), h1], dim=1), e)
        return self.conv_out(u1).reshape(*batch_shape, -1)
