"""Samplers as explicit state and step, with no dependence on Pyro's inference machinery: the Langevin steps
(``langevin``) and the step-size rules that drive them (``step_size``). ``ppgen.infer.langevin_kernels`` wraps them
for ``pyro.infer.MCMC``; ``ppgen.models.diffusion`` runs them on a score network."""

from ppgen.samplers.langevin import (
    LangevinInfo,
    LangevinState,
    draw_langevin_noise,
    draw_mala_noise,
    init_state,
    mala_step,
    sgld_step,
    ula_step,
)
from ppgen.samplers.step_size import ConstantStepSize, DualAveragingStepSize, PolynomialDecay, ScheduledStepSize

__all__ = [
    "LangevinState",
    "LangevinInfo",
    "init_state",
    "ula_step",
    "mala_step",
    "sgld_step",
    "draw_langevin_noise",
    "draw_mala_noise",
    "ConstantStepSize",
    "DualAveragingStepSize",
    "PolynomialDecay",
    "ScheduledStepSize",
]
