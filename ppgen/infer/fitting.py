"""``fit``: minibatch SVI of any Pyro model/guide pair, the loop over ``svi_step`` with its callbacks.

Each epoch visits the training examples in a seeded order (``epoch_order``); after each step the callbacks of
``ppgen.infer.callbacks`` log and check the loss, validate, checkpoint and watch for Ctrl-C and the time limit.
Training state (parameters, optimizer, schedule, RNG, position in the epoch) is checkpointed atomically, so an
interrupted run resumed from its checkpoint ends in the same parameters as an uninterrupted one on the CPU.

Under ``torchrun`` (see ``ppgen.infer.distributed``) every process trains on its shard of each global batch;
process 0 alone writes checkpoints and shows progress; logged figures are reduced over processes.
"""

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch

from ppgen.errors import SpecError, TrainingError, TrainingInterrupted
from ppgen.infer import distributed
from ppgen.infer.callbacks import Checkpointer, LossLog, Progress, StopSignals, Validation
from ppgen.infer.checkpoint import load_checkpoint, load_svi_state
from ppgen.infer.minibatch import epoch_order
from ppgen.infer.settings import SVISettings, svi_settings
from ppgen.infer.svi import SVIState, owner_modules, svi_init, svi_step
from ppgen.threads import step_flops, training_threads, using_threads

__all__ = ["FitResult", "fit"]

Data = torch.Tensor | tuple[torch.Tensor, ...]


@dataclass
class FitResult:
    """What a fit did. ELBO figures are per example, in nats."""

    steps: int
    epochs: int  # completed epochs
    train_elbo: list[tuple[int, float]] = field(default_factory=list)  # (step, mean over the last log interval)
    # (step at the end of an epoch, the training objective per example on the validation data, in eval mode)
    validation_elbo: list[tuple[int, float]] = field(default_factory=list)
    best_validation_elbo: float | None = None
    initial_elbo: float | None = None  # the training objective per example at the first step (None when resumed)
    stop_reason: str = ""  # "epochs", "patience" or "time_limit"
    seconds: float = 0.0  # wall-clock seconds spent in this call
    device: str = "cpu"
    threads: int = 0  # torch's intra-op CPU threads while training
    elbo: str = ""  # the estimator trained: "trace", "meanfield" or "iwae" (settings.elbo, "auto" resolved)


def fit(
    model: Callable,
    guide: Callable,
    train: Data,
    validation: Data | None = None,
    *,
    settings: SVISettings | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    progress: bool | None = None,
    **options,
) -> FitResult:
    """Maximize the ELBO of (model, guide) on ``train`` by minibatch SVI.

    Args:
        model, guide: Pyro callables taking the batch tensors positionally.
        train: x [N, ...] or a tuple of tensors sharing the first dimension N.
        validation: the same for held-out data. After every epoch the training objective's estimator (the
            ELBO with ``validation_particles``, or the IWAE bound) is computed on it with the modules in
            ``eval()`` mode; it drives early stopping (``patience``) and ``keep_best``.
        settings: an ``SVISettings``; keyword ``options`` (e.g. ``epochs=10, lr=1e-3``) override its fields.
        checkpoint: file for the training state, written every ``checkpoint_every`` steps, at the end,
            and on Ctrl-C (by process 0 under torchrun); ``resume=True`` continues from it in every process.
        batch_transform: applied to the first tensor of every training batch (e.g. dynamic binarization).
        progress: show a progress bar (process 0 only); None shows it when stderr is a terminal.

    Returns:
        A FitResult; the modules hold the trained parameters (the best validated ones when
        ``keep_best`` and validation data are given).
    """
    settings = svi_settings(settings, **options)
    device = distributed.setup(settings.device)
    modules = owner_modules(model, guide)
    for module in modules:
        module.to(device)
    train = _on_device(train, device)
    global_batch = _global_batch_size(settings.batch_size, len(train[0]))
    validation = None if validation is None else _on_device(validation, device)
    first_batch = tuple(t[: global_batch // distributed.world_size()] for t in train)
    if batch_transform is not None:
        first_batch = (batch_transform(first_batch[0]), *first_batch[1:])
    modes = [module.training for module in modules]
    try:
        state = svi_init(model, guide, first_batch, settings, num_data=len(train[0]))
        if resume:
            if checkpoint is None or not Path(checkpoint).exists():
                raise TrainingError(f"cannot resume: no checkpoint at {checkpoint}")
            saved = load_checkpoint(checkpoint)
            try:
                load_svi_state(state, saved)
            except TrainingError as error:
                raise TrainingError(f"cannot resume from {checkpoint}: {error}") from None
        with using_threads(_threads(state)) as threads:
            result = _train(state, train, validation, checkpoint, batch_transform, progress)
        result.threads = threads
        return result
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)


def _train(
    state: SVIState,
    train: tuple[torch.Tensor, ...],
    validation: tuple[torch.Tensor, ...] | None,
    checkpoint: str | Path | None,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None,
    progress: bool | None,
) -> FitResult:
    """Step through epochs until the budget, patience or time runs out, calling the callbacks after each step."""
    settings = state.settings
    started = time.perf_counter()
    rows = distributed.shard(state.batch_size)  # this process's part of every batch
    stop_reason, initial_elbo = "", None
    with Progress(state, progress) as bar, StopSignals(state) as stop_signals, pyro.validation_enabled(False):
        log = LossLog(state, checkpoint, bar)
        validate = None if validation is None else Validation(state, validation, bar)
        save = None if checkpoint is None else Checkpointer(checkpoint)
        with warnings.catch_warnings():
            # Every loss is checked by LossLog, and a non-finite one stops training with an error naming its
            # step, so Pyro's own per-step NaN warning would only repeat it.
            warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
            while not stop_reason:
                stop_reason = _stop_before_epoch(state)
                if stop_reason:
                    break
                order = epoch_order(state.num_data, settings.seed, state.epoch).to(state.device)
                epoch = state.epoch
                while state.epoch == epoch and not stop_reason:
                    start = state.batch * state.batch_size
                    batch = tuple(t[order[start + rows.start : start + rows.stop]] for t in train)
                    if batch_transform is not None:
                        batch = (batch_transform(batch[0]), *batch[1:])
                    state, loss = svi_step(state, batch)
                    if state.step == 1:  # where training started, to tell a run that diverged
                        initial_elbo = -distributed.all_reduce_mean(loss.detach()).item() / log.per_example
                    if state.step % settings.log_every == 0:
                        log(state)
                    if state.batch == 0 and validate is not None:  # an epoch ended
                        validate(state)
                    if save is not None and state.step % settings.checkpoint_every == 0:
                        save(state)
                    interrupt, out_of_time = stop_signals(state)
                    if interrupt:
                        _interrupt(state, checkpoint, log, save)
                    if out_of_time:
                        stop_reason = "time_limit"
            log(state)
    if save is not None:
        save(state)
    if settings.keep_best and state.best is not None:
        state.load_parameters(state.best["parameters"])
    return FitResult(
        steps=state.step,
        epochs=state.epoch,
        train_elbo=list(state.train_elbo),
        validation_elbo=list(state.validation_elbo),
        best_validation_elbo=None if state.best is None else state.best["elbo"],
        initial_elbo=initial_elbo,
        stop_reason=stop_reason,
        seconds=time.perf_counter() - started,
        device=str(state.device),
        elbo=settings.elbo,
    )


def _threads(state: SVIState) -> int | None:
    """The thread count for this fit (None: torch's), from the parameters trained and the examples per step."""
    parameters = sum(p.numel() for group in state.optimizer.param_groups for p in group["params"])
    particles = state.settings.num_particles if state.settings.elbo == "iwae" else 1
    return training_threads(state.settings.threads, step_flops(parameters, state.batch_size, particles))


def _stop_before_epoch(state: SVIState) -> str:
    if state.epoch >= state.settings.epochs:
        return "epochs"
    if state.settings.patience is not None and state.epochs_since_best >= state.settings.patience:
        return "patience"
    return ""


def _interrupt(state: SVIState, checkpoint, log: LossLog, save: Checkpointer | None) -> None:
    where = f"at step {state.step} (epoch {state.epoch + 1})"
    if save is None:
        raise TrainingInterrupted(f"interrupted {where}; no checkpoint was configured")
    log(state)
    save(state)
    raise TrainingInterrupted(f"interrupted {where}; the checkpoint {checkpoint} holds this step")


def _on_device(data: Data, device: torch.device) -> tuple[torch.Tensor, ...]:
    tensors = data if isinstance(data, tuple) else (data,)
    if any(len(t) != len(tensors[0]) for t in tensors):
        raise TrainingError(f"data tensors disagree in their first dimension: {[len(t) for t in tensors]}")
    if len(tensors[0]) == 0:
        raise TrainingError("the training data is empty")
    return tuple(t.to(device) for t in tensors)


def _global_batch_size(batch_size: int, num_data: int) -> int:
    """The examples in one step, over all processes: batch_size, at most the data set; each process takes
    the same number of them."""
    size, processes = min(batch_size, num_data), distributed.world_size()
    if size % processes:
        clipped = f" (clipped to the {num_data} training examples)" if size < batch_size else ""
        raise SpecError(
            f"inference.batch_size = {batch_size}{clipped} does not split evenly across {processes} processes"
        )
    return size
