"""NADE and MADE on the fixed binarized MNIST, next to Germain et al. 2015 (arXiv:1502.03509), Table 2.

Each model trains through ``ppgen.runner.run`` (what ``ppgen run`` does) from the shipped spec, models/nade.toml or
models/made.toml, with overrides: data.name = "binarized_mnist" (Larochelle & Murray 2011's fixed binarization, its
official 50,000/10,000/10,000 splits), the papers' one hidden layer of 500 units, and a training budget of --minutes
per model (inference.time_limit; the run keeps the parameters of its best validation epoch). The models:

    nade        NADE, sigmoid hidden units, the natural pixel order
    made-1      MADE, one mask (the natural order)
    made-K      MADE, an ensemble of K = --masks masks (random orders and connectivity, one drawn per batch),
                scored by the exact log (1/K) sum_k p_k(x)

The test NLL (nats, all 10,000 test images) is exact, as are the papers': no sampling error. The papers trained for
hours to convergence (MADE: Adagrad with early stopping; NADE: SGD), so a CPU budget of minutes stays well above
their figures; the gap says how far. Evaluation (every split's log-likelihood, an ensemble's K networks each) comes
after the budget and is timed apart.

    python bench/autoregressive_mnist.py --minutes 30 --device cuda
    python bench/autoregressive_mnist.py --minutes 0.5  # smoke check on a CPU
"""

import argparse
import os
import tempfile
import time
from pathlib import Path

from ppgen.runner import run
from ppgen.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]

# Germain et al. 2015, Table 2 (binarized MNIST, test negative log-likelihood in nats), as the brief quoted them:
# MADE 1 hidden layer with 1 mask and with 32 masks, and NADE (1 hidden layer, fixed order) as that table lists it.
PUBLISHED_NLL = {"nade": 88.33, "made-1": 88.40, "made-32": 86.64}


def default_data() -> Path:
    root = os.environ.get("PPGEN_DATA")
    folder = Path(root) if root else REPO.parent / "shared" / "data"
    return folder / "binarized_mnist" / "binarized_mnist.npz"


def model_overrides(name: str, masks: int) -> tuple[Path, list[str]]:
    """The spec file and [model] overrides of one of the bench's models."""
    if name == "nade":
        return REPO / "models" / "nade.toml", ["model.hidden=500", "model.orderings=1"]
    count = 1 if name == "made-1" else masks
    return REPO / "models" / "made.toml", ["model.hidden=[500]", f"model.masks={count}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training budget of each model")
    parser.add_argument("--data", default=str(default_data()), help="binarized_mnist.npz")
    parser.add_argument("--masks", type=int, default=32, help="K of the MADE ensemble")
    parser.add_argument("--models", default="nade,made-1,made-K", help="some of nade, made-1, made-K")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for the run folders (default: a temporary one)")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or scratch)
        for name in args.models.split(","):
            spec_file, model = model_overrides(name, args.masks)
            label = f"made-{args.masks}" if name == "made-K" else name
            overrides = [
                "data.name='binarized_mnist'",
                f"data.path='{Path(args.data).resolve()}'",
                "data.binarize='none'",
                *model,
                f"inference.time_limit={args.minutes * 60}",
                "inference.epochs=100000",
                "inference.patience=100000",
                f"inference.batch_size={args.batch_size}",
                f"inference.lr={args.lr}",
                f"inference.device='{args.device}'",
                f"inference.seed={args.seed}",
            ]
            started = time.perf_counter()
            metrics = run(load_spec(spec_file, overrides=overrides), out / label, progress=False, force=True)
            seconds = time.perf_counter() - started
            rows.append((label, metrics, seconds))
            print(f"{label}: done in {seconds:.0f} s", flush=True)

    print(f"\nbinarized MNIST, test NLL in nats (exact; {args.minutes:g} min of training per model, {args.device})")
    header = f"{'model':<10}{'ppgen':>9}{'published':>11}{'gap':>8}{'epochs':>8}{'steps':>8}"
    print(header + f"{'train s':>9}{'eval s':>8}{'run s':>7}")
    for label, metrics, seconds in rows:
        test, training = metrics["test"], metrics["training"]
        assert test["nll_method"] == "exact" and test["nll_num_examples"] == test["num_examples"]
        published = PUBLISHED_NLL.get(label)
        gap = "" if published is None else f"{test['nll'] - published:+.2f}"
        print(
            f"{label:<10}{test['nll']:>9.2f}{published or float('nan'):>11.2f}{gap:>8}{training['epochs']:>8}"
            f"{training['steps']:>8}{training['seconds']:>9.0f}{metrics['evaluation_seconds']:>8.0f}{seconds:>7.0f}"
        )
    print("published: Germain et al. 2015 (arXiv:1502.03509), Table 2")


if __name__ == "__main__":
    main()
