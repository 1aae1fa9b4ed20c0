"""Fit your own hand-written Pyro model/guide pair with ppgen's trainer, and evaluate it with ppgen's
evaluators.

The model is probabilistic PCA on scikit-learn's digits, x = W z + mu + noise, with an amortized
Gaussian guide q(z | x). Its exact log-likelihood is known in closed form, so the script can show the
order every evaluation must respect: ELBO <= importance-sampled log p(x) <= exact log p(x) (the
estimate approaches the exact value as K grows).

    python examples/custom_model.py [--epochs 100] [--num-samples 1000]
"""

import argparse

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

import ppgen
from ppgen.data import load_data


class PPCA(nn.Module):
    """A user's own model/guide pair: nothing here is ppgen-specific except the "data" plate's name."""

    def __init__(self, data_dim: int, latent_dim: int):
        super().__init__()
        self.W = nn.Parameter(0.1 * torch.randn(data_dim, latent_dim))
        self.mu = nn.Parameter(torch.zeros(data_dim))
        self.raw_sigma = nn.Parameter(torch.zeros(()))
        self.encoder = nn.Linear(data_dim, 2 * latent_dim)
        self.latent_dim = latent_dim

    def sigma(self) -> torch.Tensor:
        return softplus(self.raw_sigma) + 1e-3

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.latent_dim), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.mu, self.sigma()).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        loc, raw_scale = self.encoder(x).chunk(2, dim=-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, softplus(raw_scale) + 1e-3).to_event(1))

    @torch.no_grad()
    def exact_log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; mu, W W^T + sigma^2 I) per example, [N]."""
        covariance = self.W @ self.W.T + self.sigma() ** 2 * torch.eye(len(self.mu))
        return dist.MultivariateNormal(self.mu, covariance).log_prob(x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=1000)
    args = parser.parse_args()

    splits = load_data("digits", binarize="none")
    pyro.set_rng_seed(0)
    ppca = PPCA(splits.data_dim, latent_dim=8)
    result = ppgen.fit(
        ppca.model,
        ppca.guide,
        splits.train.x,
        splits.validation.x,
        epochs=args.epochs,
        batch_size=64,
        lr=3e-3,
        progress=False,
    )
    print(
        f"trained {result.steps} steps in {result.seconds:.1f} s;"
        f" best validation ELBO {result.best_validation_elbo:.2f}"
    )

    x = splits.test.x
    bound = ppgen.elbo(ppca.model, ppca.guide, x, num_particles=10).mean()
    estimate = ppgen.log_likelihood(ppca.model, ppca.guide, x, num_samples=args.num_samples)
    stderr = estimate.stderr.square().sum().sqrt() / len(x)
    exact = ppca.exact_log_likelihood(x).mean()
    print(f"test ELBO                        {bound:9.3f} nats per example")
    print(f"test log p(x), K = {args.num_samples:<5} samples {estimate.estimate.mean():9.3f} +- {stderr:.3f}")
    print(f"test log p(x), exact             {exact:9.3f}")


if __name__ == "__main__":
    main()
