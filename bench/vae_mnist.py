"""Train the VAE of models/vae-mnist.toml on MNIST for a fixed wall-clock budget; report the test NLL.

The network is Burda et al. 2015's (784-200-200-50, tanh, Bernoulli, dynamic binarization), whose
published test NLL is 86.76 nats after 3,280 epochs (K = 5000). Training runs in segments of the
budget (resuming from the checkpoint, which continues the same run exactly); after each segment the
NLL of the first --curve-examples test images is estimated with K = --curve-samples, outside the
training clock, to draw the curve of NLL against training time. At the end the whole test set is
evaluated with K = --num-samples.

    python bench/vae_mnist.py --data /path/to/mnist [--minutes 30] [--num-samples 5000]
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import pyro
import torch

from ppgen.data import dynamic_binarize
from ppgen.evaluate import log_likelihood
from ppgen.infer import fit
from ppgen.models import build_model
from ppgen.run import load_splits
from ppgen.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]


def nll(vae, x, num_samples, chunk_size) -> tuple[float, float]:
    """Mean test NLL and its Monte-Carlo standard error, in nats."""
    result = log_likelihood(vae.model, vae.guide, x, num_samples=num_samples, chunk_size=chunk_size)
    return -result.estimate.mean().item(), (result.stderr.square().sum().sqrt() / len(x)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("PPGEN_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--data", default=str(Path(default_data) / "mnist"), help="folder of the MNIST IDX files")
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget")
    parser.add_argument("--segments", default="1,2,5,10,15,20,25,30", help="minutes at which to draw the curve")
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--curve-samples", type=int, default=1000)
    parser.add_argument("--curve-examples", type=int, default=1000)
    parser.add_argument("--chunk-size", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="bench-vae-mnist.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = load_spec(REPO / "models" / "vae-mnist.toml", overrides=[f"data.path={args.data}"])
    splits = load_splits(spec.data)
    pyro.set_rng_seed(spec.inference.seed)
    vae = build_model(spec.model, splits.event_shape)
    settings = spec.inference.model_copy(update={"epochs": 100_000})  # the clock decides when to stop
    test = splits.test.x
    marks = [m for m in (float(t) for t in args.segments.split(",")) if m < args.minutes] + [args.minutes]
    print(f"VAE 784-200-200-50 on MNIST, {args.minutes:g} min of training on {torch.get_num_threads()} threads")
    print(
        f"{'train min':>9} {'epochs':>7} {'steps':>8} {f'NLL (K={args.curve_samples}, {args.curve_examples} test)':>28}"
    )
    curve, trained, result = [], 0.0, None
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = Path(folder) / "checkpoint.pt"
        for mark in marks:
            budget = settings.model_copy(update={"time_limit": 60 * mark - trained})
            result = fit(
                vae.model,
                vae.guide,
                splits.train.x,
                splits.validation.x,
                settings=budget,
                checkpoint=checkpoint,
                resume=checkpoint.exists(),
                batch_transform=dynamic_binarize,
                progress=False,
            )
            trained += result.wall_time
            value, stderr = nll(vae, test[: args.curve_examples], args.curve_samples, args.chunk_size)
            curve.append({"train_minutes": trained / 60, "epochs": result.epochs, "steps": result.steps, "nll": value})
            print(f"{trained / 60:>9.2f} {result.epochs:>7} {result.steps:>8} {value:>20.2f} +- {stderr:.2f}")
    started = time.perf_counter()
    final, final_stderr = nll(vae, test, args.num_samples, args.chunk_size)
    evaluation_minutes = (time.perf_counter() - started) / 60
    print(
        f"test NLL, all {len(test)} images, K = {args.num_samples}: {final:.2f} +- {final_stderr:.2f} nats"
        f" (evaluated in {evaluation_minutes:.1f} min); published (3,280 epochs): 86.76; target: <= 92"
    )
    report = {
        "minutes": args.minutes,
        "epochs": result.epochs,
        "steps": result.steps,
        "test_nll": final,
        "test_nll_stderr": final_stderr,
        "num_samples": args.num_samples,
        "evaluation_minutes": evaluation_minutes,
        "curve": curve,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
