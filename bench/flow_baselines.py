"""Held-out NLL of flow densities against scikit-learn's KernelDensity and GaussianMixture, fitted to the
same splits: the 2-D toy sets, and scikit-learn's digits dequantized (each pixel level k becomes
(k + u) / 17, so every method models the same continuous data).

Baselines choose their capacity on the validation split: the KDE bandwidth from a log-spaced grid, the
number of mixture components (full covariances) from 1 to --max-components. Figures are test NLL in nats
per example (lower is better); for digits also bits per dimension of the discrete pixels.

    python bench/flow_baselines.py [--epochs 200] [--families realnvp,maf,nice]
"""

import argparse
import time

import numpy as np
import pyro
import torch
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity

from ppgen.data import discrete_bits_per_dim, load_data
from ppgen.infer import fit
from ppgen.models import FlowDensity

DATA = ("moons", "rings", "eight_gaussians", "checkerboard", "digits")


def kde_nll(train, validation, test) -> float:
    best = max(
        (KernelDensity(bandwidth=h).fit(train) for h in np.logspace(-2.5, 0.5, 16)),
        key=lambda kde: kde.score_samples(validation).mean(),
    )
    return -best.score_samples(test).mean()


def gmm_nll(train, validation, test, max_components: int) -> float:
    fitted = (
        GaussianMixture(k, covariance_type="full", random_state=0, reg_covar=1e-4).fit(train)
        for k in range(1, max_components + 1)
    )
    best = max(fitted, key=lambda gmm: gmm.score(validation))
    return -best.score_samples(test).mean()


def flow_nll(family: str, splits, epochs: int, hidden: list[int], layers: int) -> float:
    pyro.set_rng_seed(0)
    flow = FlowDensity(splits.data_dim, family=family, layers=layers, hidden=hidden)
    fit(
        flow.model,
        flow.guide,
        splits.train.x,
        splits.validation.x,
        epochs=epochs,
        batch_size=256 if splits.data_dim == 2 else 64,
        lr=3e-3 if splits.data_dim == 2 else 1e-3,
        patience=20,
        batch_transform=splits.batch_transform(),
        progress=False,
        threads=torch.get_num_threads(),
    )
    return -flow.log_prob(splits.test.x).mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--families", default="realnvp,maf,nice")
    parser.add_argument("--max-components", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    families = args.families.split(",")
    print("test NLL, nats per example (lower is better); digits also in bits/dim of the discrete pixels")
    print(f"{'data':<16}" + "".join(f"{name:>12}" for name in [*families, "KDE", "GMM"]) + f"{'seconds':>9}")
    for name in DATA:
        started = time.perf_counter()
        if name == "digits":
            splits = load_data("digits", binarize="none", dequantize=True)
            hidden, layers = [256, 256], 5
        else:
            splits = load_data(name, binarize="none", num_examples=5000)
            hidden, layers = [64, 64], 6
        train, validation, test = (splits.fixed_train().numpy(), splits.validation.x.numpy(), splits.test.x.numpy())
        figures = [flow_nll(family, splits, args.epochs, hidden, layers) for family in families]
        figures += [kde_nll(train, validation, test), gmm_nll(train, validation, test, args.max_components)]
        print(
            f"{name:<16}" + "".join(f"{value:>12.3f}" for value in figures) + f"{time.perf_counter() - started:>9.0f}"
        )
        if name == "digits":
            bits = [discrete_bits_per_dim(-value, splits.data_dim, splits.levels) for value in figures]
            print(f"{'  (bits/dim)':<16}" + "".join(f"{value:>12.3f}" for value in bits))
    print(
        f"(KDE and GMM fit on the same training split; digits dequantized once with seed 0; torch {torch.__version__},"
        f" {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
