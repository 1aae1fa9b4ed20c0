"""The default demo from Python: a VAE on scikit-learn's digits, the same path ``ppgen run`` takes.

python examples/vae_digits.py [--epochs 300] [--out digits-samples.png]
"""

import argparse

import pyro

import ppgen
from ppgen.data import dynamic_binarize, load_data
from ppgen.plots import plot_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--out", default="digits-samples.png")
    args = parser.parse_args()

    splits = load_data("digits", binarize="dynamic")  # training batches are binarized afresh each epoch
    pyro.set_rng_seed(0)
    vae = ppgen.VAE(splits.data_dim, latent_dim=8, hidden=[256, 256])
    result = ppgen.fit(
        vae.model,
        vae.guide,
        splits.train.x,
        splits.validation.x,
        epochs=args.epochs,
        batch_size=64,
        patience=30,
        batch_transform=dynamic_binarize,
    )
    test = splits.test.x
    estimate = ppgen.log_likelihood(vae.model, vae.guide, test, num_samples=args.num_samples)
    nll = -estimate.estimate.mean().item()
    print(
        f"{result.epochs} epochs ({result.stop_reason}); test ELBO {ppgen.elbo(vae.model, vae.guide, test).mean():.2f},"
        f" NLL {nll:.2f} nats ({ppgen.bits_per_dim(-nll, splits.data_dim):.3f} bits/dim)"
    )
    plot_examples([("samples", vae.sample(64))], splits.event_shape, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
