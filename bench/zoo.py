"""Re-run the whole model zoo in one go, each family through ``ppgen.run`` (the path ``ppgen run`` takes) and
``evaluate_samples_run`` (the path ``ppgen evaluate RUN --samples N`` takes), and print one table:

- the test log-likelihood where the family has one, labelled by how it was computed (exact, importance-sampled,
  AIS, probability-flow ODE; the ELBO bound beside it), with its standard error;
- MMD^2 (and its permutation p-value), the classifier two-sample test's accuracy, the FID-like and KID-like
  distances in ppgen's features (not comparable to Inception FID), and k-NN precision and recall, for every family;
- training time and samples per second.

Each family is trained for the same wall-clock budget. Rows differ in what data they model: binarized pixels
(Bernoulli likelihoods) or grey levels (dequantized, discretized or continuous); a row's log-likelihood compares only
with rows of the same data column, while the sample figures are all against the test images as the family sees
them.

    python bench/zoo.py [--data digits|mnist] [--minutes 1] [--samples 500] [--only vae,gan] [--out zoo.md]
                        [--grid zoo.png]

``--grid`` writes a figure with a row of samples per family (the first ``GRID_SAMPLES`` of one seeded draw).
"""

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import pyro
import torch
from matplotlib.figure import Figure

from ppgen.errors import PpgenError
from ppgen.generative_run import evaluate_samples_run, load_run
from ppgen.runner import run
from ppgen.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]
# family -> (spec in models/, the data it models, overrides on digits, overrides on MNIST)
MNIST_BINARIZED = ["data.name=mnist", "data.binarize=dynamic"]
MNIST_GREY = ["data.name=mnist"]
FAMILIES = {
    "VAE": ("vae.toml", "binarized", [], MNIST_BINARIZED + ["model.latent_dim=50", "model.hidden=[200,200]"]),
    "VAE, IAF guide": (
        "vae.toml",
        "binarized",
        ["guide.family=iaf", "guide.flows=2", "guide.hidden=[64]"],
        MNIST_BINARIZED + ["model.latent_dim=50", "guide.family=iaf", "guide.flows=2", "guide.hidden=[200]"],
    ),
    "CVAE, log p(x given y)": ("cvae.toml", "binarized", [], MNIST_BINARIZED + ["model.latent_dim=50"]),
    "HVAE": ("hvae.toml", "binarized", [], MNIST_BINARIZED + ["model.activation=elu", "inference.kl_warmup=2"]),
    "NADE": ("nade.toml", "binarized", [], MNIST_BINARIZED),
    "MADE": ("made.toml", "binarized", [], MNIST_BINARIZED),
    "Bernoulli mixture": ("mixture-bernoulli.toml", "binarized", [], MNIST_BINARIZED),
    "flow density (digits: MAF; MNIST: RealNVP)": (
        "flow-digits.toml",
        "grey, dequantized",
        [],
        MNIST_GREY
        + [
            "model.family=realnvp",
            "model.hidden=[512,512]",
            "inference.batch_size=100",
            "inference.optimizer=clipped_adam",
            "inference.lr=1e-4",
        ],
    ),
    "DDPM": ("ddpm.toml", "grey, discretized", [], MNIST_GREY + ["model.levels=256"]),
    "DDPM, label-conditional": ("ddpm-guided.toml", "grey, discretized", [], MNIST_GREY + ["model.levels=256"]),
    "score model (NCSN)": ("score-digits.toml", "grey, dequantized", [], MNIST_GREY),
    "energy-based model": ("ebm-digits.toml", "grey, dequantized", [], MNIST_GREY),
    "GAN": ("gan-digits.toml", "grey", [], MNIST_GREY),
}
GRID_SAMPLES = 16
COLUMNS = (
    "family", "data", "test log-likelihood (method)", "ELBO", "MMD² (p)", "C2ST acc.", "FID-like", "KID-like",
    "precision", "recall", "train s", "samples/s",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("digits", "mnist"), default="digits")
    default_data = os.environ.get("PPGEN_DATA", str(REPO.parent / "shared" / "data"))
    parser.add_argument("--mnist", default=str(Path(default_data) / "mnist"), help="folder of the MNIST IDX files")
    parser.add_argument("--minutes", type=float, default=1.0, help="training budget of each family")
    parser.add_argument("--samples", type=int, default=500, help="samples compared with as many test examples")
    parser.add_argument("--examples", type=int, default=500, help="test examples of the log-likelihood")
    parser.add_argument("--only", help="comma-separated substrings of the families to run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the table (Markdown) to this file")
    parser.add_argument("--grid", help="write a PNG with a row of samples per family")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    header = (
        f"{args.data}, {args.minutes:g} min of training per family, {args.samples} samples against as many test"
        f" examples, log-likelihood on up to {args.examples} test examples (each spec's own K and cap);"
        f" {torch.get_num_threads()} threads,"
        f" torch {torch.__version__}"
    )
    print(header)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    print(lines[0])
    grid = {}
    for family, (spec_file, data, digits, mnist) in FAMILIES.items():
        if args.only and not any(part.lower() in family.lower() for part in args.only.split(",")):
            continue
        if not (REPO / "models" / spec_file).is_file():
            print(f"| {family} | no models/{spec_file} |")
            continue
        overrides = digits if args.data == "digits" else [*mnist, f"data.path={args.mnist}"]
        try:
            cells, grid[family] = row(family, spec_file, data, overrides, args)
        except PpgenError as error:  # a family that fails (e.g. diverges at this budget) is a row saying so
            cells = [family, data, f"failed: {error}"]
        line = "| " + " | ".join(cells) + " |"
        print(line, flush=True)
        lines.append(line)
        if args.out:  # after every row: a bench stopped part-way keeps the rows it has
            Path(args.out).write_text("\n".join([header, "", *lines]) + "\n")
    if args.grid:
        plot_grid(grid, args.grid)


def row(family: str, spec_file: str, data: str, overrides: list[str], args) -> tuple[list[str], torch.Tensor]:
    """Train one family for the budget, evaluate it by likelihood and by samples; the table's cells, and
    GRID_SAMPLES samples [n, H, W] for the grid."""
    budget = [*overrides, "inference.epochs=100000", f"inference.time_limit={60 * args.minutes}"]
    budget.append(f"inference.threads={args.threads}")
    spec = load_spec(REPO / "models" / spec_file, overrides=budget)
    examples = min(args.examples, spec.evaluation.max_examples or args.examples)  # the spec's own cap, if smaller
    spec = load_spec(REPO / "models" / spec_file, overrides=[*budget, f"evaluation.max_examples={examples}"])
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        metrics = run(spec, out, progress=False)
        figures = evaluate_samples_run(out, args.samples, seed=0)
        spec, model, _ = load_run(out)
        pyro.set_rng_seed(0)
        started = time.perf_counter()
        with torch.no_grad():
            samples = model.draw(100, spec.sampling)
        rate = 100 / (time.perf_counter() - started)
        side = math.isqrt(samples.shape[-1])
        images = samples[:GRID_SAMPLES].reshape(-1, side, side).clamp(0, 1).cpu()
    test = metrics["test"]
    likelihood = "none (no density)"
    if "nll" in test:
        likelihood = f"{-test['nll']:.2f} ± {test['nll_stderr']:.2f} ({test['nll_method']})"
    elbo = f"{test['elbo']:.2f}" if "elbo" in test and test.get("nll_method") != "exact" else ""
    cells = [
        family,
        data,
        likelihood,
        elbo,
        f"{figures['mmd2']:.4f} ({figures['mmd2_p_value']:.3f})",
        f"{figures['c2st_accuracy']:.3f}",
        _with_error(figures["fid_like"], figures.get("fid_like_stderr")),
        _with_error(figures["kid_like"], figures.get("kid_like_stderr"), digits=4),
        f"{figures['precision']:.3f}",
        f"{figures['recall']:.3f}",
        f"{metrics['training']['seconds']:.0f}",
        f"{rate:.1f}",
    ]
    return cells, images


def plot_grid(grid: dict[str, torch.Tensor], path: str) -> None:
    """A row of samples per family, labelled."""
    figure = Figure(figsize=(GRID_SAMPLES * 0.5 + 2.5, 0.55 * len(grid) + 0.3), layout="constrained")
    axes = figure.subplots(len(grid), 1, squeeze=False)[:, 0]
    for axis, (family, images) in zip(axes, grid.items()):
        axis.imshow(torch.cat(list(images), dim=1).numpy(), cmap="gray", vmin=0.0, vmax=1.0)
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_ylabel(family, rotation=0, ha="right", va="center", fontsize=8)
    figure.savefig(path, dpi=110, bbox_inches="tight")  # labels wider than the layout leaves room for


def _with_error(value: float, error: float | None, digits: int = 2) -> str:
    if error is None or not math.isfinite(error):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {error:.{digits}f}"


if __name__ == "__main__":
    main()
