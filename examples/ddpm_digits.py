"""A denoising diffusion model on scikit-learn's digits, trained through Pyro on its ELBO with sampled
time steps, then sampled three ways: ancestrally, with predictor-corrector steps, and by annealed Langevin
dynamics on its learned score.

    python examples/ddpm_digits.py [--epochs 300] [--steps 100] [--out ddpm-digits.png]
"""

import argparse

import pyro

import ppgen
from ppgen.data import load_data
from ppgen.models import DDPM
from ppgen.plots import plot_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--steps", type=int, default=100, help="diffusion steps T")
    parser.add_argument("--out", default="ddpm-digits.png")
    args = parser.parse_args()

    splits = load_data("digits", binarize="none")
    pyro.set_rng_seed(0)
    ddpm = DDPM(
        splits.data_dim,
        splits.event_shape,
        num_steps=args.steps,
        schedule="linear",
        hidden=[256, 256],
        levels=17,
        time_subsample=8,
    )
    ppgen.fit(
        ddpm.model, ddpm.guide, splits.train.x, splits.validation.x, elbo="meanfield", epochs=args.epochs, batch_size=64
    )
    chain_elbo = ddpm.chain_elbo(splits.test.x).mean().item()
    print(
        f"test ELBO (all {args.steps} terms in closed form): {chain_elbo:.2f} nats,"
        f" {ppgen.bits_per_dim(chain_elbo, splits.data_dim):.3f} bits/dim"
    )
    panels = [(sampler, ddpm.sample(64, sampler=sampler)) for sampler in ("ancestral", "pc", "langevin")]
    plot_examples(panels, splits.event_shape, args.out, columns=8)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
