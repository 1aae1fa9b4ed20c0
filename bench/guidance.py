"""Classifier-free guidance (Ho & Salimans 2021, arXiv:2207.12598) on digits: train the label-conditional DDPM of
models/ddpm-guided.toml through ``ppgen.run`` (the path ``ppgen run`` takes), then for each guidance weight w draw
``--per-class`` samples of every class and print one table: the accuracy of a classifier trained on the real
training split at recognising the asked class in the samples (its accuracy on the real test split is the ceiling),
and sample-based figures against the test split (``ppgen.evaluate.sample_metrics``, in the features of
``ppgen.evaluate.features``). Guidance should trade diversity (recall) for class fidelity (accuracy).

    python bench/guidance.py [--epochs 60] [--per-class 50] [--weights 0 0.5 1 2 4] [--sampler ancestral]
"""

import argparse
import tempfile
import time
from pathlib import Path

import pyro
import torch
from sklearn.linear_model import LogisticRegression

from ppgen.evaluate.features import data_features
from ppgen.evaluate.sample_metrics import sample_evaluation
from ppgen.generative_run import load_run
from ppgen.runner import run
from ppgen.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "models" / "ddpm-guided.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--per-class", type=int, default=50, help="samples of each class per guidance weight")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--sampler", default="ancestral", choices=["ancestral", "pc", "langevin"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="ppgen-guidance-")) / "run"
    overrides = [f"inference.epochs={args.epochs}", f"inference.device={args.device}"]
    spec = load_spec(SPEC, overrides=overrides)
    started = time.perf_counter()
    metrics = run(spec, out, progress=False, force=True)
    training = time.perf_counter() - started
    test = metrics["test"]
    print(
        f"{SPEC.name}, {args.epochs} epochs on {args.device}: {metrics['training']['seconds']:.0f} s training,"
        f" {training:.0f} s with evaluation; test ELBO {test['elbo']:.1f} nats, NLL {test['nll']:.1f} nats"
        " (conditional: log p(x | y))"
    )

    _, model, splits = load_run(out, args.device)
    classifier = LogisticRegression(max_iter=2000).fit(splits.train.x.numpy(), splits.train.y.numpy())
    ceiling = classifier.score(splits.test.x.numpy(), splits.test.y.numpy())
    features = data_features(splits, out.parent / "features")
    classes = model.num_classes
    print(f"classifier: logistic regression on the training split, test accuracy {ceiling:.3f} on real digits")
    print(f"{args.per_class} samples per class ({args.per_class * classes} per row), sampler {args.sampler!r}")
    print(f"{'w':>4} | {'accuracy':>8} | {'MMD^2':>8} | {'FID-like':>8} | {'precision':>9} | {'recall':>6} | seconds")
    for weight in args.weights:
        pyro.set_rng_seed(0)
        started = time.perf_counter()
        samples = model.sample(args.per_class * classes, sampler=args.sampler, guidance=weight).cpu()
        seconds = time.perf_counter() - started
        asked = torch.arange(len(samples)) % classes  # sample(label=None) goes through the classes in turn
        accuracy = (torch.as_tensor(classifier.predict(samples.numpy())) == asked).double().mean().item()
        figures = sample_evaluation(samples, splits.test.x, features=features)
        print(
            f"{weight:>4g} | {accuracy:>8.3f} | {figures['mmd2']:>8.4f} | {figures['fid_like']:>8.2f} |"
            f" {figures['precision']:>9.3f} | {figures['recall']:>6.3f} | {seconds:.1f}"
        )


if __name__ == "__main__":
    main()
