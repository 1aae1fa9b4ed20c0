"""A two-layer hierarchical VAE on scikit-learn's digits with a bottom-up and with a top-down (ladder)
guide, next to a one-layer VAE trained alike: test ELBO and importance-sampled NLL of each.

    python examples/hvae_digits.py [--epochs 300] [--num-samples 1000]
"""

import argparse

import pyro

import ppgen
from ppgen.data import load_data
from ppgen.models import VAE, HierarchicalVAE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--num-samples", type=int, default=1000)
    args = parser.parse_args()

    splits = load_data("digits", binarize="dynamic")
    models = {
        "VAE, z 16": lambda: VAE(splits.data_dim, latent_dim=16, hidden=[256, 256]),
        "HVAE 16-8, bottom-up guide": lambda: HierarchicalVAE(
            splits.data_dim, [16, 8], [256, 256], [64, 64], structure="bottom_up"
        ),
        "HVAE 16-8, top-down guide": lambda: HierarchicalVAE(
            splits.data_dim, [16, 8], [256, 256], [64, 64], structure="top_down"
        ),
    }
    print(f"{'model':<28} {'test ELBO':>10} {'test NLL':>10}")
    for name, build in models.items():
        pyro.set_rng_seed(0)
        model = build()
        ppgen.fit(
            model.model,
            model.guide,
            splits.train.x,
            splits.validation.x,
            epochs=args.epochs,
            batch_size=64,
            patience=30,
            kl_warmup=20 if name.startswith("HVAE") else 0,
            batch_transform=splits.batch_transform(),
            progress=False,
        )
        bound = ppgen.elbo(model.model, model.guide, splits.test.x, num_particles=10).mean()
        nll = -ppgen.log_likelihood(
            model.model, model.guide, splits.test.x, num_samples=args.num_samples
        ).estimate.mean()
        print(f"{name:<28} {bound:>10.3f} {nll:>10.3f}")


if __name__ == "__main__":
    main()
