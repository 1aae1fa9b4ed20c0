"""A GAN on scikit-learn's digits, the likelihood-free baseline: a generator and a critic played against each other
as one loss through ppgen's SVI trainer (non-saturating, Goodfellow et al. 2014, or WGAN-GP, Gulrajani et al. 2017).
It has no likelihood, so it is judged by its samples, drawn beside test digits.

    python examples/gan_digits.py [--epochs 200] [--network mlp|dcgan] [--loss wgan_gp|non_saturating] [--out gan.png]
"""

import argparse

import pyro

import ppgen
from ppgen.data import load_data
from ppgen.models import GAN
from ppgen.plots import plot_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--network", choices=("mlp", "dcgan"), default="mlp")
    parser.add_argument("--loss", choices=("non_saturating", "wgan_gp"), default="wgan_gp")
    parser.add_argument("--n-critic", type=int, default=1, help="critic updates per generator update")
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--out", default="gan-digits.png")
    args = parser.parse_args()

    splits = load_data("digits", binarize="none")
    pyro.set_rng_seed(0)
    gan = GAN(splits.event_shape, latent_dim=16, network=args.network, loss=args.loss, n_critic=args.n_critic)
    result = ppgen.fit(*gan.training_pair(), splits.train.x, epochs=args.epochs, batch_size=64, lr=args.lr)
    print(
        f"{result.steps} steps in {result.seconds:.1f} s of training"
        f" ({result.steps * 64 / result.seconds:.0f} examples/s);"
        f" final training loss {-result.train_elbo[-1][1]:.3f} per example"
    )
    panels = [("test digits", splits.test.x[: args.num_samples]), ("GAN samples", gan.eval().sample(args.num_samples))]
    plot_examples(panels, splits.event_shape, args.out, columns=8)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
