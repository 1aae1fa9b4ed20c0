"""A Gaussian mixture on a 2-D toy set, fitted by SVI with each point's assignment summed out by enumeration (the
exact likelihood EM maximizes): its exact held-out log-likelihood beside scikit-learn's EM fit, its density on a
grid and its samples.

    python examples/mixture_gaussian.py [--data eight_gaussians] [--components 8] [--covariance full]
        [--epochs 60] [--num-examples 5000] [--out mixture-gaussian.png]
"""

import argparse

import pyro
from sklearn.mixture import GaussianMixture

import ppgen
from ppgen.data import load_data
from ppgen.evaluate import log_likelihood
from ppgen.models import Mixture
from ppgen.plots import plot_density_and_samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default="eight_gaussians", choices=("moons", "rings", "eight_gaussians", "checkerboard")
    )
    parser.add_argument("--components", type=int, default=8)
    parser.add_argument("--covariance", default="full", choices=("diagonal", "full"))
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--num-examples", type=int, default=5000)
    parser.add_argument("--out", default="mixture-gaussian.png")
    args = parser.parse_args()

    splits = load_data(args.data, binarize="none", num_examples=args.num_examples)
    pyro.set_rng_seed(0)
    mixture = Mixture(2, args.components, "gaussian", args.covariance)
    ppgen.fit(
        mixture.model,
        mixture.guide,
        splits.train.x,
        splits.validation.x,
        epochs=args.epochs,
        batch_size=500,
        lr=0.05,
        patience=10,
    )
    # The model's assignment is enumerated, so ppgen's evaluator sums it out: one sample gives the exact log p(x).
    ours = log_likelihood(mixture.model, mixture.guide, splits.test.x, num_samples=1).estimate.mean().item()
    em = GaussianMixture(args.components, covariance_type={"diagonal": "diag"}.get(args.covariance, "full"), n_init=3)
    em_score = em.fit(splits.train.x.numpy()).score(splits.test.x.numpy())
    print(f"{args.components} {args.covariance} Gaussians on {args.data}: test NLL {-ours:.3f} nats (exact, SVI)")
    print(f"scikit-learn's EM, same model: test NLL {-em_score:.3f} nats")

    plot_density_and_samples(lambda points: mixture.log_prob(points).exp(), mixture.sample(2000), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
