"""``LangevinKernel``: Pyro's ``MCMCKernel`` protocol around a pure Langevin step (``ppgen.samplers.langevin``) and a
step-size rule (``ppgen.samplers.step_size``), so that ``pyro.infer.MCMC`` drives any such pair like HMC.

The kernel adds what Pyro's protocol needs: the unconstrained potential of a model, its transforms and the chain's
current state. Randomness comes from torch's default generator, so ``pyro.set_rng_seed`` makes a run reproducible.
Per-step diagnostics are in ``kernel.last_info`` after each ``sample``.

A step reads nothing back from the chain's device: the running summaries are 0-d tensors there
(``ChainSummary``), read only in ``setup``, every ``log_every`` steps, at the end of warm-up and in
``diagnostics()``; then ``logging()`` (which Pyro's ``MCMC`` calls after every step) is refreshed, and a non-finite
log density raises, naming its first step (so a diverged chain runs on for less than ``log_every`` steps).
"""

import math
import numbers
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import torch
from pyro.infer.autoguide.initialization import init_to_uniform
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.ops.integrator import potential_grad

from ppgen.errors import PpgenError, SpecError, TrainingError
from ppgen.infer.langevin_potential import PotentialFromModel, full_data_potential
from ppgen.samplers.langevin import LangevinInfo, LangevinState, init_state

__all__ = ["LangevinKernel", "ChainSummary"]

_NO_STEP = 2**62  # the first non-finite step while there is none


class ChainSummary(NamedTuple):
    """A chain's running summaries, 0-d tensors on its device. mean_accept_prob: the mean acceptance probability
    over the current phase (warm-up or sampling); num_accepted: the sampling steps accepted; first_nonfinite: the
    first step (1-based) whose log density was not finite, else 2^62; first_nonfinite_step_size: its step size."""

    mean_accept_prob: torch.Tensor
    num_accepted: torch.Tensor
    first_nonfinite: torch.Tensor
    first_nonfinite_step_size: torch.Tensor


def _start_summary(position: torch.Tensor) -> ChainSummary:
    def full(value, dtype):
        return torch.full((), value, dtype=dtype, device=position.device)

    nan = full(float("nan"), position.dtype)
    return ChainSummary(nan, full(0, torch.int64), full(_NO_STEP, torch.int64), nan)


def _update_summary(summary: ChainSummary, info: LangevinInfo, step: int, phase_step: int, warmup: bool):
    """The summary after step ``step`` (1-based), the ``phase_step``-th of its phase."""
    previous_mean = torch.zeros_like(info.accept_prob) if phase_step == 1 else summary.mean_accept_prob
    num_accepted = summary.num_accepted if warmup else summary.num_accepted + info.accepted
    first = torch.isfinite(info.log_density).logical_not() & (summary.first_nonfinite == _NO_STEP)
    return ChainSummary(
        torch.lerp(previous_mean, info.accept_prob, 1 / phase_step),
        num_accepted,
        torch.where(first, step, summary.first_nonfinite),
        torch.where(first, info.step_size, summary.first_nonfinite_step_size),
    )


def _positive_int(kernel: str, name: str, value: int) -> int:
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0):
        raise SpecError(f"{kernel}: {name} must be a positive integer, got {value!r}")
    return int(value)


class LangevinKernel(MCMCKernel):
    """Pyro's ``MCMCKernel`` protocol around a pure Langevin step and a step-size rule. The chain moves in
    unconstrained space (all sites flattened into one position [D]); ``MCMC`` maps draws back through ``transforms``.

    Args:
        step: (state, log_density_fn, step_size, *randomness) -> (state, info), e.g. ``mala_step``.
        draw: position [D] -> the randomness ``step`` takes, e.g. ``draw_mala_noise``.
        step_size: a rule with ``init(position, num_warmup)`` and ``update(state, accept_prob)``.
        model: a Pyro model (args are given to ``MCMC.run``); or potential_fn: a function of a dict of unconstrained
            tensors returning -log p, when ``MCMC`` needs ``initial_params``.
        potential_from_model: how a model becomes a potential (``full_data_potential`` or ``minibatch_potential``).
        transforms, max_plate_nesting, init_strategy: as for ``pyro.infer.HMC``.
        log_every: read the summaries back from the device (for ``logging`` and the finiteness check) every this
            many steps.
        name: the kernel's name in messages.
    """

    def __init__(
        self,
        step: Callable[..., tuple[LangevinState, LangevinInfo]],
        draw: Callable[[torch.Tensor], tuple],
        step_size,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        potential_from_model: PotentialFromModel = full_data_potential,
        transforms: dict | None = None,
        max_plate_nesting: int | None = None,
        init_strategy: Callable = init_to_uniform,
        log_every: int = 100,
        name: str = "LangevinKernel",
    ):
        if (model is None) == (potential_fn is None):
            raise SpecError(f"{name}: give exactly one of model= or potential_fn=")
        self.step, self.draw, self.step_size_rule, self.name = step, draw, step_size, name
        self.model, self.potential_fn = model, potential_fn
        self.potential_from_model = potential_from_model
        self.transforms = {} if transforms is None and potential_fn is not None else transforms
        self.log_every = _positive_int(name, "log_every", log_every)
        self._max_plate_nesting = max_plate_nesting
        self._init_strategy = init_strategy
        self._initial_params = None
        self.last_info: LangevinInfo | None = None
        self._logged: OrderedDict = OrderedDict()
        self._step_size_state = None  # kept after the chain ends: ``step_size`` is then the final one
        self._warmup_steps = 0
        self._reset()

    def _reset(self) -> None:
        self._state: LangevinState | None = None
        self._summary: ChainSummary | None = None
        self._t = 0

    def _start(self, position: torch.Tensor) -> None:
        """The chain's state at ``position`` [D], its summaries and its step-size rule's state on that device."""
        self._state = init_state(position, self._log_density_and_score)
        self._summary = _start_summary(position)
        if self._step_size_state is None:  # a chain resumed without setup keeps its step size
            self._step_size_state = self.step_size_rule.init(position, self._warmup_steps)

    @property
    def initial_params(self):
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params):
        self._initial_params = params

    @property
    def step_size(self) -> float:
        """The step size of the next step (the initial one before the chain starts); reads it from the device."""
        state = self._step_size_state or self.step_size_rule.init(torch.zeros(1), self._warmup_steps)
        return float(state.step_size)

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        self._reset()
        self._warmup_steps = warmup_steps
        self._step_size_state = None
        if self.model is not None:
            self._initial_params, self.potential_fn, self.transforms = self.potential_from_model(
                self.model,
                args,
                kwargs,
                self.transforms,
                self._max_plate_nesting,
                self._init_strategy,
                self._initial_params,
                self.name,
            )
        if not self._initial_params:
            raise SpecError(
                f"{self.name}: the model has no continuous latent sites to sample"
                if self.model is not None
                else f"{self.name} with potential_fn= needs initial_params: MCMC(kernel, ..., initial_params=...)"
            )
        self._names = sorted(self._initial_params)
        self._shapes = [self._initial_params[name].shape for name in self._names]
        self._start(self._pack(self._initial_params))
        if not torch.isfinite(self._state.log_density):
            raise PpgenError(f"{self.name}: the log density is not finite at the initial parameters")
        self._refresh()

    def cleanup(self) -> None:
        """Forget the chain, and model-derived initial params, so that the next chain starts afresh (as HMC does)."""
        self._reset()
        if self.model is not None:
            self._initial_params = None

    def sample(self, params: dict) -> dict:
        if self._state is None:  # sampling resumed without setup, e.g. after cleanup
            self._start(self._pack(params))
        randomness = self.draw(self._state.position)
        try:
            state, info = self.step(
                self._state, self._log_density_and_score, self._step_size_state.step_size, *randomness
            )
        except Exception as error:
            # A model that validates its arguments fails on the NaN that follows a non-finite log density.
            self._raise_if_nonfinite(cause=error)
            raise
        self._t += 1
        warmup = self._t <= self._warmup_steps
        phase_step = self._t if warmup else self._t - self._warmup_steps
        self._state, self.last_info = state, info
        self._summary = _update_summary(self._summary, info, self._t, phase_step, warmup)
        self._step_size_state = self.step_size_rule.update(self._step_size_state, info.accept_prob)
        if self._t % self.log_every == 0 or self._t == self._warmup_steps:
            self._refresh()
        return self._unpack(state.position)

    def _raise_if_nonfinite(self, cause: Exception | None = None) -> None:
        """Raise ``TrainingError`` naming the first non-finite step, if there was one (reads it from the device)."""
        step = _NO_STEP if self._summary is None else int(self._summary.first_nonfinite)
        if step != _NO_STEP:
            step_size = float(self._summary.first_nonfinite_step_size)
            raise TrainingError(
                f"{self.name}: the log density became non-finite at step {step}; step size {step_size:.3g} is too large"
            ) from cause

    def _refresh(self) -> None:
        """Read the summaries back from the device (once per ``log_every`` steps): check that the log density stayed
        finite, and update what ``logging`` shows."""
        self._raise_if_nonfinite()
        step_size, mean_accept_prob = torch.stack(
            [self._step_size_state.step_size, self._summary.mean_accept_prob]
        ).tolist()
        items = [("step size", f"{step_size:.2e}")]
        if not math.isnan(mean_accept_prob):
            items.append(("acc. prob", f"{mean_accept_prob:.3f}"))
        self._logged = OrderedDict(items)

    def logging(self) -> OrderedDict:
        """The step size and the phase's mean acceptance probability, as of the last refresh (every ``log_every``
        steps and at the end of warm-up): Pyro's ``MCMC`` calls this after every step."""
        return self._logged

    def diagnostics(self) -> dict:
        """acceptance rate: the fraction of sampling steps accepted; mean accept prob: the mean of
        ``last_info.accept_prob`` over them; step size: the step size at the end. Reads them from the device, and
        raises ``TrainingError`` if the log density became non-finite since the last check."""
        self._refresh()
        num_samples = max(self._t - self._warmup_steps, 1)
        return {
            "acceptance rate": int(self._summary.num_accepted) / num_samples,
            "mean accept prob": float(self._summary.mean_accept_prob),
            "step size": self.step_size,
        }

    def _pack(self, params: dict) -> torch.Tensor:
        return torch.cat([params[name].detach().reshape(-1) for name in self._names])

    def _unpack(self, position: torch.Tensor) -> dict:
        sizes = [shape.numel() for shape in self._shapes]
        pieces = position.split(sizes)
        return {name: piece.reshape(shape).clone() for name, piece, shape in zip(self._names, pieces, self._shapes)}

    def _log_density_and_score(self, position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        grads, potential = potential_grad(self.potential_fn, self._unpack(position))
        return -potential.detach(), -self._pack(grads)
