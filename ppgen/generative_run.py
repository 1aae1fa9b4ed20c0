"""One generative run from a spec to a run folder: data -> model -> SVI -> evaluation -> files.

A run folder holds ``spec.toml`` (the resolved spec), ``checkpoint.pt`` (training state, for
``resume``), ``model.pt`` (the fitted parameters), ``metrics.json``, ``elbo.png`` and ``samples.png``.
``ppgen.run`` calls ``run_generative`` for a ``RunSpec``; the CLI's evaluate, sample and classify commands are
thin wrappers over ``evaluate_run``, ``sample_run`` and ``classify_run``. Under ``torchrun``, ``run_generative``
trains in every process (see ``ppgen.infer.distributed``) and process 0 alone writes the folder.
"""

import time
from pathlib import Path

import pyro
import torch

from ppgen import __version__
from ppgen.data import Splits, discrete_bits_per_dim, load_data
from ppgen.device import resolve_device
from ppgen.errors import PpgenError
from ppgen.evaluate import bits_per_dim, classify, elbo, latent_kl, log_likelihood
from ppgen.files import atomic_open
from ppgen.infer import FitResult, distributed, fit
from ppgen.infer.checkpoint import load_checkpoint
from ppgen.models import GenerativeFamily, as_family, build_model, family_of
from ppgen.plots import plot_elbo_curve, plot_examples
from ppgen.run_folder import CHECKPOINT_FILE, MODEL_FILE, SPEC_FILE, RunFolder
from ppgen.spec.load import dump_spec, load_spec
from ppgen.spec.schema import DataSpec, EvaluationSpec, RunSpec

__all__ = [
    "run_generative",
    "evaluate_run",
    "sample_run",
    "classify_run",
    "load_run",
    "load_splits",
    "evaluate_model",
    "classify_accuracy",
]

MODEL_FORMAT = 1


def run_generative(spec: RunSpec, out: str | Path, *, resume: bool = False, progress: bool | None = None) -> dict:
    """Train and evaluate the model a spec describes, writing the run folder ``out``; returns the metrics.

    Under torchrun every process trains its share of each batch; then process 0 alone evaluates the model
    and writes the folder, while the others wait for it and return the same metrics.
    """
    folder = RunFolder(out)
    distributed.setup(spec.inference.device)
    folder.start(resume=resume, create=distributed.is_main())
    if resume:
        _check_resumable(folder, spec)
    distributed.barrier()  # every process has checked the folder before process 0 writes to it
    splits = load_splits(spec.data)
    pyro.set_rng_seed(spec.inference.seed)  # the model's initial parameters, the same in every process
    model = _build(spec, splits)
    if distributed.is_main():
        folder.write_spec(dump_spec(spec))
    result = fit(
        model.model,
        model.guide,
        _data(model, splits, "train", fixed=False),
        _data(model, splits, "validation"),
        settings=spec.inference.settings(),
        checkpoint=folder / CHECKPOINT_FILE,
        resume=resume,
        batch_transform=splits.batch_transform(),
        progress=progress,
    )
    if not distributed.is_main():
        return distributed.broadcast_object()
    with atomic_open(folder / MODEL_FILE) as file:
        torch.save({"format": MODEL_FORMAT, "state_dict": model.state_dict()}, file)
    plot_elbo_curve(result.train_elbo, result.validation_elbo, folder / "elbo.png")
    metrics = {"training": _training_summary(result), **evaluate_model(model, splits, spec.evaluation)}
    metrics["versions"] = _versions()
    folder.write_metrics(metrics)
    _plot_samples(model, splits, spec, folder / "samples.png")
    return distributed.broadcast_object(metrics)


def load_splits(spec: DataSpec) -> Splits:
    """The data a ``[data]`` table names (its keys are ``load_data``'s arguments)."""
    return load_data(**spec.model_dump(exclude_none=True))


def load_run(folder: str | Path, device: str | None = None) -> tuple[RunSpec, GenerativeFamily, Splits]:
    """The spec, the fitted model (on ``device``, default the spec's) and the data of a finished run."""
    folder = Path(folder)
    if not (folder / SPEC_FILE).is_file():
        raise PpgenError(f"{folder} is not a run folder (no {SPEC_FILE})")
    spec = load_spec(folder / SPEC_FILE)
    if not isinstance(spec, RunSpec):
        raise PpgenError(
            f"{folder} holds a Bayesian run: evaluate, sample and classify work on trained generative models"
            " (for Bayesian runs see posterior.nc, summary.txt and ppgen compare)"
        )
    if not (folder / MODEL_FILE).is_file():
        raise PpgenError(
            f"{folder} has no fitted model ({MODEL_FILE}); finish the run with:"
            f" ppgen run {folder / SPEC_FILE} --out {folder} --resume"
        )
    splits = load_splits(spec.data)
    model = _build(spec, splits)
    model.load_state_dict(load_checkpoint(folder / MODEL_FILE)["state_dict"])
    return spec, model.to(resolve_device(device or spec.inference.device)).eval(), splits


def evaluate_model(model: torch.nn.Module, splits: Splits, spec: EvaluationSpec) -> dict:
    """ELBO on every split (for a diffusion model the whole chain's, with every KL in closed form) and the
    importance-sampled log-likelihood on the test split, in nats per example and bits per dimension
    (-log p / (D ln 2)); for labelled models the accuracy of classification by likelihood; for dequantized
    data bits per dimension of the discrete pixels; and for latent-variable models the KL part of the test
    ELBO per latent site (``kl_per_site``: a site near 0 nats has collapsed onto its prior).

    ``model`` is a zoo family, or any PyroModule with ``model`` and ``guide`` methods (see ``as_family``).
    """
    started = time.perf_counter()
    model.eval()
    family = as_family(model)
    device = next(model.parameters(), torch.empty(0)).device  # a pair may have no parameters: the CPU
    metrics = {}
    for name in ("train", "validation", "test"):
        data = tuple(t.to(device) for t in _data(family, splits, name))
        value = family.analytic_elbo(*data)
        if value is None:
            value = elbo(
                family.model, family.guide, *data, num_particles=spec.elbo_particles, chunk_size=spec.chunk_size
            )
        metrics[name] = {"num_examples": len(data[0]), **_in_units("elbo", value.mean().item(), splits)}
    test = tuple(t[: spec.max_examples].to(device) for t in _data(family, splits, "test"))
    # A chunk counts (example, sample) pairs; a costlier pair (a whole diffusion chain) takes a smaller one.
    chunk_size = None if spec.chunk_size is None else max(1, spec.chunk_size // family.calls_per_pair)
    estimate = log_likelihood(*family.evaluation_pair(), *test, num_samples=spec.num_samples, chunk_size=chunk_size)
    log_p = estimate.estimate.mean().item()
    metrics["test"].update(
        nll=-log_p,
        nll_stderr=(estimate.stderr.square().sum().sqrt() / len(test[0])).item(),
        **{
            key.replace("log_p_", "nll_"): value
            for key, value in _in_units("log_p", log_p, splits).items()
            if key != "log_p"
        },
        nll_num_samples=spec.num_samples,
        nll_num_examples=len(test[0]),
        nll_effective_sample_size_median=estimate.effective_sample_size.median().item(),
    )
    if family.classifies:
        accuracy = classify_accuracy(family, test, spec.classify_samples, spec.chunk_size)
        metrics["test"].update(
            accuracy=accuracy, accuracy_num_samples=spec.classify_samples, accuracy_num_examples=len(test[0])
        )
    if family.kl_per_site:
        kl_per_site = latent_kl(family.model, family.guide, test, num_samples=1)
        if kl_per_site:
            metrics["test"]["kl_per_site"] = kl_per_site
    metrics["evaluation_seconds"] = time.perf_counter() - started
    metrics["device"] = str(device)
    return metrics


def classify_accuracy(
    model: GenerativeFamily, data: tuple[torch.Tensor, torch.Tensor], num_samples: int, chunk_size: int | None
) -> float:
    """Accuracy of predicting argmax_y log p(x | y) + log p(y), with importance-sampled log p(x | y), for a
    family that ``classifies``."""
    x, y = data
    predictions = classify(model.model, model.guide, x, model.class_log_prior, num_samples, chunk_size)
    return (predictions == y).double().mean().item()


def evaluate_run(
    folder: str | Path, *, num_samples: int | None = None, max_examples: int | None = None, device: str | None = None
) -> dict:
    """Re-evaluate a finished run (e.g. with more importance samples) and update its metrics.json."""
    folder = Path(folder)
    spec, model, splits = load_run(folder, device)
    updates = {"num_samples": num_samples, "max_examples": max_examples}
    evaluation = spec.evaluation.model_copy(update={k: v for k, v in updates.items() if v is not None})
    pyro.set_rng_seed(spec.inference.seed)
    metrics = RunFolder(folder).read_metrics()
    metrics.update(evaluate_model(model, splits, evaluation))
    RunFolder(folder).write_metrics(metrics)
    return metrics


def classify_run(
    folder: str | Path, *, num_samples: int = 100, max_examples: int | None = None, device: str | None = None
) -> dict:
    """Classify a labelled run's test set by likelihood and record the accuracy in its metrics.json."""
    folder = Path(folder)
    spec, model, splits = load_run(folder, device)
    if not model.classifies:
        raise PpgenError(f"{folder} holds a {spec.model.kind!r}, which has no labels to classify (use a 'cvae')")
    pyro.set_rng_seed(spec.inference.seed)
    device = next(model.parameters()).device
    test = tuple(t[:max_examples].to(device) for t in _data(model, splits, "test"))
    accuracy = classify_accuracy(model, test, num_samples, spec.evaluation.chunk_size)
    metrics = RunFolder(folder).read_metrics()
    metrics.setdefault("test", {}).update(
        accuracy=accuracy, accuracy_num_samples=num_samples, accuracy_num_examples=len(test[0])
    )
    RunFolder(folder).write_metrics(metrics)
    return metrics


def sample_run(
    folder: str | Path,
    num_samples: int,
    out: str | Path,
    *,
    seed: int = 0,
    device: str | None = None,
    sampler: str | None = None,
) -> Path:
    """Draw num_samples examples from a finished run's model and save them as a PNG grid; ``sampler``
    (diffusion models) overrides the spec's ``[sampling]`` table."""
    spec, model, splits = load_run(folder, device)
    sampling = spec.sampling if sampler is None else spec.sampling.model_copy(update={"sampler": sampler})
    if sampling.sampler not in spec.model.samplers:
        raise PpgenError(f"sampler {sampling.sampler!r} needs a diffusion model; {folder} holds a {spec.model.kind!r}")
    pyro.set_rng_seed(seed)
    samples = model.draw(num_samples, sampling)
    plot_examples([(f"{num_samples} samples ({sampling.sampler})", samples)], splits.event_shape, out)
    return Path(out)


def _build(spec: RunSpec, splits: Splits) -> GenerativeFamily:
    if "y" in family_of(spec.model).data_keys and splits.train.y is None:
        raise PpgenError(
            f"model.kind = {spec.model.kind!r} needs labelled data; data.name = {spec.data.name!r} has no labels"
        )
    return build_model(spec.model, splits.event_shape, spec.guide, splits.train.y)


def _data(model: GenerativeFamily, splits: Splits, name: str, fixed: bool = True) -> tuple[torch.Tensor, ...]:
    """The tensors a model takes (its ``data_keys``) from one split; ``fixed`` training data are binarized
    or dequantized once (evaluation), otherwise left for the trainer's per-batch transform."""
    split = getattr(splits, name)
    x = splits.fixed_train() if name == "train" and fixed else split.x
    return tuple(x if key == "x" else getattr(split, key) for key in model.data_keys)


def _in_units(name: str, log_prob: float, splits: Splits) -> dict:
    """A per-example log-density in nats, in bits per dimension, and for dequantized data in bits per
    dimension of the discrete pixels."""
    figures = {name: log_prob, f"{name}_bits_per_dim": bits_per_dim(log_prob, splits.data_dim)}
    if splits.dequantize:
        figures[f"{name}_discrete_bits_per_dim"] = discrete_bits_per_dim(log_prob, splits.data_dim, splits.levels)
    return figures


def _plot_samples(model: GenerativeFamily, splits: Splits, spec: RunSpec, path: Path) -> None:
    if splits.event_shape == (2,):
        samples = model.draw(len(splits.test.x), spec.sampling)
        plot_examples([("test data", splits.test.x), ("samples", samples)], splits.event_shape, path)
        return
    samples = model.draw(64, spec.sampling)
    panels = [("samples", samples)]
    width = min(8, len(splits.test.x))
    rows = min(4, len(splits.test.x) // width)
    data = tuple(t[: rows * width].to(samples.device) for t in _data(model, splits, "test"))
    reconstructions = model.reconstruct(*data)
    if reconstructions is not None:
        # Rows alternate: `width` test examples, then their reconstructions.
        pairs = torch.stack([data[0].reshape(rows, width, -1), reconstructions.reshape(rows, width, -1)], dim=1)
        panels.append(("test examples / reconstructions", pairs.reshape(2 * rows * width, -1)))
    plot_examples(panels, splits.event_shape, path, columns=8)


def _check_resumable(folder: RunFolder, spec: RunSpec) -> None:
    """Only the [inference], [evaluation] and [sampling] tables may change when a run resumes."""
    saved = load_spec(folder / SPEC_FILE)
    for table in ("data", "model", "guide"):
        before, now = getattr(saved, table).model_dump(), getattr(spec, table).model_dump()
        changed = [key for key in now if before.get(key) != now[key]]
        if changed:
            raise PpgenError(
                f"cannot resume {folder}: {table}.{changed[0]} was {before.get(changed[0])!r} and is now"
                f" {now[changed[0]]!r} (only [inference], [evaluation] and [sampling] may change on resume)"
            )


def _training_summary(result: FitResult) -> dict:
    return {
        "steps": result.steps,
        "epochs": result.epochs,
        "stop_reason": result.stop_reason,
        "best_validation_elbo": result.best_validation_elbo,
        "final_train_elbo": result.train_elbo[-1][1] if result.train_elbo else None,
        "seconds": result.seconds,
        "device": result.device,
        "threads": result.threads,
    }


def _versions() -> dict:
    return {"ppgen": __version__, "torch": torch.__version__, "pyro": pyro.__version__}
