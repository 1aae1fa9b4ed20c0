"""A hierarchical VAE with L stochastic layers, p(z_L) prod_l p(z_l | z_l+1) p(x | z_1), and either a
bottom-up guide q(z_1 | x) prod_l q(z_l+1 | z_l), or a top-down (ladder) guide that shares the
generative model's top-down path (Sønderby et al. 2016, arXiv:1602.02282).

The ladder guide runs a deterministic pass x -> d_1 -> ... -> d_L, each d_l giving a Gaussian "message"
N(m_l, s_l). Then, top down: q(z_L | x) = N(m_L, s_L) and q(z_l | z_l+1, x) is the precision-weighted
product of the message with the generative prior p(z_l | z_l+1) = N(mu_l, sigma_l):
    scale^-2 = s_l^-2 + sigma_l^-2,   loc = scale^2 (m_l s_l^-2 + mu_l sigma_l^-2).
Either guide's layers may be pushed through normalizing flows conditioned on the layer's features.
"""

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn
from torch.nn.functional import softplus

from ppgen.flows import ConditionalFlow, center
from ppgen.models.family import GenerativeFamily, guide_options
from ppgen.nets import MIN_SCALE, AmortizedNormal, likelihood_head, mlp, trunk
from ppgen.precision import full_precision
from ppgen.spec.schema import GuideSpec

__all__ = ["HierarchicalVAE"]


class HierarchicalVAE(GenerativeFamily, PyroModule):
    """Sites "z_1" (next to x) ... "z_L" inside the "data" plate.

    Args:
        data_dim: D.
        latent_dims: [Z_1, ..., Z_L], at least two layers.
        hidden: widths between x and z_1; latent_hidden: widths between z_l and z_l+1.
        structure: "top_down" (ladder) or "bottom_up" guide.
        The other arguments are those of ``ppgen.models.VAE``.
    """

    kind = "hvae"

    def __init__(
        self,
        data_dim: int,
        latent_dims: Sequence[int] = (100, 50),
        hidden: Sequence[int] = (200, 200),
        latent_hidden: Sequence[int] = (100, 100),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        likelihood_scale: float | str = "learned",
        structure: str = "top_down",
        guide_family: str = "diagonal",
        guide_flows: int = 2,
        guide_hidden: Sequence[int] = (64,),
    ):
        super().__init__()
        if len(latent_dims) < 2:
            raise ValueError("a hierarchical VAE needs at least two latent layers")
        if structure not in ("top_down", "bottom_up"):
            raise ValueError(f"unknown guide structure {structure!r}")
        self.latent_dims, self.structure = list(latent_dims), structure
        dims, flow = self.latent_dims, None if guide_family == "diagonal" else guide_family
        # Generative model: p(z_l | z_l+1) for l = 1..L-1, and p(x | z_1).
        self.priors = nn.ModuleList(
            AmortizedNormal(dims[layer + 1], list(reversed(latent_hidden)), dims[layer], activation)
            for layer in range(len(dims) - 1)
        )
        self.decoder = likelihood_head(
            likelihood, mlp(dims[0], list(reversed(hidden)), data_dim, activation), likelihood_scale
        )
        inputs = [data_dim, *dims[:-1]]
        widths = [list(hidden)] + [list(latent_hidden)] * (len(dims) - 1)
        if structure == "bottom_up":  # q(z_1 | x), q(z_l+1 | z_l)
            self.encoders = nn.ModuleList(
                AmortizedNormal(inputs[layer], widths[layer], dims[layer], activation, flow, guide_flows, guide_hidden)
                for layer in range(len(dims))
            )
        else:  # the deterministic path x -> d_1 -> ... -> d_L, its Gaussian messages, optional flows
            feature_dims, previous = [], data_dim
            for width in widths:
                previous = width[-1] if width else previous
                feature_dims.append(previous)
            path_inputs = [data_dim, *feature_dims[:-1]]
            self.paths = nn.ModuleList(
                trunk(path_inputs[layer], widths[layer], activation) for layer in range(len(dims))
            )
            self.messages = nn.ModuleList(nn.Linear(feature_dims[layer], 2 * dims[layer]) for layer in range(len(dims)))
            self.flows = None
            if flow:
                self.flows = nn.ModuleList(
                    ConditionalFlow(flow, dims[layer], feature_dims[layer], guide_flows, guide_hidden)
                    for layer in range(len(dims))
                )
        self.register_buffer("top_loc", torch.zeros(dims[-1]))
        self.register_buffer("top_scale", torch.ones(dims[-1]))

    @classmethod
    def from_spec(cls, spec, event_shape, guide=None, labels=None) -> "HierarchicalVAE":
        guide = guide or GuideSpec()
        options = {**spec.model_dump(exclude={"kind"}), **guide_options(guide, spec.latent_dims)}
        return cls(math.prod(event_shape), structure=guide.structure, **options)

    def model(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, D] observed, or None to draw one example."""
        with pyro.plate("data", 1 if x is None else x.shape[0]):
            z = pyro.sample(f"z_{len(self.latent_dims)}", dist.Normal(self.top_loc, self.top_scale).to_event(1))
            for layer in reversed(range(len(self.priors))):
                z = pyro.sample(f"z_{layer + 1}", self.priors[layer](z))
            return pyro.sample("x", self.decoder(z), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z_1, ..., z_L | x) for x [N, D]."""
        with pyro.plate("data", x.shape[0]):
            self._run_guide(x, pyro.sample)

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """[num_samples, D] ancestral draws: decoder means (or draws of x) for z from the prior chain."""
        z = dist.Normal(self.top_loc, self.top_scale).to_event(1).sample((num_samples,))
        for layer in reversed(range(len(self.priors))):
            z = self.priors[layer](z).sample()
        likelihood = self.decoder(z)
        return likelihood.mean if mean else likelihood.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """[N, D] decoder means at the guide's layers taken at their centres, in turn."""
        return self.decoder(self._run_guide(x, lambda name, q: center(q))["z_1"]).mean

    def _run_guide(self, x: torch.Tensor, draw) -> dict[str, torch.Tensor]:
        """Draw every guide layer in order with ``draw(site name, distribution) -> value``."""
        values = {}
        if self.structure == "bottom_up":
            h = x
            for layer, encoder in enumerate(self.encoders):
                h = values[f"z_{layer + 1}"] = draw(f"z_{layer + 1}", encoder(h))
            return values
        features, d = [], x
        for path in self.paths:
            d = path(d)
            features.append(d)
        z = None
        for layer in reversed(range(len(self.latent_dims))):
            m, raw_s = full_precision(self.messages[layer](features[layer])).chunk(2, dim=-1)
            s = softplus(raw_s) + MIN_SCALE
            if z is None:
                loc, scale = m, s
            else:
                prior = self.priors[layer](z).base_dist
                precision = s.pow(-2) + prior.scale.pow(-2)
                scale = precision.rsqrt()
                loc = (m * s.pow(-2) + prior.loc * prior.scale.pow(-2)) / precision
            q = dist.Normal(loc, scale).to_event(1)
            if self.flows is not None:
                q = dist.TransformedDistribution(q, self.flows[layer].transforms(features[layer]))
            z = values[f"z_{layer + 1}"] = draw(f"z_{layer + 1}", q)
        return values
