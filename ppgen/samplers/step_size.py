"""Step-size rules as pure ``init``/``update`` pairs: a rule is immutable settings; its state (a named tuple whose
``step_size`` is a 0-d tensor on the chain's device) goes in and comes out, one ``update`` after every step,
warm-up included (blackjax's ``adaptation/step_size.py``). Updates read nothing back from the device.

    rule = DualAveragingStepSize(initial_step_size=1.0, target_accept_prob=0.574)
    state = rule.init(position, num_warmup=500)
    for _ in range(num_steps):
        chain, info = mala_step(chain, log_density_fn, state.step_size, *draw_mala_noise(chain.position))
        state = rule.update(state, info.accept_prob)
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ppgen.errors import SpecError

__all__ = [
    "StepSizeState",
    "DualAveragingState",
    "ConstantStepSize",
    "DualAveragingStepSize",
    "PolynomialDecay",
    "ScheduledStepSize",
]


class StepSizeState(NamedTuple):
    """step_size [] for the next step; step: the number of steps taken."""

    step_size: torch.Tensor
    step: int


class DualAveragingState(NamedTuple):
    """step_size [] for the next step; step: the steps taken; num_warmup: the steps to adapt over;
    log_step_size_avg [] and gradient_avg []: the averages of the primal and the dual sequence."""

    step_size: torch.Tensor
    step: int
    num_warmup: int
    log_step_size_avg: torch.Tensor
    gradient_avg: torch.Tensor


def _full(position: torch.Tensor, value: float) -> torch.Tensor:
    """A 0-d tensor of the position's dtype on its device, filled there (no copy from the host, so no wait)."""
    return torch.full((), value, dtype=position.dtype, device=position.device)


@dataclass(frozen=True)
class ConstantStepSize:
    """The same step size h at every step."""

    step_size: float

    def init(self, position: torch.Tensor, num_warmup: int = 0) -> StepSizeState:
        """The state for a chain at ``position`` [D] (its dtype and device)."""
        return StepSizeState(_full(position, self.step_size), 0)

    def update(self, state: StepSizeState, accept_prob: torch.Tensor) -> StepSizeState:
        return state._replace(step=state.step + 1)


@dataclass(frozen=True)
class DualAveragingStepSize:
    """Dual averaging of log h during warm-up, so that the mean acceptance probability reaches ``target_accept_prob``;
    at the end of warm-up the step size becomes exp(average of the log step sizes) and stays there.

    The iterates are shrunk towards log(10 h0), with Pyro's and Stan's constants t0, kappa, gamma.
    Reference: Hoffman & Gelman 2014, arXiv:1111.4246, section 3.2; Nesterov 2009, doi:10.1007/s10107-007-0149-x.
    """

    initial_step_size: float
    target_accept_prob: float
    t0: float = 10.0
    kappa: float = 0.75
    gamma: float = 0.05

    def init(self, position: torch.Tensor, num_warmup: int) -> DualAveragingState:
        """The state for a chain at ``position`` [D] (its dtype and device) that adapts over ``num_warmup`` steps."""
        zero = _full(position, 0.0)
        return DualAveragingState(_full(position, self.initial_step_size), 0, num_warmup, zero, zero)

    def update(self, state: DualAveragingState, accept_prob: torch.Tensor) -> DualAveragingState:
        """After one step with acceptance probability ``accept_prob`` [] (NaN counts as 0)."""
        step = state.step + 1
        if step > state.num_warmup:
            return state._replace(step=step)
        error = self.target_accept_prob - torch.nan_to_num(torch.as_tensor(accept_prob), nan=0.0)
        gradient_avg = (1 - 1 / (step + self.t0)) * state.gradient_avg + error / (step + self.t0)
        log_step_size = math.log(10 * self.initial_step_size) - step**0.5 / self.gamma * gradient_avg
        weight = step**-self.kappa
        log_step_size_avg = (1 - weight) * state.log_step_size_avg + weight * log_step_size
        step_size = (log_step_size_avg if step == state.num_warmup else log_step_size).exp()
        return DualAveragingState(step_size, step, state.num_warmup, log_step_size_avg, gradient_avg)


@dataclass(frozen=True)
class PolynomialDecay:
    """The step-size schedule h_t = a (b + t)^(-gamma) of SGLD, a function of the step t (from 0, warm-up included);
    ``ScheduledStepSize(PolynomialDecay(...))`` is its rule.

    gamma in (0.5, 1] makes sum h_t infinite and sum h_t^2 finite, the Robbins-Monro conditions under which the
    chain's bias vanishes; gamma = 0 is a constant step (bias of order a).
    Reference: Welling & Teh 2011, ICML, section 3.
    """

    a: float
    b: float = 1.0
    gamma: float = 0.55

    def __post_init__(self):
        if not self.a > 0:
            raise SpecError(f"PolynomialDecay: a must be > 0, got {self.a}")
        if not self.b > 0:
            raise SpecError(f"PolynomialDecay: b must be > 0, got {self.b}")
        if not 0 <= self.gamma <= 1:
            raise SpecError(
                f"PolynomialDecay: gamma must be in [0, 1] (the chain stalls for gamma > 1), got {self.gamma}"
            )

    def __call__(self, t: int) -> float:
        return self.a * (self.b + t) ** -self.gamma


@dataclass(frozen=True)
class ScheduledStepSize:
    """The step size ``schedule(t)`` at step t (from 0, warm-up included), e.g. a ``PolynomialDecay``."""

    schedule: Callable[[int], float]

    def init(self, position: torch.Tensor, num_warmup: int = 0) -> StepSizeState:
        """The state for a chain at ``position`` [D] (its dtype and device)."""
        return StepSizeState(_full(position, self.schedule(0)), 0)

    def update(self, state: StepSizeState, accept_prob: torch.Tensor) -> StepSizeState:
        step = state.step + 1
        return StepSizeState(_full(state.step_size, self.schedule(step)), step)
