"""The parts of a diffusion model that are not the chain: its noise schedule, its discretized decoder, and the
labels (with a guidance weight) that a label-conditional chain is conditioned on."""

import math
from dataclasses import dataclass

import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch.distributions import constraints
from torch.special import log_ndtr

__all__ = ["noise_schedule", "DiscretizedNormal", "Conditioning"]

_SCALAR = torch.Size()


def noise_schedule(
    num_steps: int, schedule: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """beta_1..beta_T [T] in float64. "linear" spaces beta from beta_start to beta_end, both given for
    T = 1000 and scaled by 1000 / T (Nichol & Dhariwal 2021, arXiv:2102.09672) so that abar_T stays near 0
    for short chains; "cosine" is their cosine schedule of abar_t."""
    if schedule == "linear":
        scale = 1000.0 / num_steps
        if beta_end * scale >= 1:
            raise ValueError(
                f"the linear schedule scales beta_end = {beta_end} by 1000 / T to {beta_end * scale:g}, which must stay"
                f" below 1: use more steps than {num_steps}"
            )
        betas = torch.linspace(beta_start * scale, beta_end * scale, num_steps, dtype=torch.float64)
    elif schedule == "cosine":
        s = 0.008
        steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        alpha_bar = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        betas = 1 - alpha_bar[1:] / alpha_bar[:-1]
    else:
        raise ValueError(f"unknown schedule {schedule!r}; expected 'linear' or 'cosine'")
    return betas.clamp(max=0.999)


class DiscretizedNormal(TorchDistribution):
    """A Normal(loc, scale) on [0, 1] discretized to ``levels`` values k / (levels - 1): each value gets the
    mass of its bin, the two end bins extended to -inf and +inf (Ho et al. 2020, eq. 13)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.unit_interval
    has_rsample = False

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, levels: int, validate_args=None):
        self.loc, self.scale = torch.broadcast_tensors(loc, scale)
        self.levels = levels
        super().__init__(self.loc.shape, validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return DiscretizedNormal(self.loc.expand(batch_shape), self.scale.expand(batch_shape), self.levels)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc.clamp(0.0, 1.0)

    def sample(self, sample_shape=_SCALAR) -> torch.Tensor:
        with torch.no_grad():
            draw = torch.normal(
                self.loc.expand(sample_shape + self.loc.shape), self.scale.expand(sample_shape + self.loc.shape)
            )
            return (draw.clamp(0.0, 1.0) * (self.levels - 1)).round() / (self.levels - 1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        half_bin = 0.5 / (self.levels - 1)
        upper = torch.where(value >= 1 - half_bin, math.inf, (value + half_bin - self.loc) / self.scale)
        lower = torch.where(value <= half_bin, -math.inf, (value - half_bin - self.loc) / self.scale)
        # log(Phi(upper) - Phi(lower)), evaluated on the side of the mean where it does not cancel.
        flip = lower > 0
        a, b = torch.where(flip, -upper, lower), torch.where(flip, -lower, upper)
        log_b, log_a = log_ndtr(b), log_ndtr(a)
        return log_b + torch.log1p(-torch.exp(log_a - log_b).clamp(max=1 - 1e-12))


@dataclass(frozen=True)
class Conditioning:
    """What the noise predictions of a label-conditional chain take: class labels, and the weight w of
    classifier-free guidance (Ho & Salimans 2021, arXiv:2207.12598).

    labels: class indices that broadcast against the batch dimensions of y_t ([N] for y_t [..., N, D]); the null
        label (index C, the number of classes) asks for the unconditional prediction.
    guidance: w >= 0; the prediction is (1 + w) eps(y_t, t, y) - w eps(y_t, t, null), the conditional one at w = 0.
    """

    labels: torch.Tensor
    guidance: float = 0.0
