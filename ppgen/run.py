"""One run from a spec to a run folder: data -> model -> SVI -> evaluation -> files.

A run folder holds ``spec.toml`` (the resolved spec), ``checkpoint.pt`` (training state, for
``resume``), ``model.pt`` (the fitted parameters), ``metrics.json``, ``elbo.png`` and ``samples.png``.
The CLI commands are thin wrappers over ``run``, ``evaluate_run`` and ``sample_run``.
"""

import json
import time
from pathlib import Path

import pyro
import torch

import ppgen
from ppgen.data import Splits, dynamic_binarize, load_data
from ppgen.device import resolve_device
from ppgen.errors import PpgenError
from ppgen.evaluate import bits_per_dim, elbo, log_likelihood
from ppgen.files import atomic_open, write_text_atomic
from ppgen.infer import FitResult, fit
from ppgen.infer.checkpoint import load_checkpoint
from ppgen.models import build_model
from ppgen.plots import plot_elbo_curve, plot_examples
from ppgen.spec.load import dump_spec, load_spec
from ppgen.spec.schema import DataSpec, EvaluationSpec, RunSpec

__all__ = ["run", "evaluate_run", "sample_run", "load_run", "load_splits", "evaluate_model"]

SPEC_FILE, CHECKPOINT_FILE, MODEL_FILE, METRICS_FILE = "spec.toml", "checkpoint.pt", "model.pt", "metrics.json"
MODEL_FORMAT = 1


def run(spec: RunSpec, out: str | Path, *, resume: bool = False, progress: bool | None = None) -> dict:
    """Train and evaluate the model a spec describes, writing the run folder ``out``; returns the metrics."""
    out = Path(out)
    _prepare_folder(out, spec, resume)
    splits = load_splits(spec.data)
    pyro.set_rng_seed(spec.inference.seed)  # the model's initial parameters
    model = build_model(spec.model, splits.data_dim)
    write_text_atomic(out / SPEC_FILE, dump_spec(spec))
    result = fit(
        model.model,
        model.guide,
        splits.train.x,
        splits.validation.x,
        settings=spec.inference,
        checkpoint=out / CHECKPOINT_FILE,
        resume=resume,
        batch_transform=dynamic_binarize if splits.binarize == "dynamic" else None,
        progress=progress,
    )
    with atomic_open(out / MODEL_FILE) as file:
        torch.save({"format": MODEL_FORMAT, "state_dict": model.state_dict()}, file)
    plot_elbo_curve(result.train_elbo, result.validation_elbo, out / "elbo.png")
    metrics = {"training": _training_summary(result), **evaluate_model(model, splits, spec.evaluation)}
    metrics["versions"] = _versions()
    write_text_atomic(out / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")
    _plot_samples(model, splits, out / "samples.png")
    return metrics


def load_splits(spec: DataSpec) -> Splits:
    """The data a ``[data]`` table names (its keys are ``load_data``'s arguments)."""
    return load_data(**spec.model_dump(exclude_none=True))


def load_run(folder: str | Path, device: str | None = None) -> tuple[RunSpec, torch.nn.Module, Splits]:
    """The spec, the fitted model (on ``device``, default the spec's) and the data of a finished run."""
    folder = Path(folder)
    if not (folder / SPEC_FILE).is_file():
        raise PpgenError(f"{folder} is not a run folder (no {SPEC_FILE})")
    spec = load_spec(folder / SPEC_FILE)
    if not (folder / MODEL_FILE).is_file():
        raise PpgenError(f"{folder} has no fitted model ({MODEL_FILE}); finish it with: ppgen run {folder / SPEC_FILE} --out {folder} --resume")
    splits = load_splits(spec.data)
    model = build_model(spec.model, splits.data_dim)
    model.load_state_dict(load_checkpoint(folder / MODEL_FILE)["state_dict"])
    return spec, model.to(resolve_device(device or spec.inference.device)), splits


def evaluate_model(model: torch.nn.Module, splits: Splits, spec: EvaluationSpec) -> dict:
    """ELBO on every split and the importance-sampled log-likelihood on the test split, in nats per
    example and bits per dimension (bits/dim are -log p / (D ln 2))."""
    started = time.perf_counter()
    device = next(model.parameters()).device
    metrics = {}
    for name, x in (("train", _fixed_train(splits)), ("validation", splits.validation.x), ("test", splits.test.x)):
        x = x.to(device)
        value = elbo(model.model, model.guide, x, num_particles=spec.elbo_particles, chunk_size=spec.chunk_size)
        mean = value.mean().item()
        metrics[name] = {"elbo": mean, "elbo_bits_per_dim": bits_per_dim(mean, splits.data_dim), "num_examples": len(x)}
    test = splits.test.x[: spec.max_examples].to(device)
    estimate = log_likelihood(model.model, model.guide, test, num_samples=spec.num_samples, chunk_size=spec.chunk_size)
    nll = -estimate.estimate.mean().item()
    metrics["test"].update(
        nll=nll,
        nll_stderr=(estimate.stderr.square().sum().sqrt() / len(test)).item(),
        nll_bits_per_dim=bits_per_dim(-nll, splits.data_dim),
        nll_num_samples=spec.num_samples,
        nll_num_examples=len(test),
        nll_effective_sample_size_median=estimate.effective_sample_size.median().item(),
    )
    metrics["evaluation_seconds"] = time.perf_counter() - started
    metrics["device"] = str(device)
    return metrics


def evaluate_run(folder: str | Path, *, num_samples: int | None = None, max_examples: int | None = None,
                 device: str | None = None) -> dict:
    """Re-evaluate a finished run (e.g. with more importance samples) and update its metrics.json."""
    folder = Path(folder)
    spec, model, splits = load_run(folder, device)
    updates = {"num_samples": num_samples, "max_examples": max_examples}
    evaluation = spec.evaluation.model_copy(update={k: v for k, v in updates.items() if v is not None})
    pyro.set_rng_seed(spec.inference.seed)
    metrics_path = folder / METRICS_FILE
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    metrics.update(evaluate_model(model, splits, evaluation))
    write_text_atomic(metrics_path, json.dumps(metrics, indent=2) + "\n")
    return metrics


def sample_run(folder: str | Path, num_samples: int, out: str | Path, *, seed: int = 0, device: str | None = None) -> Path:
    """Draw num_samples examples from a finished run's model and save them as a PNG grid."""
    _, model, splits = load_run(folder, device)
    pyro.set_rng_seed(seed)
    plot_examples([(f"{num_samples} samples", model.sample(num_samples))], splits.event_shape, out)
    return Path(out)


def _fixed_train(splits: Splits) -> torch.Tensor:
    """Training data under dynamic binarization holds intensities: binarize it once, reproducibly."""
    if splits.binarize != "dynamic":
        return splits.train.x
    return torch.bernoulli(splits.train.x, generator=torch.Generator().manual_seed(0))


def _plot_samples(model, splits: Splits, path: Path) -> None:
    if splits.event_shape == (2,):
        panels = [("test data", splits.test.x), ("samples", model.sample(len(splits.test.x)))]
        plot_examples(panels, splits.event_shape, path)
        return
    samples = model.sample(64)
    width = min(8, len(splits.test.x))
    rows = min(4, len(splits.test.x) // width)
    originals = splits.test.x[: rows * width].to(samples.device)
    reconstructions = model.reconstruct(originals)
    # Rows alternate: `width` test examples, then their reconstructions.
    pairs = torch.stack([originals.reshape(rows, width, -1), reconstructions.reshape(rows, width, -1)], dim=1)
    panels = [("samples", samples), ("test examples / reconstructions", pairs.reshape(2 * rows * width, -1))]
    plot_examples(panels, splits.event_shape, path, columns=width)


def _prepare_folder(out: Path, spec: RunSpec, resume: bool) -> None:
    if not resume:
        if any((out / name).exists() for name in (SPEC_FILE, CHECKPOINT_FILE, METRICS_FILE)):
            raise PpgenError(f"{out} already holds a run: pass --resume to continue it, or --out to write elsewhere")
        out.mkdir(parents=True, exist_ok=True)
        return
    if not (out / CHECKPOINT_FILE).is_file():
        raise PpgenError(f"cannot resume: {out} has no {CHECKPOINT_FILE}")
    saved = load_spec(out / SPEC_FILE)
    for table in ("data", "model"):
        before, now = getattr(saved, table).model_dump(), getattr(spec, table).model_dump()
        changed = [key for key in now if before.get(key) != now[key]]
        if changed:
            raise PpgenError(
                f"cannot resume {out}: {table}.{changed[0]} was {before.get(changed[0])!r} and is now"
                f" {now[changed[0]]!r} (only [inference] and [evaluation] may change on resume)"
            )


def _training_summary(result: FitResult) -> dict:
    return {
        "steps": result.steps,
        "epochs": result.epochs,
        "stop_reason": result.stop_reason,
        "best_validation_elbo": result.best_validation_elbo,
        "final_train_elbo": result.train_elbo[-1][1] if result.train_elbo else None,
        "seconds": result.wall_time,
        "device": result.device,
    }


def _versions() -> dict:
    return {"ppgen": ppgen.__version__, "torch": torch.__version__, "pyro": pyro.__version__}
