"""A conditional VAE on scikit-learn's digits: conditional samples, style transfer, and classification
by likelihood (argmax_y log p(x | y) + log p(y), with log p(x | y) importance-sampled).

    python examples/cvae_digits.py [--epochs 300] [--num-samples 200] [--out cvae-digits.png]
"""

import argparse

import pyro
import torch

import ppgen
from ppgen.data import load_data
from ppgen.evaluate import classify
from ppgen.models import ConditionalVAE
from ppgen.plots import plot_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--num-samples", type=int, default=200, help="importance samples per class")
    parser.add_argument("--out", default="cvae-digits.png")
    args = parser.parse_args()

    splits = load_data("digits", binarize="dynamic")
    counts = torch.bincount(splits.train.y).double()
    pyro.set_rng_seed(0)
    cvae = ConditionalVAE(
        splits.data_dim, num_classes=10, latent_dim=8, hidden=[256, 256], class_log_prior=(counts / counts.sum()).log()
    )
    train = (splits.train.x, splits.train.y)
    validation = (splits.validation.x, splits.validation.y)
    ppgen.fit(
        cvae.model,
        cvae.guide,
        train,
        validation,
        epochs=args.epochs,
        batch_size=64,
        patience=30,
        batch_transform=splits.batch_transform(),
    )

    test_x, test_y = splits.test.x, splits.test.y
    predictions = classify(cvae.model, cvae.guide, test_x, cvae.class_log_prior, num_samples=args.num_samples)
    print(f"test accuracy of classification by likelihood: {(predictions == test_y).double().mean():.3f}")

    # Row k: eight samples of digit k; then eight test digits redrawn as every class (style transfer).
    samples = cvae.sample(torch.arange(10).repeat_interleave(8))
    sources = test_x[:8].repeat(10, 1)
    transferred = cvae.transfer(sources, test_y[:8].repeat(10), torch.arange(10).repeat_interleave(8))
    plot_examples(
        [("samples, one digit per row", samples), ("style transfer, one digit per row", transferred)],
        splits.event_shape,
        args.out,
        columns=8,
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
