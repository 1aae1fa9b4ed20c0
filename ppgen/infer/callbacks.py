"""What ``fit`` does around each ``svi_step``: one small callback per concern.

- ``LossLog``: every ``log_every`` steps, read the losses once, stop on NaN/inf (the NaN guard), log the ELBO.
- ``Validation``: after every epoch, the ELBO on held-out data, the best parameters, the patience count.
- ``Checkpointer``: write the state (process 0) unless a loss or parameter is no longer finite.
- ``StopSignals``: Ctrl-C (turned into a flag checked between steps) and the time limit.
- ``Progress``: a progress bar on a terminal, progress lines otherwise (process 0).

Under torchrun every process runs them; figures are reduced over processes, so all of them agree.
"""

import math
import signal
import threading
import time
from pathlib import Path

import torch

from ppgen.errors import TrainingError
from ppgen.infer import distributed
from ppgen.infer.checkpoint import rng_state, save_checkpoint, svi_state_dict
from ppgen.infer.objectives import make_objective
from ppgen.infer.svi import SVIState
from ppgen.progress import reporter

__all__ = ["LossLog", "Validation", "Checkpointer", "StopSignals", "Progress"]


class Progress:
    """The run's progress over its steps (``ppgen.progress.reporter``: a bar on a terminal, a line at a time when
    stderr is not one), shown by process 0; ``progress=None`` chooses by the terminal."""

    def __init__(self, state: SVIState, progress: bool | None):
        self.total, self.epochs = state.settings.epochs * state.batches_per_epoch, state.settings.epochs
        self.reporter = reporter(
            "training",
            self.total,
            "step",
            initial=min(state.step, self.total),
            progress=progress if distributed.is_main() else False,
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.reporter.close()

    def update(self, state: SVIState, epoch: int) -> None:
        """Show the position, ``epoch`` (1-based) and the last logged figures."""
        fields = {"epoch": f"{epoch}/{self.epochs}"}
        if state.train_elbo:
            fields["elbo"] = f"{state.train_elbo[-1][1]:.3f}"
        if state.validation_elbo:
            fields["val"] = f"{state.validation_elbo[-1][1]:.3f}"
        self.reporter.update(min(state.step, self.total), **fields)


class LossLog:
    """Check the losses since the last log for NaN/inf (one host read per interval) and log their mean ELBO
    per example. Every process gets the same mean over processes, so a non-finite loss anywhere stops them all."""

    def __init__(self, state: SVIState, checkpoint: str | Path | None, progress: Progress):
        self.checkpoint, self.progress = checkpoint, progress
        # The per-example figure: a rescaled loss estimates the data set's, an IWAE loss is the batch's.
        self.per_example = state.num_data if state.objective.rescaled else state.batch_size

    def __call__(self, state: SVIState) -> None:
        if not state.recent_losses:
            return
        epoch = state.epoch if state.batch == 0 else state.epoch + 1  # the last step's, from 1
        losses = distributed.all_reduce_mean(torch.stack(state.recent_losses)).tolist()
        state.recent_losses.clear()
        for offset, loss in enumerate(losses):
            if not math.isfinite(loss):
                step = state.step - len(losses) + offset + 1
                written = self.checkpoint is not None and Path(self.checkpoint).is_file()
                kept = f"the last good checkpoint is {self.checkpoint}" if written else "no checkpoint was written"
                raise TrainingError(
                    f"the loss is {loss} at step {step} (epoch {(step - 1) // state.batches_per_epoch + 1});"
                    f" training stopped and {kept}"
                    " (try a lower learning rate or optimizer = 'clipped_adam')"
                )
        state.train_elbo.append((state.step, -sum(losses) / len(losses) / self.per_example))
        self.progress.update(state, epoch)


class Validation:
    """After an epoch, the training objective's estimator (the ELBO with ``validation_particles``, or the IWAE
    bound with its K) on held-out data, per example, with the modules in ``eval()`` mode. It records the best
    epoch's parameters and counts the epochs since, which ``fit`` compares with ``patience``."""

    def __init__(self, state: SVIState, data: tuple[torch.Tensor, ...], progress: Progress):
        settings = state.settings
        self.objective = make_objective(
            state.model,
            state.guide,
            state.modules,
            elbo=settings.elbo,
            max_plate_nesting=state.max_plate_nesting,
            num_particles=settings.num_particles if settings.elbo == "iwae" else settings.validation_particles,
            num_data=len(data[0]),
            gradients=False,
        )
        self.data = tuple(t[distributed.shard(len(data[0]))] for t in data)  # the sums are added up
        self.progress = progress

    def __call__(self, state: SVIState) -> None:
        modes = [module.training for module in state.modules]
        for module in state.modules:
            module.eval()  # e.g. a diffusion model scores every step, not a sample of them
        total = self.objective.loss_sum(self.data, state.batch_size)
        total = distributed.all_reduce_sum(total).item()
        value = -total / self.objective.num_data
        for module, mode in zip(state.modules, modes):
            module.train(mode)
        state.validation_elbo.append((state.step, value))
        if state.best is None or value > state.best["elbo"]:
            state.best = {"elbo": value, "step": state.step, "parameters": state.parameters(copy=True)}
            state.epochs_since_best = 0
        elif state.epoch > state.settings.kl_warmup:  # patience starts once the objective is the ELBO
            state.epochs_since_best += 1
        self.progress.update(state, state.epoch)  # the epoch that just ended


class Checkpointer:
    """Writes the training state to ``path`` (process 0), unless a non-finite loss or parameter in any process
    means it is no longer a good one. Every process takes part: each one's random state goes into the file."""

    def __init__(self, path: str | Path):
        self.path = path

    def __call__(self, state: SVIState) -> None:
        finite = not state.recent_losses or bool(torch.isfinite(torch.stack(state.recent_losses)).all())
        finite = finite and all(bool(torch.isfinite(p).all()) for p in state.optimizer.param_groups[0]["params"])
        (broken,) = distributed.any_rank([not finite])
        rng = distributed.all_gather_object(rng_state(state.device))
        if not broken and distributed.is_main():
            save_checkpoint(svi_state_dict(state, rng), self.path)


class StopSignals:
    """Ctrl-C and the time limit, as flags checked between steps. The first Ctrl-C sets a flag (a second one
    interrupts at once); several processes agree on the flags at log steps only, so that all stop after the
    same step without a message between them every step."""

    def __init__(self, state: SVIState):
        self.time_limit, self.log_every = state.settings.time_limit, state.settings.log_every
        self.started = time.perf_counter()
        self.pressed: list[bool] = []
        self.installed, self.previous = False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # only it may handle signals
            self.previous, self.installed = signal.signal(signal.SIGINT, self._handle), True
        return self

    def __exit__(self, *exc):
        if self.installed:
            signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame):
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed.append(True)

    def __call__(self, state: SVIState) -> tuple[bool, bool]:
        """(Ctrl-C was pressed, the time limit has passed)."""
        if distributed.world_size() > 1 and state.step % self.log_every:
            return False, False
        out_of_time = self.time_limit is not None and time.perf_counter() - self.started > self.time_limit
        interrupt, out_of_time = distributed.any_rank([bool(self.pressed), out_of_time])
        return interrupt, out_of_time
