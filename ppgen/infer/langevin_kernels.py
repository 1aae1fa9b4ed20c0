"""Langevin MCMC for Pyro: ULA, MALA and SGLD as ``MCMCKernel``s that ``pyro.infer.MCMC`` drives like HMC.

The maths is stateless: ``ula_step`` is the Langevin proposal (``langevin_step``), ``mala_step`` is the same proposal
followed by the Metropolis-Hastings rule (``mala_log_accept_ratio``); each maps a ``LangevinState`` and explicit noise
to a new state and a ``LangevinInfo``. The kernels add what Pyro's protocol needs (the unconstrained potential of a
model, its transforms, the chain's current state) and a visible step-size rule: a fixed step (ULA), dual averaging
during warm-up (MALA), a decreasing schedule (SGLD). Per-step diagnostics are in ``kernel.last_info`` after each
``sample``; ``LangevinInfoRecorder`` is a ``hook_fn`` that collects them as ArviZ ``sample_stats``. Randomness comes
from torch's global generator, so ``pyro.set_rng_seed`` makes a run reproducible.

A step reads nothing back from the chain's device (no ``.item()``, no Python branch on a tensor): accept/reject is a
``torch.where``, the diagnostics are 0-d tensors, and the step-size adaptation runs on tensors. The host reads the
summaries only in ``setup``, every ``log_every`` steps, at the end of warm-up and in ``diagnostics()``: then
``logging()`` (which Pyro's ``MCMC`` calls after every step) is refreshed, and ULA and SGLD raise if the log density
became non-finite, naming the first such step (so a diverged chain runs on for less than ``log_every`` steps).

    recorder = LangevinInfoRecorder()
    mcmc = pyro.infer.MCMC(MALA(model), num_samples=1000, warmup_steps=500, hook_fn=recorder)
    mcmc.run(x)
    draws, sample_stats = mcmc.get_samples(), recorder.sample_stats()
"""

import math
import numbers
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger, init_to_uniform
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.infer.mcmc.util import initialize_model
from pyro.ops.dual_averaging import DualAveraging
from pyro.ops.integrator import potential_grad
from pyro.poutine.util import prune_subsample_sites, site_is_subsample
from torch.distributions import biject_to

from ppgen.errors import PpgenError, SpecError, TrainingError
from ppgen.infer.langevin import langevin_step, mala_log_accept_ratio, metropolis_accept_prob

__all__ = [
    "LangevinState",
    "LangevinInfo",
    "init_state",
    "ula_step",
    "mala_step",
    "DualAveragingStepSize",
    "PolynomialDecay",
    "ULA",
    "MALA",
    "SGLD",
    "LangevinInfoRecorder",
    "stack_infos",
]

LogDensityFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""position [D] -> (log p [] up to a constant, grad log p [D])."""


class LangevinState(NamedTuple):
    """position [D] (unconstrained, all sites flattened), log_density [] (log p up to a constant), score [D]."""

    position: torch.Tensor
    log_density: torch.Tensor
    score: torch.Tensor


class LangevinInfo(NamedTuple):
    """One step's diagnostics, each a 0-d tensor on the chain's device (read back only when needed, e.g. by
    ``LangevinInfoRecorder.sample_stats``), in the chain's dtype except ``accepted`` (bool).

    accept_prob: MALA's Metropolis-Hastings acceptance probability; for ULA the probability MALA *would* have
        accepted this move with (a free measure of the discretization error); NaN for SGLD, whose log densities are
        minibatch estimates. accepted: whether the chain moved (always for ULA and SGLD). step_size: the step used.
    log_density: log p of the returned state in unconstrained space, Jacobian included (ArviZ's ``lp``).
    """

    accept_prob: torch.Tensor
    accepted: torch.Tensor
    step_size: torch.Tensor
    log_density: torch.Tensor


def init_state(position: torch.Tensor, log_density_fn: LogDensityFn) -> LangevinState:
    """The state at ``position`` [D]."""
    log_density, score = log_density_fn(position)
    return LangevinState(position, log_density, score)


def ula_step(
    state: LangevinState, log_density_fn: LogDensityFn, step_size: torch.Tensor | float, noise: torch.Tensor
) -> tuple[LangevinState, LangevinInfo]:
    """One unadjusted Langevin step x' = x + h grad log p(x) + sqrt(2 h) noise, always accepted.

    Its stationary law is p only as h -> 0 (see ``ula_gaussian_stationary_covariance`` for the Gaussian case;
    Roberts & Tweedie 1996, doi:10.2307/3318418; Durmus & Moulines, arXiv:1507.05021).

    Args:
        state: the current state. log_density_fn: position [D] -> (log p [], score [D]).
        step_size: h > 0, a 0-d tensor on the state's device (a number is copied there, which waits for the device).
        noise: [D] standard normal draws.
    """
    step_size = torch.as_tensor(step_size, dtype=state.position.dtype, device=state.position.device)
    position = langevin_step(state.position, state.score, step_size, noise)
    proposal = init_state(position, log_density_fn)
    accept_prob = metropolis_accept_prob(mala_log_accept_ratio(*state, *proposal, step_size))
    accepted = torch.ones_like(accept_prob, dtype=torch.bool)
    return proposal, LangevinInfo(accept_prob, accepted, step_size, proposal.log_density)


def mala_step(
    state: LangevinState,
    log_density_fn: LogDensityFn,
    step_size: torch.Tensor | float,
    noise: torch.Tensor,
    uniform: torch.Tensor | float,
) -> tuple[LangevinState, LangevinInfo]:
    """One Metropolis-adjusted Langevin step: ``ula_step``'s proposal, accepted when uniform < its MH probability,
    so that p is exactly invariant (Roberts & Tweedie 1996, doi:10.2307/3318418). The choice is a ``torch.where``,
    so the step reads nothing back from the device.

    Args:
        as ``ula_step``, and uniform: a Uniform(0, 1) draw, [] (a tensor on the state's device, or a number).
    """
    proposal, info = ula_step(state, log_density_fn, step_size, noise)
    accepted = uniform < info.accept_prob
    new_state = LangevinState(*(torch.where(accepted, new, old) for new, old in zip(proposal, state)))
    return new_state, info._replace(accepted=accepted, log_density=new_state.log_density)


class DualAveragingStepSize:
    """Warm-up adaptation of the step size: dual averaging of log h so that the mean acceptance probability reaches
    ``target_accept_prob`` (Hoffman & Gelman 2014, arXiv:1111.4246, section 3.2; Pyro's ``DualAveraging`` does the
    averaging, shrunk towards log(10 h0)). Call ``update`` after each warm-up step and use ``final_step_size``
    (the averaged iterate) for sampling. The averages are 0-d tensors on the acceptance probabilities' device, so
    adapting reads nothing back from it.
    """

    def __init__(self, initial_step_size: float, target_accept_prob: float):
        self.target_accept_prob = target_accept_prob
        self.step_size: torch.Tensor | float = initial_step_size
        self._averaging = DualAveraging(prox_center=math.log(10 * initial_step_size))
        self._num_updates = 0

    def update(self, accept_prob: torch.Tensor | float) -> torch.Tensor:
        """Feed one step's acceptance probability [] (NaN counts as 0); returns the step size [] for the next step."""
        accept_prob = torch.nan_to_num(torch.as_tensor(accept_prob), nan=0.0)
        self._averaging.step(self.target_accept_prob - accept_prob)
        self._num_updates += 1
        self.step_size = self._averaging.get_state()[0].exp()
        return self.step_size

    def final_step_size(self) -> torch.Tensor | float:
        """exp(average of the log step sizes) []: the step size to sample with once warm-up ends."""
        return self._averaging.get_state()[1].exp() if self._num_updates else self.step_size


@dataclass(frozen=True)
class PolynomialDecay:
    """The step-size schedule h_t = a (b + t)^(-gamma) of SGLD (Welling & Teh 2011, ICML, section 3).

    gamma in (0.5, 1] makes sum h_t infinite and sum h_t^2 finite, the Robbins-Monro conditions under which the
    chain's bias vanishes; gamma = 0 is a constant step (bias of order a). t counts steps from 0, warm-up included.
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


def _positive(kernel: str, name: str, value: float) -> float:
    if not (isinstance(value, numbers.Real) and value > 0 and math.isfinite(value)):
        raise SpecError(f"{kernel}: {name} must be a positive number, got {value!r}")
    return float(value)


def _positive_int(kernel: str, name: str, value: int) -> int:
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0):
        raise SpecError(f"{kernel}: {name} must be a positive integer, got {value!r}")
    return int(value)


_NO_STEP = 2**62  # the first non-finite step while there is none


class _LangevinKernel(MCMCKernel):
    """Pyro's MCMCKernel protocol around a stateless Langevin step (abstract: subclasses give the step and the
    step-size rule). The chain moves in unconstrained space; ``MCMC`` maps draws back through ``transforms``.

    ``sample`` reads nothing back from the chain's device; in ``setup``, every ``log_every`` steps, at the end of
    warm-up and in ``diagnostics`` the summaries are read once (``_refresh``)."""

    def __init__(self, model, potential_fn, transforms, max_plate_nesting, init_strategy, log_every):
        name = type(self).__name__
        if (model is None) == (potential_fn is None):
            raise SpecError(f"{name}: give exactly one of model= or potential_fn=")
        self.model = model
        self.potential_fn = potential_fn
        self.transforms = {} if transforms is None and potential_fn is not None else transforms
        self.log_every = _positive_int(name, "log_every", log_every)
        self._max_plate_nesting = max_plate_nesting
        self._init_strategy = init_strategy
        self._initial_params = None
        self.last_info: LangevinInfo | None = None
        self._logged: OrderedDict = OrderedDict()
        self._reset()

    # Subclasses: the step size [] for the next step, one transition, and what to learn from its info.
    def _step_size(self) -> torch.Tensor:
        raise NotImplementedError

    def _transition(self, state: LangevinState, step_size: torch.Tensor) -> tuple[LangevinState, LangevinInfo]:
        raise NotImplementedError

    def _adapt(self, info: LangevinInfo, warmup: bool) -> None:
        """Called after every step; a fixed step size learns nothing."""

    def _initialize_model(self, args, kwargs) -> None:
        try:
            params, self.potential_fn, self.transforms, _ = initialize_model(
                self.model,
                args,
                kwargs,
                transforms=self.transforms,
                max_plate_nesting=self._max_plate_nesting,
                init_strategy=self._init_strategy,
                initial_params=self._initial_params,
            )
        except NotImplementedError as error:
            if "subsample" not in str(error):
                raise
            raise SpecError(
                f"{type(self).__name__} needs the full-data log density but the model subsamples a plate;"
                " use SGLD for minibatches"
            ) from None
        self._initial_params = params

    def _reset(self) -> None:
        self._state: LangevinState | None = None
        self._t = 0
        self._warmup_steps = 0
        # Running summaries, 0-d tensors on the chain's device once it starts (``_start``).
        self._num_accepted: torch.Tensor | None = None
        self._mean_accept_prob: torch.Tensor | None = None
        self._first_nonfinite: torch.Tensor | None = None

    def _start(self, position: torch.Tensor) -> None:
        """The chain's state at ``position`` [D], and its summaries on that device."""
        self._state = init_state(position, self._log_density_and_score)
        self._num_accepted = torch.zeros((), dtype=torch.int64, device=position.device)
        self._mean_accept_prob = self._full(float("nan"))
        self._first_nonfinite = torch.full((), _NO_STEP, dtype=torch.int64, device=position.device)

    def _full(self, value: float) -> torch.Tensor:
        """A 0-d tensor of the chain's dtype on its device, filled there (no copy from the host, so no wait)."""
        position = self._state.position
        return torch.full((), value, dtype=position.dtype, device=position.device)

    @property
    def initial_params(self):
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params):
        self._initial_params = params

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        self._reset()
        self._warmup_steps = warmup_steps
        if self.model is not None:
            self._initialize_model(args, kwargs)
        if not self._initial_params:
            name = type(self).__name__
            raise SpecError(
                f"{name}: the model has no continuous latent sites to sample"
                if self.model is not None
                else f"{name} with potential_fn= needs initial_params: MCMC(kernel, ..., initial_params=...)"
            )
        self._names = sorted(self._initial_params)
        self._shapes = [self._initial_params[name].shape for name in self._names]
        self._start(self._pack(self._initial_params))
        if not torch.isfinite(self._state.log_density):
            raise PpgenError(f"{type(self).__name__}: the log density is not finite at the initial parameters")
        self._refresh()

    def cleanup(self) -> None:
        """Forget the chain, and model-derived initial params, so that the next chain starts afresh (as HMC does)."""
        self._reset()
        if self.model is not None:
            self._initial_params = None

    def sample(self, params: dict) -> dict:
        if self._state is None:  # sampling resumed without setup, e.g. after cleanup
            self._start(self._pack(params))
        try:
            self._state, info = self._transition(self._state, self._step_size())
        except Exception as error:
            # A model that validates its arguments fails on the NaN that follows a non-finite log density.
            self._raise_if_nonfinite(cause=error)
            raise
        self.last_info = info
        self._t += 1
        warmup = self._t <= self._warmup_steps
        phase_step = self._t if warmup else self._t - self._warmup_steps
        if phase_step == 1:
            self._mean_accept_prob = torch.zeros_like(info.accept_prob)
        self._mean_accept_prob.lerp_(info.accept_prob, 1 / phase_step)  # the running mean over the phase
        if not warmup:
            self._num_accepted.add_(info.accepted)
        self._adapt(info, warmup)
        if self._t % self.log_every == 0 or self._t == self._warmup_steps:
            self._refresh()
        return self._unpack(self._state.position)

    def _note_nonfinite(self, log_density: torch.Tensor) -> None:
        """Keep the first step (1-based, this one is ``_t + 1``) whose log density is not finite, on the device."""
        step = torch.where(torch.isfinite(log_density), _NO_STEP, self._t + 1)
        self._first_nonfinite = torch.minimum(self._first_nonfinite, step)

    def _raise_if_nonfinite(self, cause: Exception | None = None) -> None:
        """Raise ``TrainingError`` naming the first non-finite step, if there was one (reads it from the device)."""
        step = _NO_STEP if self._first_nonfinite is None else int(self._first_nonfinite)
        if step != _NO_STEP:
            raise TrainingError(
                f"{type(self).__name__}: the log density became non-finite at step {step};"
                f" step size {self._step_size_at(step):.3g} is too large"
            ) from cause

    def _step_size_at(self, step: int) -> float:
        """The step size of step ``step`` (1-based), for error messages."""
        raise NotImplementedError

    def _refresh(self) -> None:
        """Read the summaries back from the device (once per ``log_every`` steps): check that the log density stayed
        finite, and update what ``logging`` shows."""
        self._raise_if_nonfinite()
        step_size, mean_accept_prob = torch.stack([self._step_size(), self._mean_accept_prob]).tolist()
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
            "acceptance rate": int(self._num_accepted) / num_samples,
            "mean accept prob": float(self._mean_accept_prob),
            "step size": float(self._step_size()),
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


class ULA(_LangevinKernel):
    """The unadjusted Langevin algorithm: ``ula_step`` with a fixed step size, no accept/reject.

    Biased by O(step_size): on a Gaussian target the mean is exact and each variance s grows to
    s / (1 - h / (2 s)) (``ula_gaussian_stationary_covariance``), which makes a large step a deliberately wrong
    sampler with a known error. The step is fixed rather than adapted: tuning it to MALA's 0.574 acceptance picks
    h of the order of the target's variance, where the bias is large (on the 1-D Gaussian of the tests MALA adapts
    to h ~ 1.8 s, where ULA's variance is ten times too large). To pick h, run MALA and take a small fraction of
    its adapted ``step_size``. ``last_info.accept_prob`` is the acceptance probability MALA would have had, a free
    measure of the discretization error. A non-finite log density raises ``TrainingError`` naming its first step,
    at most ``log_every`` steps later.

    Args:
        model: a Pyro model (its latent sites are sampled in unconstrained space; args are given to ``MCMC.run``).
        potential_fn: or a function of a dict of unconstrained tensors returning -log p; then ``MCMC`` needs
            ``initial_params``.
        step_size: h > 0, in unconstrained space.
        transforms, max_plate_nesting, init_strategy: as for ``pyro.infer.HMC``.
        log_every: read the summaries back from the device (for ``logging`` and the finiteness check) every this
            many steps.
    Reference: Roberts & Tweedie 1996, doi:10.2307/3318418; Durmus & Moulines, arXiv:1507.05021.
    """

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        step_size: float = 0.01,
        transforms: dict | None = None,
        max_plate_nesting: int | None = None,
        init_strategy: Callable = init_to_uniform,
        log_every: int = 100,
    ):
        self.step_size = _positive("ULA", "step_size", step_size)
        super().__init__(model, potential_fn, transforms, max_plate_nesting, init_strategy, log_every)

    def _step_size(self) -> torch.Tensor:
        return self._full(self.step_size)

    def _step_size_at(self, step: int) -> float:
        return self.step_size

    def _transition(self, state, step_size):
        state, info = ula_step(state, self._log_density_and_score, step_size, torch.randn_like(state.position))
        self._note_nonfinite(state.log_density)
        return state, info


class MALA(_LangevinKernel):
    """The Metropolis-adjusted Langevin algorithm: ``mala_step``, exact for any step size, with the step size adapted
    during warm-up by dual averaging towards ``target_accept_prob`` (``DualAveragingStepSize``) and then fixed.

    0.574 is the asymptotically optimal acceptance rate of MALA (Roberts & Rosenthal 1998, JRSS B 60(1), 255-268).
    No mass matrix: all coordinates share one step size in unconstrained space. ``step_size`` is the step size of
    the next step: the initial one, then the adapted one (read back from the chain's device when asked for).

    Args:
        model, potential_fn, transforms, max_plate_nesting, init_strategy, log_every: as for ``ULA``.
        step_size: the initial step size (kept throughout when ``adapt_step_size`` is False).
        adapt_step_size: adapt during warm-up. target_accept_prob: the acceptance rate aimed at.
    Reference: Roberts & Tweedie 1996, doi:10.2307/3318418; Hoffman & Gelman 2014, arXiv:1111.4246.
    """

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        step_size: float = 1.0,
        adapt_step_size: bool = True,
        target_accept_prob: float = 0.574,
        transforms: dict | None = None,
        max_plate_nesting: int | None = None,
        init_strategy: Callable = init_to_uniform,
        log_every: int = 100,
    ):
        self.initial_step_size = _positive("MALA", "step_size", step_size)
        if not 0 < target_accept_prob < 1:
            raise SpecError(f"MALA: target_accept_prob must be in (0, 1), got {target_accept_prob}")
        self.adapt_step_size = adapt_step_size
        self.target_accept_prob = target_accept_prob
        self._current_step_size: torch.Tensor | None = None  # on the chain's device, once it starts
        self._adaptation: DualAveragingStepSize | None = None
        super().__init__(model, potential_fn, transforms, max_plate_nesting, init_strategy, log_every)

    @property
    def step_size(self) -> float:
        current = self._current_step_size
        return self.initial_step_size if current is None else float(current)

    def setup(self, warmup_steps: int, *args, **kwargs) -> None:
        self._current_step_size = None
        self._adaptation = None
        super().setup(warmup_steps, *args, **kwargs)
        if self.adapt_step_size and warmup_steps > 0:
            self._adaptation = DualAveragingStepSize(self.initial_step_size, self.target_accept_prob)

    def _step_size(self) -> torch.Tensor:
        if self._current_step_size is None:
            self._current_step_size = self._full(self.initial_step_size)
        return self._current_step_size

    def _transition(self, state, step_size):
        # The noise, then the uniform: the order of the draws from torch's global generator.
        noise = torch.randn_like(state.position)
        uniform = torch.rand((), dtype=state.position.dtype, device=state.position.device)
        return mala_step(state, self._log_density_and_score, step_size, noise, uniform)

    def _adapt(self, info, warmup):
        if not (warmup and self._adaptation is not None):
            return
        self._current_step_size = self._adaptation.update(info.accept_prob)
        if self._t == self._warmup_steps:
            self._current_step_size = self._adaptation.final_step_size()


class SGLD(_LangevinKernel):
    """Stochastic-gradient Langevin dynamics: ``ula_step`` with a minibatch gradient and a decreasing step size
    (Welling & Teh 2011, ICML, "Bayesian learning via stochastic gradient Langevin dynamics").

    The model marks its data plate ``pyro.plate("data", N, subsample_size=B)``; Pyro then scales the batch's
    log-likelihood by N / B, so each evaluation of the log joint, and its gradient, is an unbiased estimate of the
    full-data one, from a fresh minibatch every step. No accept/reject, so the draws are biased by O(step size),
    from the discretization and from the gradient noise (Vollmer, Zygalakis & Teh 2016, arXiv:1501.00438); with a
    schedule meeting the Robbins-Monro conditions the bias vanishes as t grows. Warm-up steps are burn-in (the
    schedule runs on through them). Welling & Teh weight draws by their step size; ``LangevinInfoRecorder``
    keeps the step sizes for that. A non-finite log density raises as in ``ULA``.

    Args:
        model: a Pyro model with continuous latent sites (args are given to ``MCMC.run``).
        potential_fn: or a (stochastic) function of a dict of unconstrained tensors returning -log p;
            then ``MCMC`` needs ``initial_params``.
        step_size: a schedule t -> h_t (e.g. ``PolynomialDecay``) or a constant.
        transforms, init_strategy, log_every: as for ``ULA``.
    """

    def __init__(
        self,
        model: Callable | None = None,
        potential_fn: Callable | None = None,
        step_size: Callable[[int], float] | float = 1e-4,
        transforms: dict | None = None,
        init_strategy: Callable = init_to_uniform,
        log_every: int = 100,
    ):
        if callable(step_size):
            self.schedule = step_size
        else:
            constant = _positive("SGLD", "step_size", step_size)
            self.schedule = PolynomialDecay(constant, gamma=0.0)
        super().__init__(model, potential_fn, transforms, None, init_strategy, log_every)

    def _initialize_model(self, args, kwargs) -> None:
        params, self.potential_fn, self.transforms = _stochastic_potential(
            self.model, args, kwargs, self.transforms, self._init_strategy
        )
        self._initial_params = self._initial_params or params

    def _step_size(self) -> torch.Tensor:
        return self._full(self.schedule(self._t))

    def _step_size_at(self, step: int) -> float:
        return self.schedule(step - 1)

    def _transition(self, state, step_size):
        state, info = ula_step(state, self._log_density_and_score, step_size, torch.randn_like(state.position))
        self._note_nonfinite(state.log_density)
        return state, info._replace(accept_prob=torch.full_like(info.accept_prob, float("nan")))


def _stochastic_potential(model: Callable, args: tuple, kwargs: dict, transforms: dict | None, init_strategy):
    """(initial unconstrained params, potential_fn, transforms) of a model that may subsample its plates: each call
    of potential_fn runs the model once, so a subsampling plate draws a new minibatch and scales it by N / B."""
    for name, site in prune_subsample_sites(poutine.trace(model).get_trace(*args, **kwargs)).iter_stochastic_nodes():
        if site["fn"].support.is_discrete:
            raise SpecError(f"SGLD: latent site {name!r} is discrete; Langevin dynamics needs continuous latents")
    trace = prune_subsample_sites(poutine.trace(InitMessenger(init_strategy)(model)).get_trace(*args, **kwargs))
    sites = {name: site for name, site in trace.iter_stochastic_nodes()}
    if transforms is None:
        transforms = {name: biject_to(site["fn"].support).inv for name, site in sites.items()}
    initial_params = {name: transforms[name](site["value"].detach()) for name, site in sites.items()}

    def potential_fn(params: dict) -> torch.Tensor:
        constrained = {name: transforms[name].inv(value) for name, value in params.items()}
        model_trace = poutine.trace(poutine.condition(model, constrained)).get_trace(*args, **kwargs)
        # Without the subsample sites: their log density is 0, made from a host number on every call.
        log_joint = model_trace.log_prob_sum(lambda name, site: not site_is_subsample(site))
        for name, value in params.items():
            log_joint = log_joint - transforms[name].log_abs_det_jacobian(constrained[name], value).sum()
        return -log_joint

    return initial_params, potential_fn, transforms


class LangevinInfoRecorder:
    """A ``hook_fn`` for ``pyro.infer.MCMC`` that keeps ``kernel.last_info`` of every sampling (not warm-up) step.

    ``MCMC(kernel, ..., hook_fn=recorder)``; after ``run``, ``recorder.sample_stats()`` gives arrays
    [num_chains, num_samples] named as ArviZ's ``sample_stats``. Hooks run where the chain runs: chains in worker
    processes (``num_chains > 1`` with enough CPUs) are not seen.
    """

    def __init__(self):
        self.infos: dict[int, list[LangevinInfo]] = {}

    def __call__(self, kernel: MCMCKernel, params: dict, stage: str, i: int) -> None:
        if not stage.startswith("Sample"):
            return
        chain = int(stage[stage.index("[") + 1 : stage.index("]")]) if "[" in stage else 0
        self.infos.setdefault(chain, []).append(kernel.last_info)

    def sample_stats(self) -> dict[str, np.ndarray]:
        """acceptance_rate, step_size, lp (float64) and accepted (bool), each [num_chains, num_samples]."""
        if not self.infos:
            raise PpgenError("no sampling steps were recorded: pass the recorder as MCMC(..., hook_fn=recorder)")
        chains = [stack_infos(self.infos[chain]) for chain in sorted(self.infos)]
        return {key: np.stack([chain[key] for chain in chains]) for key in chains[0]}


def stack_infos(infos: list[LangevinInfo]) -> dict[str, np.ndarray]:
    """One chain's step diagnostics as ArviZ ``sample_stats``: acceptance_rate, step_size, lp (float64) and accepted
    (bool), each [num_steps], with one transfer from the chain's device per statistic."""
    fields = {"acceptance_rate": "accept_prob", "step_size": "step_size", "lp": "log_density", "accepted": "accepted"}
    stats = {key: torch.stack([getattr(info, field) for info in infos]).cpu().numpy() for key, field in fields.items()}
    return {key: value.astype(bool if key == "accepted" else np.float64) for key, value in stats.items()}
