"""A finite mixture p(x) = sum_k pi_k p(x | theta_k) as a Pyro model whose assignment ``c`` is enumerated inside
the ``"data"`` plate: TraceEnum_ELBO sums it out, so SVI with an empty guide maximizes the exact log-likelihood
(the objective EM climbs; Dempster, Laird & Rubin 1977), and the evaluator's log p(x) is exact.

Components are Gaussians with a diagonal or a full covariance (its Cholesky factor parametrized by
``LowerCholeskyTransform``), or products of Bernoullis for binary images.
"""

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

from ppgen.models.family import GenerativeFamily

__all__ = ["Mixture", "kmeans_plus_plus"]

MIN_SCALE = 1e-3  # a floor on the initial Gaussian scales, so that a constant dimension does not start degenerate


class Mixture(GenerativeFamily, PyroModule):
    """Args:
    data_dim: D.
    components: K.
    likelihood: "gaussian" or "bernoulli" (binary data).
    covariance: "diagonal" or "full" (Gaussian components).
    init_seed: the seed of the k-means++ choice of initial centres among the first training batch.

    The parameters (mixture logits [K], and locs [K, D] with scales [K, D] or scale_tril [K, D, D], or Bernoulli
    logits [K, D]) are point estimates. They are set from data on the first call of ``model`` with data (the
    trainer's first batch) unless ``initialized`` (in the state dict) says they were.
    """

    kind = "mixture"
    kl_per_site = False
    likelihood = "exact"

    def __init__(
        self,
        data_dim: int,
        components: int = 10,
        likelihood: str = "gaussian",
        covariance: str = "diagonal",
        init_seed: int = 0,
    ):
        super().__init__()
        self.data_dim, self.num_components = data_dim, components
        self.component_likelihood, self.covariance, self.init_seed = likelihood, covariance, init_seed
        self.mixture_logits = PyroParam(torch.zeros(components))
        if likelihood == "bernoulli":
            self.logits = PyroParam(torch.zeros(components, data_dim))
        elif covariance == "full":
            self.locs = PyroParam(torch.zeros(components, data_dim))
            self.scale_tril = PyroParam(torch.eye(data_dim).expand(components, -1, -1), constraints.lower_cholesky)
        else:
            self.locs = PyroParam(torch.zeros(components, data_dim))
            self.scales = PyroParam(torch.ones(components, data_dim), constraints.positive)
        self.register_buffer("initialized", torch.tensor(False))
        self._checked_initialized = False  # the buffer is read once, not on every step

    @classmethod
    def from_spec(cls, spec, event_shape, guide=None, labels=None) -> "Mixture":
        return cls(math.prod(event_shape), **spec.model_dump(exclude={"kind"}))

    def component(self, c: torch.Tensor) -> dist.TorchDistribution:
        """The components indexed by c (any shape), with event shape [D]."""
        if self.component_likelihood == "bernoulli":
            return dist.Bernoulli(logits=self.logits[c]).to_event(1)
        if self.covariance == "full":
            return dist.MultivariateNormal(self.locs[c], scale_tril=self.scale_tril[c])
        return dist.Normal(self.locs[c], self.scales[c]).to_event(1)

    def model(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, D] observed, or None to draw one example; the assignment c [N] is enumerated."""
        if x is not None and not self._checked_initialized:
            if not self.initialized:
                self.initialize(x)
            self._checked_initialized = True
        with pyro.plate("data", 1 if x is None else x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=self.mixture_logits), infer={"enumerate": "parallel"})
            return pyro.sample("x", self.component(c), obs=x)

    def guide(self, x: torch.Tensor | None = None) -> None:
        """The assignment is summed out, and the parameters are point estimates: the guide is empty."""

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Centres chosen from the examples x [N, D] by k-means++ seeding (seeded with ``init_seed``), equal
        weights, and for Gaussians every component's scale that of the data."""
        centres = kmeans_plus_plus(x.detach().reshape(len(x), -1), self.num_components, self.init_seed)
        if self.component_likelihood == "bernoulli":  # halfway between the example and 1/2: no infinite logits
            self.logits = torch.logit(0.25 + 0.5 * centres.clamp(0, 1))
        else:
            scales = x.std(0).clamp(min=MIN_SCALE).expand_as(centres)
            self.locs = centres
            if self.covariance == "full":
                self.scale_tril = torch.diag_embed(scales)
            else:
                self.scales = scales
        self.initialized.fill_(True)

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) [N] for x [N, D], in closed form: logsumexp_k log pi_k + log p(x | theta_k)."""
        components = self.component(torch.arange(self.num_components, device=x.device))
        return dist.MixtureSameFamily(dist.Categorical(logits=self.mixture_logits), components).log_prob(x)

    def held_out_log_likelihood(self, *test: torch.Tensor, num_samples: int, chunk_size: int | None):
        """Exact log p(x) [N]: with the assignment summed out and an empty guide, all K importance weights equal
        log p(x), so one pass gives the estimate, with standard error 0 and effective sample size K."""
        from ppgen.evaluate import LogLikelihood, log_likelihood

        exact = log_likelihood(self.model, self.guide, *test, num_samples=1, chunk_size=chunk_size).estimate
        return LogLikelihood(exact, torch.zeros_like(exact), torch.full_like(exact, num_samples), num_samples)

    @torch.no_grad()
    def sample(self, num_samples: int, mean: bool = False) -> torch.Tensor:
        """[num_samples, D] ancestral draws: c ~ Categorical(pi), then x ~ p(x | theta_c) (``mean``: its mean)."""
        c = dist.Categorical(logits=self.mixture_logits).sample((num_samples,))
        component = self.component(c)
        return component.mean if mean else component.sample()


def kmeans_plus_plus(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """k rows of x [N, D] chosen by k-means++ seeding (Arthur & Vassilvitskii 2007): the first uniformly, each next
    with probability proportional to its squared distance to the nearest centre chosen; [k, D]. With fewer than k
    examples, rows repeat."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    chosen = [int(torch.randint(len(x), (1,), generator=generator, device=x.device))]
    distance = (x - x[chosen[0]]).square().sum(-1)
    for _ in range(1, k):
        weights = distance if distance.sum() > 0 else torch.ones_like(distance)
        chosen.append(int(torch.multinomial(weights, 1, generator=generator)))
        distance = torch.minimum(distance, (x - x[chosen[-1]]).square().sum(-1))
    return x[chosen]
