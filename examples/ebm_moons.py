"""An energy-based model p(x) ∝ exp(-E(x)) on a 2-D toy set, trained by contrastive divergence with a replay buffer:
its held-out log-likelihood with log Z by annealed importance sampling, checked against log Z integrated on a grid,
its Langevin samples, and its density.

    python examples/ebm_moons.py [--data moons] [--epochs 30] [--ais-steps 500] [--out ebm-moons.png]
"""

import argparse
import math

import pyro
import torch

import ppgen
from ppgen.data import load_data
from ppgen.models import EBM
from ppgen.plots import plot_density_and_samples

GRID = 300  # points per side of the grid on [-LIMIT, LIMIT]^2 that log Z is integrated on
LIMIT = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="moons", choices=("moons", "rings", "eight_gaussians", "checkerboard"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--ais-steps", type=int, default=500)
    parser.add_argument("--out", default="ebm-moons.png")
    args = parser.parse_args()

    splits = load_data(args.data, binarize="none", num_examples=3000)
    pyro.set_rng_seed(0)
    ebm = EBM(
        2, hidden=[64, 64], langevin_steps=10, step_size=0.01, buffer_size=2000, alpha=0.01, ais_steps=args.ais_steps
    )
    ppgen.fit(*ebm.training_pair(), splits.train.x, epochs=args.epochs, batch_size=64, lr=3e-3, progress=False)
    ebm.eval()

    estimate = ebm.held_out_log_likelihood(splits.test.x, num_samples=ebm.ais_chains, chunk_size=None)
    print(
        f"EBM on {args.data}: test log-likelihood {estimate.estimate.mean():.3f} +- {estimate.shared_stderr:.3f} nats"
    )
    grid = torch.linspace(-LIMIT, LIMIT, GRID)
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        log_density = -ebm.energy(points)
    cell = (2 * LIMIT / (GRID - 1)) ** 2
    log_z_grid = (log_density.logsumexp(0) + math.log(cell)).item()
    print(f"log Z: {ebm.log_normalizer().log_z.item():.3f} by AIS, {log_z_grid:.3f} on a {GRID} x {GRID} grid")

    plot_density_and_samples(
        lambda points: (-ebm.energy(points) - log_z_grid).exp(),
        ebm.sample(2000),
        args.out,
        limit=LIMIT,
        grid=GRID,
        titles=("density exp(-E) / Z", f"samples ({ebm.sample_steps} Langevin steps)"),
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
