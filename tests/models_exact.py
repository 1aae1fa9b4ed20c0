"""Hand-written model/guide pairs whose log-evidence and posterior are known in closed form.

Used by the tests of evaluation and training: probabilistic PCA (a latent z_i per example, all local to
the "data" plate) and a conjugate Normal mean (one global latent shared by all examples).
"""

import math

import pyro
import pyro.distributions as dist
import torch
from torch.distributions import kl_divergence


class ProbabilisticPCA:
    """z_i ~ N(0, I_k), x_i | z_i ~ N(W z_i + mu, sigma^2 I_d) (Tipping & Bishop 1999).

    log p(x_i) = log N(x_i; mu, W W^T + sigma^2 I); the posterior is
    z_i | x_i ~ N(M^-1 W^T (x_i - mu), sigma^2 M^-1) with M = W^T W + sigma^2 I.
    """

    def __init__(self, data_dim: int = 5, latent_dim: int = 2, sigma: float = 0.5, seed: int = 0):
        generator = torch.Generator().manual_seed(seed)
        self.W = torch.randn(data_dim, latent_dim, generator=generator, dtype=torch.float64)
        self.mu = torch.randn(data_dim, generator=generator, dtype=torch.float64)
        self.sigma, self.latent_dim = sigma, latent_dim
        M = self.W.T @ self.W + sigma**2 * torch.eye(latent_dim, dtype=torch.float64)
        self.M_inverse = torch.linalg.inv(M)
        self.posterior_covariance = sigma**2 * self.M_inverse
        self.marginal = dist.MultivariateNormal(
            self.mu, self.W @ self.W.T + sigma**2 * torch.eye(data_dim, dtype=torch.float64)
        )

    def sample(self, num_examples: int, seed: int = 1) -> torch.Tensor:
        torch.manual_seed(seed)
        return self.marginal.sample((num_examples,))

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x_i), [N]."""
        return self.marginal.log_prob(x)

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        return dist.MultivariateNormal((x - self.mu) @ self.W @ self.M_inverse.T, self.posterior_covariance)

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(self.latent_dim, dtype=x.dtype), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.mu, self.sigma).to_event(1), obs=x)

    def exact_guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    def approximate_posterior(self, x: torch.Tensor, shift: float = 0.3, inflate: float = 1.5) -> dist.Distribution:
        """A deliberately imperfect mean-field guide: shifted mean, inflated scales."""
        posterior = self.posterior(x)
        return dist.Normal(posterior.loc + shift, inflate * posterior.variance.sqrt()).to_event(1)

    def approximate_guide(self, x: torch.Tensor, shift: float = 0.3, inflate: float = 1.5) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.approximate_posterior(x, shift, inflate))

    def poor_guide(self, x: torch.Tensor) -> None:
        """A guide further from the posterior, whose importance weights have a larger variance."""
        self.approximate_guide(x, shift=0.6, inflate=2.0)

    def exact_elbo_of_approximate_guide(self, x: torch.Tensor) -> torch.Tensor:
        """ELBO_i = log p(x_i) - KL(q(z | x_i) || p(z | x_i)), [N]."""
        q = self.approximate_posterior(x)
        q_full = dist.MultivariateNormal(q.base_dist.loc, torch.diag_embed(q.base_dist.scale**2))
        return self.log_evidence(x) - kl_divergence(q_full, self.posterior(x))


class ConjugateNormalMean:
    """mu ~ N(0, tau^2) outside the data plate, x_i | mu ~ N(mu, sigma^2) inside it.

    The evidence is joint over the examples: x ~ N(0, sigma^2 I + tau^2 1 1^T); the posterior is
    mu | x ~ N(v sum(x) / sigma^2, v) with v = 1 / (1 / tau^2 + N / sigma^2).
    """

    def __init__(self, sigma: float = 1.0, tau: float = 2.0):
        self.sigma, self.tau = sigma, tau

    def sample(self, num_examples: int, seed: int = 2) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed)
        mu = self.tau * torch.randn((), generator=generator, dtype=torch.float64)
        return mu + self.sigma * torch.randn(num_examples, generator=generator, dtype=torch.float64)

    def log_evidence(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        covariance = self.sigma**2 * torch.eye(n, dtype=x.dtype) + self.tau**2 * torch.ones(n, n, dtype=x.dtype)
        return dist.MultivariateNormal(torch.zeros(n, dtype=x.dtype), covariance).log_prob(x)

    def posterior_loc_scale(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        variance = 1.0 / (1.0 / self.tau**2 + x.shape[0] / self.sigma**2)
        return variance * x.sum() / self.sigma**2, math.sqrt(variance)

    def model(self, x: torch.Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=x.dtype), self.tau))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, self.sigma), obs=x)

    def exact_guide(self, x: torch.Tensor) -> None:
        loc, scale = self.posterior_loc_scale(x)
        pyro.sample("mu", dist.Normal(loc, scale))

    def approximate_guide(self, x: torch.Tensor) -> None:
        loc, scale = self.posterior_loc_scale(x)
        pyro.sample("mu", dist.Normal(loc + 0.5 * scale, 1.3 * scale))
