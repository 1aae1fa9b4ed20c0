"""Stochastic variational inference for any Pyro model/guide pair: ``fit`` trains it on minibatches.

The model and guide are called as ``model(*batch)`` and ``guide(*batch)``, where each tensor of the
batch has the ``"data"`` plate as its first dimension. Parameters are found without a global
registry: those of the ``nn.Module`` that owns ``model``/``guide`` (a bound method's ``__self__``, or
the callable itself), plus any ``pyro.param`` sites the pair reaches. Training state (parameters,
optimizer, schedule, RNG, position in the epoch) is checkpointed atomically, so an interrupted run
resumed from its checkpoint ends in the same parameters as an uninterrupted one on the CPU.

Under ``torchrun`` (see ``ppgen.infer.distributed``) every process trains on its shard of each global batch,
and DistributedDataParallel averages the gradients: each process's loss estimates the whole batch's, so the
average is the one-process gradient estimator for that batch. Process 0 alone writes checkpoints and shows
progress; logged figures are reduced over processes. With ``precision = "bf16"`` the training loss runs
under ``torch.autocast`` in bfloat16 while parameters, optimizer state, validation and evaluation stay fp32.
"""

import math
import signal
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
from pydantic import ValidationError
from pyro.optim.clipped_adam import ClippedAdam
from tqdm.auto import tqdm

from ppgen.errors import SpecError, TrainingError, TrainingInterrupted
from ppgen.infer import distributed
from ppgen.infer.checkpoint import load_checkpoint, save_checkpoint
from ppgen.infer.minibatch import epoch_order
from ppgen.infer.objectives import make_objective, parameter_sites
from ppgen.plates import inspect_plates
from ppgen.spec.schema import SVISpec

__all__ = ["FitResult", "fit", "owner_modules"]

CHECKPOINT_FORMAT = 2  # 2: the random state of every process, in rank order


@dataclass
class FitResult:
    """What a fit did. ELBO figures are per example, in nats."""

    steps: int
    epochs: int  # completed epochs
    train_elbo: list[tuple[int, float]] = field(default_factory=list)  # (step, mean over the last log interval)
    # (step at the end of an epoch, the training objective per example on the validation data, in eval mode)
    validation_elbo: list[tuple[int, float]] = field(default_factory=list)
    best_validation_elbo: float | None = None
    stop_reason: str = ""  # "epochs", "patience" or "time_limit"
    wall_time: float = 0.0  # seconds spent in this call
    device: str = "cpu"


def fit(
    model: Callable,
    guide: Callable,
    train: torch.Tensor | tuple[torch.Tensor, ...],
    validation: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
    *,
    settings: SVISpec | None = None,
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
        settings: an ``SVISpec``; keyword ``options`` (e.g. ``epochs=10, lr=1e-3``) override its fields.
        checkpoint: file for the training state, written every ``checkpoint_every`` steps, at the end,
            and on Ctrl-C (by process 0 under torchrun); ``resume=True`` continues from it in every process.
        batch_transform: applied to the first tensor of every training batch (e.g. dynamic binarization).
        progress: show a progress bar (process 0 only); None shows it when stderr is a terminal.

    Returns:
        A FitResult; the modules hold the trained parameters (the best validated ones when
        ``keep_best`` and validation data are given).
    """
    settings = _settings(settings, options)
    device = distributed.setup(settings.device)
    if settings.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SpecError("inference.precision = 'bf16' needs a GPU with bfloat16 support (use 'fp32')")
    modules = owner_modules(model, guide)
    for module in modules:
        module.to(device)
    train = _on_device(train, device)
    global_batch = _global_batch_size(settings.batch_size, len(train[0]))
    validation = None if validation is None else _on_device(validation, device)
    first_batch = tuple(t[: global_batch // distributed.world_size()] for t in train)
    if batch_transform is not None:
        first_batch = (batch_transform(first_batch[0]), *first_batch[1:])
    with pyro.validation_enabled(True):  # one checked pass reports shape and support errors clearly
        plates = inspect_plates(model, guide, *first_batch)
    if settings.elbo == "iwae" and not plates.per_example and len(first_batch[0]) < len(train[0]):
        split = "minibatches or several processes" if distributed.is_distributed() else "minibatches"
        raise SpecError(
            f"inference.elbo = 'iwae' with {split} needs every latent inside the 'data' plate; this model"
            " has global latents (use one process with batch_size >= the number of examples, or elbo = 'trace')"
        )
    options = dict(elbo=settings.elbo, max_plate_nesting=plates.max_plate_nesting)
    objective, cleanup = make_objective(
        model,
        guide,
        modules,
        **options,
        num_particles=settings.num_particles,
        jit=settings.jit,
        num_data=len(train[0]),
        kl_warmup=settings.kl_warmup > 0,
    )
    validation_objective, validation_cleanup = None, lambda: None
    if validation is not None:  # the same estimator on held-out data (the IWAE bound keeps its K)
        particles = settings.num_particles if settings.elbo == "iwae" else settings.validation_particles
        validation_objective, validation_cleanup = make_objective(
            model, guide, modules, **options, num_particles=particles, num_data=len(validation[0]), gradients=False
        )
    modes = [module.training for module in modules]
    try:
        for module in modules:
            module.train()
        objectives = (objective, validation_objective)
        if validation is not None:  # each process validates its shard; the sums are added up
            validation = tuple(t[distributed.shard(len(validation[0]))] for t in validation)
        run = _Training(settings, device, objectives, modules, train, validation, first_batch, batch_transform)
        if resume:
            if checkpoint is None or not Path(checkpoint).exists():
                raise TrainingError(f"cannot resume: no checkpoint at {checkpoint}")
            run.load_state_dict(load_checkpoint(checkpoint))
        else:
            pyro.set_rng_seed(distributed.rank_seed(settings.seed))
        return run.train(checkpoint, progress)
    finally:
        cleanup()
        validation_cleanup()
        for module, mode in zip(modules, modes):
            module.train(mode)


def owner_modules(*callables: Callable) -> list[torch.nn.Module]:
    """The distinct nn.Modules behind callables: a module itself, or the owner of a bound method."""
    found: list[torch.nn.Module] = []
    for fn in callables:
        owner = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
        if isinstance(owner, torch.nn.Module) and all(owner is not m for m in found):
            found.append(owner)
    return found


class _Training:
    """The mutable state of one fit, and the loop over it."""

    def __init__(self, settings, device, objectives, modules, train, validation, first_batch, transform):
        self.settings, self.device = settings, device
        self.objective, self.validation_objective = objectives
        self.train_data, self.validation_data, self.batch_transform = train, validation, transform
        self.num_data = len(train[0])
        self.world = distributed.world_size()
        self.batch_size = len(first_batch[0]) * self.world  # global: the sum over processes
        self.rows = distributed.shard(self.batch_size)  # this process's part of every batch
        self.batches_per_epoch = self.num_data // self.batch_size  # the last partial batch is dropped
        self.per_example = self.num_data if self.objective.rescaled else self.batch_size
        self.modules = modules

        sites = parameter_sites(self.objective, first_batch)  # also creates lazily built parameters
        module_tensors = {id(p) for module in modules for p in module.parameters()}
        self.store_params = {name: p for name, p in sites.items() if id(p) not in module_tensors}
        parameters = [p for module in modules for p in module.parameters()] + list(self.store_params.values())
        if not parameters:
            raise TrainingError("the model and guide have no parameters to train")
        if settings.jit:  # compile now, so that compilation's random draws precede seeding and resuming
            self.objective.loss_and_backward(*first_batch)
        self.loss = distributed.data_parallel(self._process_loss, modules, device)
        self.optimizer = _optimizer(settings, parameters)
        self.scheduler = _scheduler(settings, self.optimizer, settings.epochs * self.batches_per_epoch)

        self.step, self.epoch, self.batch = 0, 0, 0
        self.train_elbo: list[tuple[int, float]] = []
        self.validation_elbo: list[tuple[int, float]] = []
        self.best: dict | None = None
        self.epochs_since_best = 0
        self.recent_losses: list[torch.Tensor] = []

    # -- the loop -----------------------------------------------------------------------------------
    def train(self, checkpoint: str | Path | None, progress: bool | None) -> FitResult:
        settings = self.settings
        started = time.perf_counter()
        stop_reason = ""
        bar = tqdm(
            total=settings.epochs * self.batches_per_epoch,
            initial=min(self.step, settings.epochs * self.batches_per_epoch),
            disable=True if not distributed.is_main() else None if progress is None else not progress,
            unit="step",
            dynamic_ncols=True,
        )
        with bar, pyro.validation_enabled(False), _sigint_flag() as interrupted, warnings.catch_warnings():
            # Every loss is checked below, and a non-finite one stops training with an error naming its
            # step, so Pyro's own per-step NaN warning would only repeat it.
            warnings.filterwarnings("ignore", message="Encountered NaN", category=UserWarning)
            while not stop_reason:
                stop_reason = self._stop_before_epoch()
                if stop_reason:
                    break
                order = epoch_order(self.num_data, settings.seed, self.epoch).to(self.device)
                epoch = self.epoch
                while self.epoch == epoch and not stop_reason:
                    start = self.batch * self.batch_size
                    rows = order[start + self.rows.start : start + self.rows.stop]
                    self._train_step(tuple(t[rows] for t in self.train_data))
                    if self.step % settings.log_every == 0:
                        self._log(bar, checkpoint)
                    if self.batch == self.batches_per_epoch:
                        self._end_epoch(bar)
                    if checkpoint is not None and self.step % settings.checkpoint_every == 0:
                        self._save(checkpoint)
                    interrupt, out_of_time = self._stop_signals(started, interrupted)
                    if interrupt:
                        self._interrupt(bar, checkpoint)
                    if out_of_time:
                        stop_reason = "time_limit"
            self._log(bar, checkpoint)
        if checkpoint is not None:
            self._save(checkpoint)
        if settings.keep_best and self.best is not None:
            self._load_parameters(self.best["parameters"])
        return FitResult(
            steps=self.step,
            epochs=self.epoch,
            train_elbo=list(self.train_elbo),
            validation_elbo=list(self.validation_elbo),
            best_validation_elbo=None if self.best is None else self.best["elbo"],
            stop_reason=stop_reason,
            wall_time=time.perf_counter() - started,
            device=str(self.device),
        )

    def _stop_before_epoch(self) -> str:
        if self.epoch >= self.settings.epochs:
            return "epochs"
        if self.settings.patience is not None and self.epochs_since_best >= self.settings.patience:
            return "patience"
        return ""

    def _stop_signals(self, started: float, interrupted: Callable[[], bool]) -> tuple[bool, bool]:
        """(Ctrl-C was pressed, the time limit has passed). Several processes agree on them at log steps
        only, so that all stop after the same step without a message between them every step."""
        if self.world > 1 and self.step % self.settings.log_every:
            return False, False
        limit = self.settings.time_limit
        interrupt, out_of_time = distributed.any_rank(
            [interrupted(), limit is not None and time.perf_counter() - started > limit]
        )
        return interrupt, out_of_time

    def _process_loss(self, *batch: torch.Tensor) -> torch.Tensor:
        """This process's differentiable loss: its mean over processes is the loss of the global batch."""
        loss = self.objective.differentiable_loss(*batch)
        # A rescaled loss already estimates the whole data set's; an unscaled one is its shard's own, and the
        # batch's is the sum over processes: world size times their mean.
        return loss if self.objective.rescaled else loss * self.world

    def _train_step(self, batch: tuple[torch.Tensor, ...]) -> None:
        if self.batch_transform is not None:
            batch = (self.batch_transform(batch[0]), *batch[1:])
        if self.settings.kl_warmup:  # a pure function of the step, so resuming reproduces it
            warmup_steps = self.settings.kl_warmup * self.batches_per_epoch
            self.objective.set_kl_weight(min(1.0, (self.step + 1) / warmup_steps))
        self.optimizer.zero_grad(set_to_none=True)
        # Parameters stay fp32: autocast runs matrix products in bf16 and the heads return fp32 densities.
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.settings.precision == "bf16"):
            loss = self.loss(*batch)
        loss.backward()
        distributed.average_gradients(self.store_params.values())
        self.optimizer.step()
        if self.settings.schedule == "cosine":
            self.scheduler.step()
        self.recent_losses.append(loss.detach())
        self.step += 1
        self.batch += 1

    def _log(self, bar, checkpoint) -> None:
        """Check the losses since the last log for NaN/inf (one host sync per interval) and report them.
        Every process gets the same mean over processes, so a non-finite loss anywhere stops them all."""
        if not self.recent_losses:
            return
        losses = distributed.all_reduce_mean(torch.stack(self.recent_losses)).tolist()
        self.recent_losses.clear()
        for offset, loss in enumerate(losses):
            if not math.isfinite(loss):
                step = self.step - len(losses) + offset + 1
                kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was kept"
                raise TrainingError(
                    f"the loss is {loss} at step {step} (epoch {self.epoch + 1}); training stopped and {kept}"
                    " (try a lower learning rate or optimizer = 'clipped_adam')"
                )
        value = -sum(losses) / len(losses) / self.per_example
        self.train_elbo.append((self.step, value))
        bar.n = min(self.step, bar.total)
        bar.set_postfix(self._postfix(), refresh=True)

    def _postfix(self) -> dict:
        postfix = {"epoch": self.epoch + 1}
        if self.train_elbo:
            postfix["elbo"] = f"{self.train_elbo[-1][1]:.3f}"
        if self.validation_elbo:
            postfix["val"] = f"{self.validation_elbo[-1][1]:.3f}"
        return postfix

    def _end_epoch(self, bar) -> None:
        self.epoch += 1
        self.batch = 0
        if self.settings.schedule == "exponential":
            self.scheduler.step()
        if self.validation_data is None:
            return
        modes = [module.training for module in self.modules]
        for module in self.modules:
            module.eval()  # e.g. a diffusion model scores every step, not a sample of them
        total = self.validation_objective.loss_sum(self.validation_data, self.batch_size)
        total = distributed.all_reduce_sum(total).item()
        value = -total / self.validation_objective.num_data
        for module, mode in zip(self.modules, modes):
            module.train(mode)
        self.validation_elbo.append((self.step, value))
        if self.best is None or value > self.best["elbo"]:
            self.best = {"elbo": value, "step": self.step, "parameters": self._parameters(copy=True)}
            self.epochs_since_best = 0
        elif self.epoch > self.settings.kl_warmup:  # patience starts once the objective is the ELBO
            self.epochs_since_best += 1
        bar.set_postfix(self._postfix(), refresh=True)

    def _interrupt(self, bar, checkpoint) -> None:
        where = f"at step {self.step} (epoch {self.epoch + 1})"
        if checkpoint is None:
            raise TrainingInterrupted(f"interrupted {where}; no checkpoint was configured")
        self._log(bar, checkpoint)
        self._save(checkpoint)
        raise TrainingInterrupted(f"interrupted {where}; the checkpoint {checkpoint} holds this step")

    # -- checkpoint state ----------------------------------------------------------------------------
    def _save(self, path) -> None:
        """Write the state (process 0), unless a non-finite loss or parameter in any process means it is no
        longer a good one. Every process takes part: each one's random state goes into the checkpoint."""
        finite = not self.recent_losses or bool(torch.isfinite(torch.stack(self.recent_losses)).all())
        finite = finite and all(bool(torch.isfinite(p).all()) for p in self.optimizer.param_groups[0]["params"])
        (broken,) = distributed.any_rank([not finite])
        rng = distributed.all_gather_object(self._rng_state())
        if not broken and distributed.is_main():
            save_checkpoint(self.state_dict(rng), path)

    def _rng_state(self) -> dict:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return {"cpu": torch.get_rng_state(), "cuda": cuda}

    def state_dict(self, rng: list[dict]) -> dict:
        """The training state; ``rng`` holds every process's random state, in rank order."""
        return {
            "format": CHECKPOINT_FORMAT,
            "position": {"step": self.step, "epoch": self.epoch, "batch": self.batch},
            "parameters": self._parameters(copy=False),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": rng,
            "train_elbo": [list(pair) for pair in self.train_elbo],
            "validation_elbo": [list(pair) for pair in self.validation_elbo],
            "best": self.best,
            "epochs_since_best": self.epochs_since_best,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("format") not in (1, CHECKPOINT_FORMAT):
            raise TrainingError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT}")
        self._load_parameters(state["parameters"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        position = state["position"]
        self.step, self.epoch, self.batch = position["step"], position["epoch"], position["batch"]
        if self.batch >= self.batches_per_epoch:
            raise TrainingError(
                f"the checkpoint stopped at batch {self.batch} of an epoch, but this data set and batch size"
                f" give {self.batches_per_epoch} batches per epoch"
            )
        self.train_elbo = [tuple(pair) for pair in state["train_elbo"]]
        self.validation_elbo = [tuple(pair) for pair in state["validation_elbo"]]
        self.best = state["best"]
        self.epochs_since_best = state["epochs_since_best"]
        self._load_rng_state(state["rng"] if state["format"] == CHECKPOINT_FORMAT else [_format_1_rng(state["rng"])])

    def _load_rng_state(self, states: list[dict]) -> None:
        if len(states) != self.world:
            warnings.warn(
                f"the checkpoint holds the random state of {len(states)} processes and this run has {self.world}:"
                " each process is reseeded, so training goes on but does not repeat an uninterrupted run",
                stacklevel=4,
            )
            seed = np.random.SeedSequence([self.settings.seed, self.step]).generate_state(1, dtype=np.uint32)[0]
            pyro.set_rng_seed(distributed.rank_seed(int(seed)))
            return
        state = states[distributed.rank()]
        torch.set_rng_state(state["cpu"])
        if state["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda"], self.device)

    def _parameters(self, copy: bool) -> dict:
        def detach(t):
            return t.detach().clone() if copy else t.detach()

        return {
            "modules": [{k: detach(v) for k, v in m.state_dict().items()} for m in self.modules],
            "store": {name: detach(p) for name, p in self.store_params.items()},
        }

    def _load_parameters(self, state: dict) -> None:
        if len(state["modules"]) != len(self.modules) or set(state["store"]) != set(self.store_params):
            raise TrainingError("the checkpoint's parameters do not match this model and guide")
        try:
            for module, module_state in zip(self.modules, state["modules"]):
                module.load_state_dict(module_state)
        except RuntimeError as error:
            reason = str(error).splitlines()[0]
            raise TrainingError(f"the checkpoint's parameters do not match this model and guide: {reason}") from None
        with torch.no_grad():
            for name, value in state["store"].items():
                self.store_params[name].copy_(value)


def _settings(settings: SVISpec | None, options: dict) -> SVISpec:
    base = (settings or SVISpec()).model_dump()
    unknown = sorted(set(options) - set(base))
    if unknown:
        raise SpecError(f"fit: unknown option {unknown[0]!r}")
    try:
        return SVISpec.model_validate({**base, **options})
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        # A check across fields (a model validator) has no key of its own, and its message names the keys.
        message = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
        raise SpecError(f"fit: {key}: {message}" if key else f"fit: {message}") from None


def _on_device(data, device) -> tuple[torch.Tensor, ...]:
    tensors = data if isinstance(data, tuple) else (data,)
    if any(len(t) != len(tensors[0]) for t in tensors):
        raise TrainingError(f"data tensors disagree in their first dimension: {[len(t) for t in tensors]}")
    if len(tensors[0]) == 0:
        raise TrainingError("the training data is empty")
    return tuple(t.to(device) for t in tensors)


def _optimizer(settings: SVISpec, parameters: list[torch.Tensor]) -> torch.optim.Optimizer:
    if settings.optimizer == "clipped_adam":
        return ClippedAdam(parameters, lr=settings.lr, clip_norm=settings.clip_norm)
    # The fused kernel updates all parameters in one call: about 3x faster than the default on a CPU.
    fused = all(p.dtype in (torch.float32, torch.float64) and p.device.type in ("cpu", "cuda") for p in parameters)
    return torch.optim.Adam(parameters, lr=settings.lr, fused=fused)


def _scheduler(settings: SVISpec, optimizer, total_steps: int):
    if settings.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if settings.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=settings.lr_decay)
    return None


def _format_1_rng(rng: dict) -> dict:
    """A format-1 checkpoint's random state (one process; every CUDA device's) as format 2 has it."""
    return {"cpu": rng["cpu"], "cuda": rng["cuda"][torch.cuda.current_device()] if rng["cuda"] else None}


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


@contextmanager
def _sigint_flag():
    """Turn the first Ctrl-C into a flag checked between steps (a second one interrupts at once)."""
    flag: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handle(signum, frame):
        if flag:
            raise KeyboardInterrupt
        flag.append(True)

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield lambda: bool(flag)
    finally:
        signal.signal(signal.SIGINT, previous)
