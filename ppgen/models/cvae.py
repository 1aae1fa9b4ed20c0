"""The conditional VAE: p(x | y, z) p(z) with labels y observed, and q(z | x, y) (Sohn et al. 2015)."""

import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch.nn.functional import one_hot

from ppgen.errors import PpgenError
from ppgen.flows import center
from ppgen.models.family import GenerativeFamily, guide_options
from ppgen.nets import AmortizedNormal, likelihood_head, mlp

__all__ = ["ConditionalVAE"]

_NEEDS_LABELS = "the conditional VAE needs labels: call it with (x, y), y a tensor [N] of class indices"


class ConditionalVAE(GenerativeFamily, PyroModule):
    """A VAE whose decoder and guide also see the class label y; the model is p(x | y), so the
    importance-sampled likelihood of (x, y) is log p(x | y).

    Args:
        data_dim: D. num_classes: C.
        class_log_prior: [C] log p(y), used by classification (default uniform).
        The other arguments are those of ``ppgen.models.VAE``.
    """

    kind = "cvae"
    data_keys = ("x", "y")
    classifies = True

    def __init__(
        self,
        data_dim: int,
        num_classes: int,
        latent_dim: int = 16,
        hidden: Sequence[int] = (200, 200),
        activation: str = "tanh",
        likelihood: str = "bernoulli",
        likelihood_scale: float | str = "learned",
        guide_family: str = "diagonal",
        guide_flows: int = 2,
        guide_hidden: Sequence[int] = (64,),
        class_log_prior: torch.Tensor | None = None,
    ):
        super().__init__()
        self.data_dim, self.num_classes, self.latent_dim = data_dim, num_classes, latent_dim
        flow = None if guide_family == "diagonal" else guide_family
        self.encoder = AmortizedNormal(
            data_dim + num_classes, hidden, latent_dim, activation, flow, guide_flows, guide_hidden
        )
        decoder_net = mlp(latent_dim + num_classes, list(reversed(hidden)), data_dim, activation)
        self.decoder = likelihood_head(likelihood, decoder_net, likelihood_scale)
        uniform = torch.full((num_classes,), -torch.log(torch.tensor(float(num_classes))))
        self.register_buffer("class_log_prior", uniform if class_log_prior is None else class_log_prior.float())
        self.register_buffer("prior_loc", torch.zeros(latent_dim))
        self.register_buffer("prior_scale", torch.ones(latent_dim))

    @classmethod
    def from_spec(cls, spec, event_shape, guide=None, labels=None) -> "ConditionalVAE":
        """The classes and log p(y) come from the training ``labels`` [N]."""
        if labels is None:
            raise PpgenError("model.kind = 'cvae' needs labelled data: pass the training labels")
        counts = torch.bincount(labels).double()
        return cls(
            math.prod(event_shape),
            num_classes=len(counts),
            class_log_prior=(counts / counts.sum()).log(),
            **spec.model_dump(exclude={"kind"}),
            **guide_options(guide, [spec.latent_dim]),
        )

    def prior(self) -> dist.Distribution:
        return dist.Normal(self.prior_loc, self.prior_scale).to_event(1)

    def model(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """p(x | y) for labels y [N]; x [N, D] observed, or None to draw from it."""
        labels = self._labels(y)
        with pyro.plate("data", y.shape[0]):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.decoder(self._join(z, labels)), obs=x)

    def guide(self, x: torch.Tensor | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
        """q(z | x, y) for x [N, D] and y [N]."""
        labels = self._labels(y)
        if x is None:
            raise PpgenError("the conditional VAE's guide needs the examples x as well as their labels y")
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", self.encoder(torch.cat([x, labels], dim=-1)))

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, mean: bool = True) -> torch.Tensor:
        """[n, D] draws from p(x | y) for the given labels [n]."""
        z = self.prior().sample(labels.shape)
        likelihood = self.decoder(self._join(z, self._labels(labels)))
        return likelihood.mean if mean else likelihood.sample()

    def draw(self, num_samples: int, sampling) -> torch.Tensor:
        """[num_samples, D] decoder means, for every class in turn."""
        return self.sample(torch.arange(num_samples, device=self.prior_loc.device) % self.num_classes)

    @torch.no_grad()
    def transfer(self, x: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Style transfer: encode x [N, D] with its labels ``source`` [N], decode with ``target`` [N]."""
        z = center(self.encoder(torch.cat([x, self._labels(source)], dim=-1)))
        return self.decoder(self._join(z, self._labels(target))).mean

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """[N, D] decoder means at the centre of q(z | x, y) for x [N, D] and y [N]."""
        return self.transfer(x, y, y)

    def _labels(self, y: torch.Tensor | None) -> torch.Tensor:
        """One-hot [N, C] codes of labels y [N], checked."""
        if y is None:
            raise PpgenError(_NEEDS_LABELS)
        if y.dtype not in (torch.int64, torch.int32) or y.dim() != 1:
            raise PpgenError(f"{_NEEDS_LABELS}; got {y.dtype} of shape {tuple(y.shape)}")
        return one_hot(y.long(), self.num_classes).to(self.prior_loc.dtype)

    @staticmethod
    def _join(z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[..., N, Z] latents next to [N, C] label codes, broadcast over leading sample dimensions."""
        return torch.cat([z, labels.expand(*z.shape[:-1], labels.shape[-1])], dim=-1)
