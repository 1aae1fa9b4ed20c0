"""A normalizing-flow density x = f(z), z ~ N(0, I), as a Pyro model with no latent sites: fitting it by
SVI with an empty guide is maximum likelihood, and its ELBO is the exact log-likelihood."""

import math
from collections.abc import Sequence

import pyro
import torch
from pyro.nn import PyroModule

from ppgen.flows import AUTOREGRESSIVE_FLOWS, DensityFlow
from ppgen.models.family import GenerativeFamily, check_autoregressive_widths

__all__ = ["FlowDensity"]


class FlowDensity(GenerativeFamily, PyroModule):
    """Args:
    data_dim: D.
    family: "realnvp", "maf" or "nice" (see ``ppgen.flows``).
    layers: number of flow layers. hidden: widths of each layer's network.
    """

    kind = "flow"
    likelihood = "exact"  # no latent sites: the importance weight is the density itself

    def __init__(self, data_dim: int, family: str = "realnvp", layers: int = 4, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        if data_dim < 2 and family != "maf":
            raise ValueError(f"{family} coupling layers need at least two dimensions")
        self.data_dim = data_dim
        self.flow = DensityFlow(family, data_dim, layers, hidden)

    @classmethod
    def from_spec(cls, spec, event_shape, guide=None, labels=None) -> "FlowDensity":
        data_dim = math.prod(event_shape)
        if spec.family in AUTOREGRESSIVE_FLOWS:
            check_autoregressive_widths("model.hidden", spec.hidden, data_dim)
        return cls(data_dim, **spec.model_dump(exclude={"kind"}))

    def model(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, D] observed, or None to draw one example."""
        with pyro.plate("data", 1 if x is None else x.shape[0]):
            return pyro.sample("x", self.flow.distribution(), obs=x)

    def guide(self, x: torch.Tensor | None = None) -> None:
        """No latent variables: the guide is empty."""

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) [N] for x [N, D]."""
        return self.flow.distribution().log_prob(x)

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """[num_samples, D] exact draws (a flow has no decoder mean, so ``mean`` is ignored)."""
        return self.flow.distribution().sample((num_samples,))
