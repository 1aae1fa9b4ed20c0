"""Training speed and result of bf16 autocast against fp32: the same model, data, seed and steps, in one process.

Each precision trains the spec's model from the same initial parameters with the same random draws
(``inference.precision = "fp32"`` or ``"bf16"``); runs alternate between the precisions and the median
steps per second of the repeats is reported, with the ratio bf16 / fp32. The validation ELBO of each
trained model is then estimated in fp32 with the same seed (its standard error from the per-example spread).

    python bench/mixed_precision.py [--spec models/vae-mnist.toml] [--data DIR] [--epochs 1] [--batch-size B]
                                    [--repeats 3] [--device cpu|cuda] [--threads 2]
"""

import argparse
import math
import os
import statistics
from pathlib import Path

import pyro
import torch

from ppgen.evaluate import elbo
from ppgen.generative_run import load_splits
from ppgen.infer import fit
from ppgen.models import build_model
from ppgen.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]
PRECISIONS = ("fp32", "bf16")


def train(spec, splits, precision: str) -> tuple[torch.nn.Module, float, int]:
    """The trained model, its training steps per second (the loop alone, validation left out) and its steps."""
    pyro.set_rng_seed(spec.inference.seed)
    model = build_model(spec.model, splits.event_shape, spec.guide, splits.train.y)
    settings = spec.inference.model_copy(
        update={"precision": precision, "time_limit": None, "patience": None, "threads": torch.get_num_threads()}
    ).settings()
    data = tuple(splits.train.x if key == "x" else getattr(splits.train, key) for key in model.data_keys)
    result = fit(
        model.model, model.guide, data, settings=settings, batch_transform=splits.batch_transform(), progress=False
    )  # the wall time ends with the last loss read back to the host, so it includes all device work
    return model, result.steps / result.seconds, result.steps


def validation_elbo(model, splits, seed: int) -> tuple[float, float]:
    """Per-example validation ELBO in nats (fp32, one sample per example) and its standard error."""
    model.eval()
    device = next(model.parameters()).device
    data = tuple((splits.validation.x if key == "x" else getattr(splits.validation, key)).to(device)
                 for key in model.data_keys)  # fmt: skip
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        values = elbo(model.model, model.guide, *data, num_particles=1)
    return values.mean().item(), values.std().item() / math.sqrt(len(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("PPGEN_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--spec", default=str(REPO / "models" / "vae-mnist.toml"))
    parser.add_argument("--data", default=str(Path(default_data) / "mnist"), help="MNIST folder (MNIST specs)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the spec's")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    overrides = [f"inference.epochs={args.epochs}", f"inference.device={args.device}"]
    if args.batch_size is not None:
        overrides.append(f"inference.batch_size={args.batch_size}")
    if load_spec(args.spec).data.name == "mnist":
        overrides.append(f"data.path={args.data}")
    spec = load_spec(args.spec, overrides=overrides)
    splits = load_splits(spec.data)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads"

    speeds = {precision: [] for precision in PRECISIONS}
    models, steps = {}, 0
    for repeat in range(args.repeats + 1):  # the first round warms up both precisions
        for precision in PRECISIONS:
            model, speed, steps = train(spec, splits, precision)
            if repeat:
                speeds[precision].append(speed)
            models.setdefault(precision, model)
    print(
        f"bf16 autocast vs fp32: {Path(args.spec).name} ({spec.data.name}, {len(splits.train.x)} training examples),"
        f" batch {spec.inference.batch_size}, {steps} steps, median of {args.repeats};"
        f" {device}; torch {torch.__version__}"
    )
    print(f"{'precision':<10}{'steps/s':>10}{'validation ELBO (nats)':>32}")
    for precision in PRECISIONS:
        value, stderr = validation_elbo(models[precision], splits, spec.inference.seed)
        print(f"{precision:<10}{statistics.median(speeds[precision]):>10.1f}{value:>22.3f} +- {stderr:.3f}")
    ratio = statistics.median(speeds["bf16"]) / statistics.median(speeds["fp32"])
    print(f"steps/s ratio bf16 / fp32: {ratio:.2f}")


if __name__ == "__main__":
    main()
