"""The variational autoencoder as a Pyro model/guide pair (Kingma & Welling 2013, arXiv:1312.6114)."""

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

from ppgen.flows import center
from ppgen.models.family import GenerativeFamily, guide_options
from ppgen.nets import AmortizedNormal, likelihood_head, mlp

__all__ = ["VAE"]


class VAE(GenerativeFamily, PyroModule):
    """p(z) = N(0, I), p(x | z) from an MLP decoder, and an amortized guide q(z | x): a diagonal Gaussian,
    optionally pushed through normalizing flows conditioned on the encoder's features.

    Args:
        data_dim: D, the size of a flattened example.
        latent_dim: Z.
        hidden: widths of the encoder's hidden layers; the decoder mirrors them.
        activation: a name in ``ppgen.nets.ACTIVATIONS``.
        likelihood: "bernoulli", "gaussian" or "continuous_bernoulli".
        likelihood_scale: "learned" or a fixed number, for the Gaussian likelihood.
        guide_family: "diagonal" or a flow in ``ppgen.flows.GUIDE_FLOWS``.
        guide_flows, guide_hidden: flow layers, and the hidden widths of their networks.
    """

    kind = "vae"

    def __init__(
        self,
        data_dim: int,
        latent_dim: int = 16,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        likelihood_scale: float | str = "learned",
        guide_family: str = "diagonal",
        guide_flows: int = 2,
        guide_hidden: Sequence[int] = (64,),
    ):
        super().__init__()
        self.data_dim, self.latent_dim = data_dim, latent_dim
        flow = None if guide_family == "diagonal" else guide_family
        self.encoder = AmortizedNormal(data_dim, hidden, latent_dim, activation, flow, guide_flows, guide_hidden)
        decoder_net = mlp(latent_dim, list(reversed(hidden)), data_dim, activation)
        self.decoder = likelihood_head(likelihood, decoder_net, likelihood_scale)
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    @classmethod
    def from_spec(cls, spec, event_shape, guide=None, labels=None) -> "VAE":
        options = spec.model_dump(exclude={"kind"})
        return cls(math.prod(event_shape), **options, **guide_options(guide, [spec.latent_dim]))

    def prior(self) -> dist.Distribution:
        """p(z), with event shape [Z]."""
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def model(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, D] observed, or None to draw one example from the prior predictive."""
        with pyro.plate("data", 1 if x is None else x.shape[0]):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.decoder(z), obs=x)

    def guide(self, x: torch.Tensor) -> torch.Tensor:
        """q(z | x) for x [N, D]."""
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self.encoder(x))

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = True) -> torch.Tensor:
        """[num_samples, D] draws from p(x): the decoder's mean for each z ~ p(z), or a draw of x when mean=False."""
        likelihood = self.decoder(self.prior().sample((num_samples,)))
        return likelihood.mean if mean else likelihood.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """[N, D] decoder means at the centre of q(z | x) for x [N, D]."""
        return self.decoder(center(self.encoder(x))).mean
