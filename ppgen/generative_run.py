"""One generative run from a spec to a run folder: data -> model -> SVI -> evaluation -> files.

A run folder holds ``spec.toml`` (the resolved spec, as the run began), ``checkpoint.pt`` (training state, for
``resume``), ``model.pt`` (the fitted parameters and a fingerprint of the data split they were trained on),
``metrics.json``, ``elbo.png`` and ``samples.png``; a resume that changes settings records them in
``overrides.json``, and the folder's spec is ``spec.toml`` with those changes (``folder_spec``).
``ppgen.run`` calls ``run_generative`` for a ``RunSpec``; the CLI's evaluate, sample and classify commands are
thin wrappers over ``evaluate_run``, ``sample_run`` and ``classify_run``. Under ``torchrun``, ``run_generative``
trains in every process (see ``ppgen.infer.distributed``) and process 0 alone writes the folder.
"""

import hashlib
import math
import time
from pathlib import Path

import pyro
import torch

from ppgen import __version__
from ppgen.data import Splits, discrete_bits_per_dim, load_data
from ppgen.device import resolve_device
from ppgen.errors import PpgenError
from ppgen.evaluate import bits_per_dim, classify, elbo, latent_kl
from ppgen.evaluate.features import data_features
from ppgen.evaluate.metrics import keep_estimates
from ppgen.evaluate.sample_metrics import sample_evaluation
from ppgen.files import atomic_open
from ppgen.infer import FitResult, distributed, fit
from ppgen.infer.checkpoint import load_checkpoint
from ppgen.models import GenerativeFamily, as_family, build_model, family_of
from ppgen.plots import plot_elbo_curve, plot_examples
from ppgen.run_folder import CHECKPOINT_FILE, MODEL_FILE, OVERRIDES_FILE, SPEC_FILE, RunFolder
from ppgen.spec.load import dump_spec, load_spec, read_tree, validate_spec, validate_tree
from ppgen.spec.schema import DataSpec, EvaluationSpec, RunSpec

__all__ = [
    "run_generative",
    "folder_spec",
    "resumed_spec",
    "evaluate_run",
    "evaluate_samples_run",
    "sample_run",
    "classify_run",
    "load_run",
    "load_splits",
    "evaluate_model",
    "classify_accuracy",
]

MODEL_FORMAT = 1
# The [inference] keys a resume may change; the others are fixed by the checkpoint (the optimizer's state and
# learning rate, its schedule, the batches and their order, the objective).
RESUMABLE_INFERENCE = (
    "epochs", "time_limit", "patience", "validation_particles", "keep_best", "checkpoint_every", "log_every",
    "device", "threads", "jit", "precision",
)  # fmt: skip
CONDITIONAL_NOTE = "conditional: -log p(x | y) given the test labels (likewise every split's ELBO)"
LOSS_BATCH = 256  # examples per call when a loss family's loss is evaluated on a split
DIVERGED = 3.0  # a final training ELBO this many times |start| below its start: the run diverged
SAMPLES_MINIMUM = 4  # samples and test examples the sample-based figures need at least
FEATURES_CACHE = ".ppgen-features"  # beside the run folders: the feature classifiers, by training data


def run_generative(
    spec: RunSpec, out: str | Path, *, resume: bool = False, progress: bool | None = None, force: bool = False
) -> dict:
    """Train and evaluate the model a spec describes, writing the run folder ``out``; returns the metrics.

    ``resume`` continues the interrupted run in ``out``: ``spec`` may differ from the folder's spec (``folder_spec``)
    only in settings a resume can change, which are recorded in ``overrides.json``; ``spec.toml`` stays as the run
    began. ``force`` replaces a run already in ``out``. The folder is locked while the run writes it.

    Under torchrun every process trains its share of each batch; then process 0 alone evaluates the model
    and writes the folder, while the others wait for it and return the same metrics.
    """
    distributed.setup(spec.inference.device)
    with RunFolder(out) as folder:
        folder.start(resume=resume, create=distributed.is_main(), force=force)
        changes = _resume_changes(folder, spec) if resume else {}
        distributed.barrier()  # every process has checked the folder before process 0 writes to it
        splits = load_splits(spec.data)
        fingerprint = split_fingerprint(splits)
        if resume and (folder / MODEL_FILE).is_file():
            _check_split(folder, load_checkpoint(folder / MODEL_FILE), fingerprint)
        pyro.set_rng_seed(spec.inference.seed)  # the model's initial parameters, the same in every process
        model = _build(spec, splits)
        if not resume:
            model.fit_to_data(splits.fixed_train())
        if distributed.is_main():
            if not resume:
                folder.write_spec(dump_spec(spec))
            elif changes:
                folder.record_overrides(changes)
        result = fit(
            *model.training_pair(),
            _data(model, splits, "train", fixed=False),
            _data(model, splits, "validation") if model.validates else None,
            settings=spec.inference.settings(),
            checkpoint=folder / CHECKPOINT_FILE,
            resume=resume,
            batch_transform=splits.batch_transform(),
            progress=progress,
        )
        if not distributed.is_main():
            return distributed.broadcast_object()
        with atomic_open(folder / MODEL_FILE) as file:
            torch.save({"format": MODEL_FORMAT, "state_dict": model.state_dict(), "splits": fingerprint}, file)
        plot_elbo_curve(result.train_elbo, result.validation_elbo, folder / "elbo.png")
        metrics = {"training": _training_summary(result, model), **evaluate_model(model, splits, spec.evaluation)}
        metrics["test"] = keep_estimates({}, metrics["test"])
        diverged = _divergence(result, spec) if model.objective == "elbo" else ""
        if diverged:
            metrics["warnings"] = [diverged]
        metrics["versions"] = _versions()
        folder.write_metrics(metrics)
        _plot_samples(model, splits, spec, folder / "samples.png")
        return distributed.broadcast_object(metrics)


def folder_spec(folder: str | Path) -> RunSpec:
    """The spec of the generative run in ``folder``: its ``spec.toml`` with the changes each resume recorded in
    ``overrides.json``."""
    folder = RunFolder(folder)
    if not (folder / SPEC_FILE).is_file():
        raise PpgenError(f"{folder} is not a run folder (no {SPEC_FILE})")
    spec = load_spec(folder / SPEC_FILE)
    if not isinstance(spec, RunSpec):
        raise PpgenError(
            f"{folder} holds a Bayesian run: evaluate, sample, classify and --resume work on trained generative"
            " models (for Bayesian runs see posterior.nc, summary.txt and ppgen compare)"
        )
    resumes = folder.read_overrides()
    if not resumes:
        return spec
    tree = spec.model_dump(mode="json")
    for changes in resumes:
        for key, change in changes.items():
            *tables, leaf = key.split(".")
            node = tree
            for table in tables:
                node = node.setdefault(table, {})
            node[leaf] = change["now"]
    return validate_spec(tree, source=str(folder / OVERRIDES_FILE))


def resumed_spec(folder: str | Path, *, inference: str | Path | None = None, overrides=()) -> RunSpec:
    """What ``ppgen run --resume`` continues: the folder's spec (``folder_spec``) with an inference spec's tables
    and ``key=value`` overrides applied, which ``run_generative`` records when they change anything."""
    spec = folder_spec(folder) if (Path(folder) / SPEC_FILE).is_file() else None  # a Bayesian run is named first
    RunFolder(folder).start(resume=True, create=False)  # a folder without a checkpoint is one clear line
    spec = spec or folder_spec(folder)
    if inference is None and not overrides:
        return spec
    tree = spec.model_dump(mode="json", exclude_none=True)
    tree, sources = read_tree(Path(folder) / SPEC_FILE, inference=inference, overrides=overrides, tree=tree)
    return validate_tree(RunSpec, tree, sources, str(Path(folder) / SPEC_FILE))


def split_fingerprint(splits: Splits) -> dict:
    """Each split's example count and a hash of its examples (and labels), as training saw them."""
    fingerprint = {}
    for name in ("train", "validation", "test"):
        split = getattr(splits, name)
        digest = hashlib.sha256()
        for tensor in (split.x, split.y):
            if tensor is not None:
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        fingerprint[name] = {"examples": len(split), "sha256": digest.hexdigest()}
    return fingerprint


def load_splits(spec: DataSpec) -> Splits:
    """The data a ``[data]`` table names (its keys are ``load_data``'s arguments)."""
    return load_data(**spec.model_dump(exclude_none=True))


def load_run(folder: str | Path, device: str | None = None) -> tuple[RunSpec, GenerativeFamily, Splits]:
    """The spec, the fitted model (on ``device``, default the spec's) and the data of a finished run; data split
    differently from training (the split's fingerprint in ``model.pt``) is refused."""
    folder = Path(folder)
    spec = folder_spec(folder)
    if not (folder / MODEL_FILE).is_file():
        raise PpgenError(
            f"{folder} has no fitted model ({MODEL_FILE}); finish the run with:"
            f" ppgen run {folder / SPEC_FILE} --out {folder} --resume"
        )
    saved = load_checkpoint(folder / MODEL_FILE)
    state_dict = saved.get("state_dict")
    if not isinstance(state_dict, dict) or not all(isinstance(value, torch.Tensor) for value in state_dict.values()):
        raise PpgenError(f"{folder / MODEL_FILE} is corrupt or not a ppgen model: it holds no state dict of tensors")
    splits = load_splits(spec.data)
    _check_split(folder, saved, split_fingerprint(splits))
    model = _build(spec, splits)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as error:  # torch lists every missing, unexpected or mis-shaped parameter
        details = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
        raise PpgenError(
            f"{folder / MODEL_FILE} does not fit the model {folder / SPEC_FILE} describes (was the spec edited after"
            f" training?): {details[0] if details else 'the parameters differ'}"
        ) from None
    return spec, model.to(resolve_device(device or spec.inference.device)).eval(), splits


def evaluate_model(model: torch.nn.Module, splits: Splits, spec: EvaluationSpec) -> dict:
    """The training objective on every split: the ELBO (for a diffusion model the whole chain's, with every KL in
    closed form) or a loss family's loss; the held-out log-likelihood on the test split as the family computes
    it (``nll_method``: importance-sampled, exact, AIS, probability-flow ODE), in nats per example and bits per
    dimension (-log p / (D ln 2)), or a note that the family has none; for labelled models the accuracy of
    classification by likelihood; for dequantized data bits per dimension of the discrete pixels; and for
    latent-variable models the KL part of the test ELBO per latent site (``kl_per_site``: a site near 0 nats
    has collapsed onto its prior).

    ``model`` is a zoo family, or any PyroModule with ``model`` and ``guide`` methods (see ``as_family``).
    """
    started = time.perf_counter()
    model.eval()
    family = as_family(model)
    device = next(model.parameters(), torch.empty(0)).device  # a pair may have no parameters: the CPU
    metrics = {}
    for name in ("train", "validation", "test"):
        data = tuple(t.to(device) for t in _data(family, splits, name))
        metrics[name] = {"num_examples": len(data[0]), **_objective(family, data, spec, splits)}
    test = tuple(t[: spec.max_examples].to(device) for t in _data(family, splits, "test"))
    # A chunk counts (example, sample) pairs; a costlier pair (a whole diffusion chain) takes a smaller one.
    chunk_size = None if spec.chunk_size is None else max(1, spec.chunk_size // family.calls_per_pair)
    estimate = family.held_out_log_likelihood(*test, num_samples=spec.num_samples, chunk_size=chunk_size)
    if estimate is None:
        metrics["test"]["nll_method"] = f"none: a {family.kind!r} defines no density (compare it by its samples)"
    else:
        log_p = estimate.estimate.mean().item()
        metrics["test"].update(
            nll=-log_p,
            nll_stderr=estimate.mean_stderr(),
            **{
                key.replace("log_p_", "nll_"): value
                for key, value in _in_units("log_p", log_p, splits).items()
                if key != "log_p"
            },
            nll_method=family.likelihood,
            **({"nll_note": CONDITIONAL_NOTE} if "y" in family.data_keys else {}),
            **({"nll_warning": estimate.warning} if estimate.warning else {}),
            nll_num_samples=estimate.num_samples,
            nll_num_examples=len(test[0]),
            nll_effective_sample_size_median=estimate.effective_sample_size.median().item(),
        )
    if family.classifies:
        accuracy = classify_accuracy(family, test, spec.classify_samples, spec.chunk_size)
        metrics["test"].update(
            accuracy=accuracy, accuracy_num_samples=spec.classify_samples, accuracy_num_examples=len(test[0])
        )
    if family.kl_per_site:  # over the whole test split, as its ELBO
        whole = tuple(t.to(device) for t in _data(family, splits, "test"))
        kl_per_site = latent_kl(family.model, family.guide, whole, num_samples=1)
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
    """Re-evaluate a finished run (e.g. with more importance samples) and return this evaluation's metrics (with
    the run's other figures). Its metrics.json keeps every estimate (see ``keep_estimates``): a partial or cheaper
    one is filed beside a fuller one, never over it."""
    with RunFolder(folder) as run:
        run.lock()
        spec, model, splits = load_run(folder, device)
        metrics = run.read_metrics()  # a corrupt file stops us before the evaluation, not after it
        updates = {"num_samples": num_samples, "max_examples": max_examples}
        evaluation = spec.evaluation.model_copy(update={k: v for k, v in updates.items() if v is not None})
        pyro.set_rng_seed(spec.inference.seed)
        fresh = evaluate_model(model, splits, evaluation)
        recorded = {**metrics, **fresh}
        for name in ("train", "validation", "test"):
            recorded[name] = keep_estimates(metrics.get(name, {}), fresh[name])
        run.write_metrics(recorded)
    return {**metrics, **fresh}


def evaluate_samples_run(folder: str | Path, num_samples: int, *, seed: int = 0, device: str | None = None) -> dict:
    """Compare ``num_samples`` draws of a finished run's model (``model.draw`` with the spec's ``[sampling]``)
    with as many test examples (all of them if fewer) by ``sample_evaluation``: MMD^2 and a classifier two-sample
    test on the examples, FID-like and KID-like distances and precision/recall in the features of a classifier
    trained on the run's training split (``data_features``; cached in ``<folder>/../.ppgen-features``), or in
    the raw data when the data have no labels. On binary data (``data.binarize``) samples that are not binary
    (a VAE's decoder means) are taken as Bernoulli probabilities and drawn from, seeded. Time and memory grow as
    (2N)^2 (kernel and distance matrices in float64): N = 1000 takes about 0.5 GB.

    The figures are filed in metrics.json: every evaluation in ``test.samples_estimates`` by its sizes and seed,
    and ``test.samples`` the one with the most samples (the newest of equals); returns this evaluation's."""
    with RunFolder(folder) as run:
        run.lock()
        spec, model, splits = load_run(folder, device)
        metrics = run.read_metrics()  # a corrupt file stops us before the evaluation, not after it
        reference = splits.test.x[:num_samples]
        if min(num_samples, len(reference)) < SAMPLES_MINIMUM:
            raise PpgenError(
                f"--samples {num_samples}: the sample-based figures need at least {SAMPLES_MINIMUM} samples and test"
                f" examples ({folder} has {len(splits.test.x)} test examples)"
            )
        pyro.set_rng_seed(seed)
        with torch.no_grad():
            samples = model.draw(num_samples, spec.sampling).reshape(num_samples, -1).cpu()
        binarized = splits.binarize != "none" and not bool(((samples == 0) | (samples == 1)).all())
        if binarized:
            generator = torch.Generator().manual_seed(seed)
            samples = torch.bernoulli(samples.clamp(0.0, 1.0), generator=generator)
        features = data_features(splits, Path(folder).resolve().parent / FEATURES_CACHE)
        figures = {
            "seed": seed,
            "sampler": spec.sampling.sampler,
            "samples_binarized": binarized,
            "features_cache": features.cache,
            **sample_evaluation(samples, reference, features=features, seed=seed),
        }
        test = metrics.get("test", {})
        estimates = dict(test.get("samples_estimates") or {})
        estimates[f"N={figures['num_samples']}, M={figures['num_reference']}, seed={seed}"] = figures
        # max keeps the first of equals: this evaluation, then the others newest first
        newest_first = [figures, *reversed(list(estimates.values()))]
        headline = max(newest_first, key=lambda f: (f["num_samples"], f["num_reference"]))
        metrics["test"] = {**test, "samples": headline, "samples_estimates": estimates}
        run.write_metrics(metrics)
    return figures


def classify_run(
    folder: str | Path, *, num_samples: int | None = None, max_examples: int | None = None, device: str | None = None
) -> dict:
    """Classify a labelled run's test set by likelihood with ``num_samples`` (default the spec's
    ``evaluation.classify_samples``) per class, file the accuracy in its metrics.json beside any other (see
    ``keep_estimates``), and return this classification's figures."""
    with RunFolder(folder) as run:
        run.lock()
        spec, model, splits = load_run(folder, device)
        if not model.classifies:
            raise PpgenError(f"{folder} holds a {spec.model.kind!r}, which has no labels to classify (use a 'cvae')")
        num_samples = num_samples or spec.evaluation.classify_samples
        metrics = run.read_metrics()
        pyro.set_rng_seed(spec.inference.seed)
        device = next(model.parameters()).device
        test = tuple(t[:max_examples].to(device) for t in _data(model, splits, "test"))
        accuracy = classify_accuracy(model, test, num_samples, spec.evaluation.chunk_size)
        figures = {"accuracy": accuracy, "accuracy_num_samples": num_samples, "accuracy_num_examples": len(test[0])}
        metrics["test"] = keep_estimates(metrics.get("test", {}), figures)
        run.write_metrics(metrics)
    return figures


def sample_run(
    folder: str | Path,
    num_samples: int,
    out: str | Path | None = None,
    *,
    seed: int = 0,
    device: str | None = None,
    sampler: str | None = None,
    label: int | None = None,
    guidance: float | None = None,
) -> Path:
    """Draw num_samples examples from a finished run's model and save them as a PNG grid at ``out`` (default
    ``samples-n<N>-seed<S>-<sampler>[-label<L>][-guidance<W>].png`` in the run folder, beside the run's own
    ``samples.png``); ``sampler``, ``label`` and ``guidance`` (conditional diffusion models) override the spec's
    ``[sampling]`` table."""
    spec, model, splits = load_run(folder, device)
    updates = {"sampler": sampler, "label": label, "guidance": guidance}
    sampling = spec.sampling.model_copy(update={key: value for key, value in updates.items() if value is not None})
    if sampling.sampler not in spec.model.samplers:
        raise PpgenError(
            f"sampler {sampling.sampler!r} does not apply to {folder}'s {spec.model.kind!r} (its samplers:"
            f" {', '.join(map(repr, spec.model.samplers))})"
        )
    if (label is not None or guidance) and not getattr(spec.model, "conditional", False):
        raise PpgenError(
            f"--label and --guidance need a label-conditional diffusion model (model.kind = 'ddpm' with"
            f" model.conditional = true); {folder} holds an unconditional {spec.model.kind!r}"
        )
    if label is not None and splits.train.y is not None and label > int(splits.train.y.max()):
        raise PpgenError(f"--label {label}: {folder}'s data has labels 0..{int(splits.train.y.max())}")
    name = f"samples-n{num_samples}-seed{seed}-{sampling.sampler}"
    name += (f"-label{label}" if label is not None else "") + (f"-guidance{guidance:g}" if guidance else "")
    out = Path(folder) / f"{name}.png" if out is None else Path(out)
    if not out.parent.is_dir():
        raise PpgenError(f"cannot write {out}: the folder {out.parent} does not exist")
    pyro.set_rng_seed(seed)
    samples = model.draw(num_samples, sampling)
    title = f"{num_samples} samples ({sampling.sampler}" + (f", guidance {sampling.guidance:g})" if guidance else ")")
    try:
        panel, columns = _by_class(title, samples, model, sampling)
        plot_examples([panel], splits.event_shape, out, columns=columns)
    except OSError as error:
        raise PpgenError(f"cannot write {out}: {error.strerror}") from None
    return out


def _by_class(title: str, samples: torch.Tensor, model: GenerativeFamily, sampling) -> tuple[tuple, int | None]:
    """A panel of ``samples`` and its grid's columns: a labelled row per class when a conditional model drew every
    class in turn (sample i of class i mod C) and each class has as many, else the samples in order."""
    classes = getattr(model, "num_classes", None)
    if sampling.label is not None:
        return (f"{title}, class {sampling.label}", samples), None
    if not classes or len(samples) % classes:
        return ((title, samples) if not classes else (f"{title}, classes 0-{classes - 1} in turn", samples)), None
    per_class = len(samples) // classes
    rows = samples.reshape(per_class, classes, -1).transpose(0, 1).reshape(len(samples), -1)
    return (f"{title}, a row per class", rows, [f"class {c}" for c in range(classes)]), per_class


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


def _objective(family: GenerativeFamily, data: tuple[torch.Tensor, ...], spec: EvaluationSpec, splits: Splits) -> dict:
    """One split's training objective: its ELBO per example in units (``_in_units``), or a loss family's mean loss
    under the loss's name, computed in batches of ``LOSS_BATCH`` examples."""
    if family.objective == "elbo":
        value = family.analytic_elbo(*data)
        if value is None:
            value = elbo(
                family.model, family.guide, *data, num_particles=spec.elbo_particles, chunk_size=spec.chunk_size
            )
        return _in_units("elbo", value.mean().item(), splits)
    total = 0.0
    for start in range(0, len(data[0]), LOSS_BATCH):
        total += family.loss(*(t[start : start + LOSS_BATCH] for t in data)).detach().double().sum().item()
    return {family.objective: total / len(data[0])}


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
    classes = getattr(model, "num_classes", None)
    if classes and spec.sampling.label is None:  # draw() goes through the classes in turn: 8 of each, a row per class
        samples = model.draw(8 * classes, spec.sampling)
        panels = [_by_class("samples", samples, model, spec.sampling)[0]]
    else:
        samples = model.draw(64, spec.sampling)
        panels = [("samples", samples)]
    width = min(8, len(splits.test.x))
    rows = min(4, len(splits.test.x) // width)
    data = tuple(t[: rows * width].to(samples.device) for t in _data(model, splits, "test"))
    reconstructions = model.reconstruct(*data)
    if reconstructions is not None:
        # Rows alternate: `width` test examples, then their reconstructions.
        pairs = torch.stack([data[0].reshape(rows, width, -1), reconstructions.reshape(rows, width, -1)], dim=1)
        labels = ["test", "reconstruction"] * rows
        panels.append(("test examples / reconstructions", pairs.reshape(2 * rows * width, -1), labels))
    plot_examples(panels, splits.event_shape, path, columns=8)


def _resume_changes(folder: RunFolder, spec: RunSpec) -> dict:
    """The settings in which ``spec`` differs from the folder's (dotted key -> {"was", "now"}); a change a resume
    cannot make (the data, the model, or what the checkpoint fixes) is one error naming the key."""
    saved = folder_spec(folder)
    changes = {}
    for table in RunSpec.model_fields:
        before, now = getattr(saved, table).model_dump(mode="json"), getattr(spec, table).model_dump(mode="json")
        for key in now:
            if before.get(key) == now[key]:
                continue
            if table in ("data", "model", "guide") or (table == "inference" and key not in RESUMABLE_INFERENCE):
                raise PpgenError(
                    f"cannot resume {folder}: {table}.{key} was {before.get(key)!r} and is now {now[key]!r} (a resume"
                    f" may change [evaluation], [sampling] and inference's {', '.join(RESUMABLE_INFERENCE)}; the"
                    " others need a new run: --out elsewhere or --force)"
                )
            changes[f"{table}.{key}"] = {"was": before.get(key), "now": now[key]}
    return changes


def _check_split(folder: RunFolder | Path, saved: dict, fingerprint: dict) -> None:
    """Refuse data split differently from the split ``model.pt`` was trained on (older files have no record)."""
    trained = saved.get("splits")
    if not isinstance(trained, dict):
        return
    for name, now in fingerprint.items():
        if trained.get(name) != now:
            was = trained.get(name, {}).get("examples", "?") if isinstance(trained.get(name), dict) else "?"
            raise PpgenError(
                f"{folder}: the {name} split differs from the one the model was trained on ({was} examples then,"
                f" {now['examples']} now, or other examples): the data or data.seed changed since training, and"
                " scoring it could count training examples as held out; restore the run's data or train a new run"
            )


def _divergence(result: FitResult, spec: RunSpec) -> str:
    """A warning when the training ELBO ended far below where it started (a diverged run), else ""."""
    if not result.train_elbo:
        return ""
    start, final = result.train_elbo[0][1], result.train_elbo[-1][1]
    if result.initial_elbo is not None and math.isfinite(result.initial_elbo):
        start = max(start, result.initial_elbo)
    if math.isfinite(final) and final >= start - DIVERGED * max(abs(start), 1.0):
        return ""
    return (
        f"training diverged: the training ELBO ended at {final:.4g} nats, far below where it started ({start:.4g});"
        f" the model is not usable: lower inference.lr (now {spec.inference.lr:g}) or set"
        " inference.optimizer = 'clipped_adam'"
    )


def _training_summary(result: FitResult, family: GenerativeFamily) -> dict:
    final = result.train_elbo[-1][1] if result.train_elbo else None
    if family.objective != "elbo":  # the trainer's "ELBO" of a loss family is its loss, negated
        best = None if result.best_validation_elbo is None else -result.best_validation_elbo
        figures = {"objective": family.objective, f"best_validation_{family.objective}": best}
        figures[f"final_train_{family.objective}"] = None if final is None else -final
    else:
        figures = {
            "elbo": result.elbo,  # the estimator trained ("auto" resolved)
            "best_validation_elbo": result.best_validation_elbo,
            "final_train_elbo": final,
        }
    return {
        "steps": result.steps,
        "epochs": result.epochs,
        "stop_reason": result.stop_reason,
        **figures,
        "seconds": result.seconds,
        "device": result.device,
        "threads": result.threads,
    }


def _versions() -> dict:
    return {"ppgen": __version__, "torch": torch.__version__, "pyro": pyro.__version__}
