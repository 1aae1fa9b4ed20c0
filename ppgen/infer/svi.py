"""Stochastic variational inference as explicit state and step (NumPyro's ``SVI.init``/``SVI.update``).

    state = svi_init(model, guide, x[:128], SVISettings(lr=1e-3), num_data=len(x))
    for epoch in range(10):
        order = epoch_order(len(x), state.settings.seed, epoch)
        for start in range(0, len(x) - 127, 128):
            state, loss = svi_step(state, x[order[start : start + 128]])

The model and guide are called as ``model(*batch)`` and ``guide(*batch)``, where each tensor of the
batch has the ``"data"`` plate as its first dimension. Parameters are found without a global
registry: those of the ``nn.Module`` that owns ``model``/``guide`` (a bound method's ``__self__``, or
the callable itself), plus any ``pyro.param`` sites the pair reaches. ``fit`` (``ppgen.infer.fitting``)
is the loop over ``svi_step`` with checkpoints, validation and early stopping.

Under ``torchrun`` (see ``ppgen.infer.distributed``) every process steps on its shard of each global batch,
and DistributedDataParallel averages the gradients: each process's loss estimates the whole batch's, so the
average is the one-process gradient estimator for that batch. With ``precision = "bf16"`` the training loss
runs under ``torch.autocast`` in bfloat16 while parameters and optimizer state stay fp32.

A pair with discrete sites marked for enumeration (``infer={"enumerate": "parallel"}`` on a sample site, or a
``config_enumerate``d model or guide) is found on the first batch's trace and trained with TraceEnum_ELBO, which
sums those sites out exactly (see ``ppgen.infer.elbos``). ``elbo = "auto"`` (the default) is settled there too,
from the model's trace (``chosen_elbo``); ``state.settings.elbo`` holds the estimator chosen.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from pyro.optim.clipped_adam import ClippedAdam
from torch import nn

from ppgen.errors import SpecError, TrainingError
from ppgen.infer import distributed
from ppgen.infer.elbos import chosen_elbo
from ppgen.infer.objectives import Objective, make_objective, parameter_sites
from ppgen.infer.settings import SVISettings
from ppgen.plates import inspect_plates

__all__ = ["SVIState", "owner_modules", "svi_init", "svi_step"]


@dataclass(eq=False)
class SVIState:
    """Everything one SVI run holds: the loss module (and through it the trained modules), the optimizer and
    its schedule, the position (step, epoch, batch within the epoch) and the history that ``fit`` logs.

    Pyro draws from torch's global generator: ``svi_init`` seeds it, and checkpoints save and restore it.
    ``svi_step`` updates the state in place (torch optimizers do) and returns it.
    """

    settings: SVISettings
    model: Callable
    guide: Callable
    objective: Objective
    loss: Callable[..., torch.Tensor]  # this process's loss; data-parallel under torchrun
    store_params: dict[str, torch.Tensor]  # pyro.param sites outside the modules, by name
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    device: torch.device
    max_plate_nesting: int
    num_data: int  # training examples, in all processes together
    batch_size: int  # examples per step, in all processes together
    step: int = 0
    epoch: int = 0  # completed epochs
    batch: int = 0  # steps taken in the current epoch
    recent_losses: list[torch.Tensor] = field(default_factory=list)  # since the last read (see fit's log)
    train_elbo: list[tuple[int, float]] = field(default_factory=list)  # (step, mean over a log interval)
    validation_elbo: list[tuple[int, float]] = field(default_factory=list)  # (step, per example)
    best: dict | None = None  # {"elbo", "step", "parameters"} of the best validated epoch
    epochs_since_best: int = 0

    @property
    def modules(self) -> list[nn.Module]:
        """The trained modules (the owners of model and guide)."""
        return list(self.objective.trained)

    @property
    def batches_per_epoch(self) -> int:
        """Steps in one epoch: the last partial batch is dropped."""
        return self.num_data // self.batch_size

    def parameters(self, copy: bool = False) -> dict:
        """{"modules": each module's state_dict, "store": the store parameters by name}, detached."""

        def detach(t):
            return t.detach().clone() if copy else t.detach()

        return {
            "modules": [{k: detach(v) for k, v in m.state_dict().items()} for m in self.modules],
            "store": {name: detach(p) for name, p in self.store_params.items()},
        }

    def load_parameters(self, parameters: dict) -> None:
        """Copy ``parameters`` (as ``parameters()`` returns them) into the modules and store tensors."""
        if len(parameters["modules"]) != len(self.modules) or set(parameters["store"]) != set(self.store_params):
            raise TrainingError("the checkpoint's parameters do not match this model and guide")
        try:
            for module, module_state in zip(self.modules, parameters["modules"]):
                module.load_state_dict(module_state)
        except RuntimeError as error:
            reason = str(error).splitlines()[0]
            raise TrainingError(f"the checkpoint's parameters do not match this model and guide: {reason}") from None
        with torch.no_grad():
            for name, value in parameters["store"].items():
                self.store_params[name].copy_(value)


def owner_modules(*callables: Callable) -> list[nn.Module]:
    """The distinct nn.Modules behind callables: a module itself, or the owner of a bound method."""
    found: list[nn.Module] = []
    for fn in callables:
        owner = fn if isinstance(fn, nn.Module) else getattr(fn, "__self__", None)
        if isinstance(owner, nn.Module) and all(owner is not m for m in found):
            found.append(owner)
    return found


def svi_init(
    model: Callable,
    guide: Callable,
    batch: torch.Tensor | tuple[torch.Tensor, ...],
    settings: SVISettings | None = None,
    *,
    num_data: int | None = None,
) -> SVIState:
    """The state before the first step: modules on the device in train mode, the objective, optimizer and
    schedule; torch's generator seeded with ``settings.seed`` (per process under torchrun).

    Args:
        model, guide: Pyro callables taking the batch tensors positionally.
        batch: this process's part of one training batch: x [B, ...] or a tuple of tensors sharing B. It is
            run once to find the plates and to create lazily built parameters.
        settings: an ``SVISettings`` (default ``SVISettings()``).
        num_data: training examples N in all processes together (default B times the processes), which
            rescales the batch ELBO to the data set's and sets the epoch length N // (B * processes).
    """
    settings = settings or SVISettings()
    device = distributed.setup(settings.device)
    if settings.precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise SpecError("inference.precision = 'bf16' needs a GPU with bfloat16 support (use 'fp32')")
    modules = owner_modules(model, guide)
    for module in modules:
        module.to(device)
    batch = tuple(t.to(device) for t in (batch if isinstance(batch, tuple) else (batch,)))
    world = distributed.world_size()
    num_data = len(batch[0]) * world if num_data is None else num_data
    with pyro.validation_enabled(True):  # one checked pass reports shape and support errors clearly
        plates = inspect_plates(model, guide, *batch)
    if settings.elbo == "iwae" and not plates.per_example and len(batch[0]) < num_data:
        split = "minibatches or several processes" if distributed.is_distributed() else "minibatches"
        raise SpecError(
            f"inference.elbo = 'iwae' with {split} needs every latent inside the 'data' plate; this model"
            " has global latents (use one process with batch_size >= the number of examples, or elbo = 'trace')"
        )
    if plates.enumerated_globally and len(batch[0]) < num_data:
        split = "minibatches or several processes" if distributed.is_distributed() else "minibatches"
        raise SpecError(
            f"inference.batch_size = {len(batch[0]) * world}: the enumerated site"
            f" {plates.enumerated_globally[0]!r} lies outside the 'data' plate, and summing it out needs every"
            f" example at once, not {split} (use one process with batch_size >= the number of examples)"
        )
    settings = dataclasses.replace(settings, elbo=chosen_elbo(settings.elbo, model, batch, bool(plates.enumerated)))
    for module in modules:
        module.train()
    objective = make_objective(
        model,
        guide,
        modules,
        elbo=settings.elbo,
        max_plate_nesting=plates.max_plate_nesting,
        num_particles=settings.num_particles,
        jit=settings.jit,
        num_data=num_data,
        kl_warmup=settings.kl_warmup > 0,
        enumerated=bool(plates.enumerated),
    )
    if settings.kl_warmup and plates.enumerated:
        _check_warmup_with_enumeration(objective, batch, settings.kl_warmup)
    sites = parameter_sites(objective, batch)  # also creates lazily built parameters
    module_tensors = {id(p) for p in objective.parameters()}
    store_params = {name: p for name, p in sites.items() if id(p) not in module_tensors}
    parameters = list(objective.parameters()) + list(store_params.values())
    if not parameters:
        raise TrainingError("the model and guide have no parameters to train")
    if settings.jit:  # compile now, so that compilation's random draws precede seeding and resuming
        objective.loss_and_backward(*batch)
    optimizer = _optimizer(settings, parameters)
    batch_size = len(batch[0]) * world
    state = SVIState(
        settings=settings,
        model=model,
        guide=guide,
        objective=objective,
        loss=distributed.data_parallel(_process_loss(objective, world), modules, device),
        store_params=store_params,
        optimizer=optimizer,
        scheduler=_scheduler(settings, optimizer, settings.epochs * (num_data // batch_size)),
        device=device,
        max_plate_nesting=plates.max_plate_nesting,
        num_data=num_data,
        batch_size=batch_size,
    )
    pyro.set_rng_seed(distributed.rank_seed(settings.seed))
    return state


def svi_step(state: SVIState, batch: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[SVIState, torch.Tensor]:
    """One gradient step on ``batch`` (this process's part of a global batch, on the state's device).

    Returns the state (updated in place: parameters, optimizer, schedule, position) and the batch's loss, a
    detached scalar tensor on the device (not read back, so that steps do not wait for the device). The loss
    is -ELBO estimating the data set's (the IWAE bound: the batch's own); ``fit`` checks it for NaN.
    """
    batch = batch if isinstance(batch, tuple) else (batch,)
    settings = state.settings
    if settings.kl_warmup:  # a pure function of the step, so resuming reproduces it
        warmup_steps = settings.kl_warmup * state.batches_per_epoch
        state.objective.set_kl_weight(min(1.0, (state.step + 1) / warmup_steps))
    state.optimizer.zero_grad(set_to_none=True)
    # Parameters stay fp32: autocast runs matrix products in bf16 and the heads return fp32 densities.
    with torch.autocast(state.device.type, dtype=torch.bfloat16, enabled=settings.precision == "bf16"):
        loss = state.loss(*batch)
    loss.backward()
    distributed.average_gradients(state.store_params.values())
    state.optimizer.step()
    if settings.schedule == "cosine":
        state.scheduler.step()
    loss = loss.detach()
    state.recent_losses.append(loss)
    state.step += 1
    state.batch += 1
    if state.batch == state.batches_per_epoch:
        state.epoch, state.batch = state.epoch + 1, 0
        if settings.schedule == "exponential":
            state.scheduler.step()
    return state, loss


def _process_loss(objective: Objective, world: int) -> Callable[..., torch.Tensor]:
    """This process's differentiable loss: its mean over processes is the loss of the global batch."""

    def loss(*batch: torch.Tensor) -> torch.Tensor:
        # A rescaled loss already estimates the whole data set's; an unscaled one is its shard's own, and the
        # batch's is the sum over processes: world size times their mean.
        value = objective(*batch)
        return value if objective.rescaled else value * world

    return loss


def _check_warmup_with_enumeration(objective: Objective, batch: tuple[torch.Tensor, ...], epochs: int) -> None:
    """TraceEnum_ELBO needs every site that depends on an enumerated one to share its scale; a KL weight below 1
    breaks that for a guide's latent whose model density depends on one. One pass at weight 1/2 finds out."""
    objective.set_kl_weight(0.5)
    try:
        with torch.no_grad():
            objective(*batch)
    except ValueError as error:
        if "common poutine.scale" not in str(error):
            raise
        raise SpecError(
            f"inference.kl_warmup = {epochs}: a latent site of the guide depends on an enumerated site, and"
            " TraceEnum_ELBO cannot weight its KL apart from the likelihood it is summed with (use kl_warmup = 0)"
        ) from None
    finally:
        objective.set_kl_weight(1.0)


def _optimizer(settings: SVISettings, parameters: list[torch.Tensor]) -> torch.optim.Optimizer:
    if settings.optimizer == "clipped_adam":
        return ClippedAdam(parameters, lr=settings.lr, clip_norm=settings.clip_norm)
    # The fused kernel updates all parameters in one call: about 3x faster than the default on a CPU.
    fused = all(p.dtype in (torch.float32, torch.float64) and p.device.type in ("cpu", "cuda") for p in parameters)
    return torch.optim.Adam(parameters, lr=settings.lr, fused=fused)


def _scheduler(settings: SVISettings, optimizer, total_steps: int):
    if settings.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    if settings.schedule == "exponential":
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=settings.lr_decay)
    return None
