"""A noise-conditional score network on the two-moons toy set, trained through Pyro by denoising score matching,
sampled by annealed Langevin dynamics and by the predictor-corrector sampler of the VE SDE, with the test points'
log-likelihood through the probability-flow ODE.

    python examples/score_moons.py [--epochs 120] [--levels 50] [--test-points 200] [--out score-moons.png]
"""

import argparse

import pyro

import ppgen
from ppgen.data import load_data
from ppgen.models import ScoreModel
from ppgen.plots import plot_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=120)
    parser.add_argument("--levels", type=int, default=50, help="noise levels L of the samplers")
    parser.add_argument("--test-points", type=int, default=200, help="test points whose ODE likelihood is computed")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--out", default="score-moons.png")
    args = parser.parse_args()

    splits = load_data("moons", binarize="none", num_examples=5000)
    pyro.set_rng_seed(0)
    model = ScoreModel(splits.data_dim, hidden=[128, 128], sigma_max=5.0, sigma_data=1.0, num_levels=args.levels)
    ppgen.fit(*model.training_pair(), splits.train.x, splits.validation.x, epochs=args.epochs, batch_size=256, lr=3e-3)
    model.eval()
    log_p = model.held_out_log_likelihood(splits.test.x[: args.test_points], num_samples=1, chunk_size=None)
    print(
        f"test log p(x) by the probability-flow ODE: {log_p.estimate.mean().item():.3f}"
        f" +- {log_p.mean_stderr():.3f} nats over {len(log_p.estimate)} points"
    )
    panels = [("test data", splits.test.x[: args.samples])]
    panels += [(sampler, model.sample(args.samples, sampler=sampler)) for sampler in ("langevin", "pc")]
    plot_examples(panels, splits.event_shape, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
