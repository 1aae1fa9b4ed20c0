"""Langevin MCMC for Pyro: ``ULA``, ``MALA`` and ``SGLD``, each a ``LangevinKernel`` (``ppgen.infer.langevin_adapter``)
composing a pure step of ``ppgen.samplers.langevin`` with a step-size rule of ``ppgen.samplers.step_size``:
``ula_step`` with a constant step, ``mala_step`` with dual averaging during warm-up, ``sgld_step`` on minibatches
with a decreasing schedule. ``pyro.infer.MCMC`` drives them like HMC; ``LangevinInfoRecorder``
(``ppgen.infer.langevin_stats``) collects their per-step diagnostics as ArviZ ``sample_stats``.

    recorder = LangevinInfoRecorder()
    mcmc = pyro.infer.MCMC(MALA(model), num_samples=1000, warmup_steps=500, hook_fn=recorder)
    mcmc.run(x)
    draws, sample_stats = mcmc.get_samples(), recorder.sample_stats()
"""

import math
import numbers
from collections.abc import Callable

from pyro.infer.autoguide.initialization import init_to_uniform

from ppgen.errors import SpecError
from ppgen.infer.langevin_adapter import LangevinKernel
from ppgen.infer.langevin_potential import full_data_potential, minibatch_potential
from ppgen.samplers.langevin import draw_langevin_noise, draw_mala_noise, mala_step, sgld_step, ula_step
from ppgen.samplers.step_size import ConstantStepSize, DualAveragingStepSize, ScheduledStepSize

__all__ = ["ULA", "MALA", "SGLD"]


def _positive(kernel: str, name: str, value: float) -> float:
    if not (isinstance(value, numbers.Real) and value > 0 and math.isfinite(value)):
        raise SpecError(f"{kernel}: {name} must be a positive number, got {value!r}")
    return float(value)


def ULA(
    model: Callable | None = None,
    potential_fn: Callable | None = None,
    step_size: float = 0.01,
    transforms: dict | None = None,
    max_plate_nesting: int | None = None,
    init_strategy: Callable = init_to_uniform,
    log_every: int = 100,
) -> LangevinKernel:
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
        model, potential_fn, transforms, max_plate_nesting, init_strategy, log_every: as for ``LangevinKernel``.
        step_size: h > 0, in unconstrained space.
    Reference: Roberts & Tweedie 1996, doi:10.2307/3318418; Durmus & Moulines, arXiv:1507.05021.
    """
    rule = ConstantStepSize(_positive("ULA", "step_size", step_size))
    return LangevinKernel(
        ula_step,
        draw_langevin_noise,
        rule,
        model=model,
        potential_fn=potential_fn,
        potential_from_model=full_data_potential,
        transforms=transforms,
        max_plate_nesting=max_plate_nesting,
        init_strategy=init_strategy,
        log_every=log_every,
        name="ULA",
    )


def MALA(
    model: Callable | None = None,
    potential_fn: Callable | None = None,
    step_size: float = 1.0,
    adapt_step_size: bool = True,
    target_accept_prob: float = 0.574,
    transforms: dict | None = None,
    max_plate_nesting: int | None = None,
    init_strategy: Callable = init_to_uniform,
    log_every: int = 100,
) -> LangevinKernel:
    """The Metropolis-adjusted Langevin algorithm: ``mala_step``, exact for any step size, with the step size adapted
    during warm-up by dual averaging towards ``target_accept_prob`` (``DualAveragingStepSize``) and then fixed.

    0.574 is the asymptotically optimal acceptance rate of MALA (Roberts & Rosenthal 1998, JRSS B 60(1), 255-268).
    No mass matrix: all coordinates share one step size in unconstrained space. The kernel's ``step_size`` is the
    step size of the next step: the initial one, then the adapted one.

    Args:
        model, potential_fn, transforms, max_plate_nesting, init_strategy, log_every: as for ``LangevinKernel``.
        step_size: the initial step size (kept throughout when ``adapt_step_size`` is False).
        adapt_step_size: adapt during warm-up. target_accept_prob: the acceptance rate aimed at.
    Reference: Roberts & Tweedie 1996, doi:10.2307/3318418; Hoffman & Gelman 2014, arXiv:1111.4246.
    """
    step_size = _positive("MALA", "step_size", step_size)
    if not 0 < target_accept_prob < 1:
        raise SpecError(f"MALA: target_accept_prob must be in (0, 1), got {target_accept_prob}")
    rule = DualAveragingStepSize(step_size, target_accept_prob) if adapt_step_size else ConstantStepSize(step_size)
    return LangevinKernel(
        mala_step,
        draw_mala_noise,
        rule,
        model=model,
        potential_fn=potential_fn,
        potential_from_model=full_data_potential,
        transforms=transforms,
        max_plate_nesting=max_plate_nesting,
        init_strategy=init_strategy,
        log_every=log_every,
        name="MALA",
    )


def SGLD(
    model: Callable | None = None,
    potential_fn: Callable | None = None,
    step_size: Callable[[int], float] | float = 1e-4,
    transforms: dict | None = None,
    init_strategy: Callable = init_to_uniform,
    log_every: int = 100,
) -> LangevinKernel:
    """Stochastic-gradient Langevin dynamics: ``sgld_step`` with a minibatch gradient and a decreasing step size
    (Welling & Teh 2011, ICML, "Bayesian learning via stochastic gradient Langevin dynamics").

    The model marks its data plate ``pyro.plate("data", N, subsample_size=B)``; Pyro then scales the batch's
    log-likelihood by N / B, so each evaluation of the log joint, and its gradient, is an unbiased estimate of the
    full-data one, from a fresh minibatch every step (``minibatch_potential``). No accept/reject, so the draws are
    biased by O(step size), from the discretization and from the gradient noise (Vollmer, Zygalakis & Teh 2016,
    arXiv:1501.00438); with a schedule meeting the Robbins-Monro conditions the bias vanishes as t grows. Warm-up
    steps are burn-in (the schedule runs on through them). Welling & Teh weight draws by their step size;
    ``LangevinInfoRecorder`` keeps the step sizes for that. A non-finite log density raises as in ``ULA``.

    Args:
        model, potential_fn, transforms, init_strategy, log_every: as for ``LangevinKernel`` (potential_fn may be
            stochastic).
        step_size: a schedule t -> h_t (e.g. ``PolynomialDecay``), or a constant.
    """
    if callable(step_size):
        rule = ScheduledStepSize(step_size)
    else:
        rule = ConstantStepSize(_positive("SGLD", "step_size", step_size))
    return LangevinKernel(
        sgld_step,
        draw_langevin_noise,
        rule,
        model=model,
        potential_fn=potential_fn,
        potential_from_model=minibatch_potential,
        transforms=transforms,
        init_strategy=init_strategy,
        log_every=log_every,
        name="SGLD",
    )
