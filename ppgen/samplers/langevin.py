"""Langevin steps as pure functions: ULA, MALA and SGLD map a ``LangevinState`` and explicit randomness to a new
state and a ``LangevinInfo`` (blackjax's ``mcmc/mala.py``), with nothing kept between calls.

All three share one move, the Langevin proposal (``langevin_proposal``); MALA adds the Metropolis-Hastings rule
(``mala_log_accept_ratio``, ``metropolis_accept_prob``), ULA and SGLD keep every move. A step reads nothing back from
the device: the accept/reject choice is a ``torch.where`` and the diagnostics are tensors. Positions may carry batch
dimensions ([..., D], e.g. many independent chains); the log densities and diagnostics are then [...].

    state = init_state(position, log_density_fn)
    noise, uniform = draw_mala_noise(state.position, generator)
    state, info = mala_step(state, log_density_fn, step_size, noise, uniform)

A target known only through its score (a diffusion model's) is a function returning ``(None, score)``: ULA's steps
then run on the score alone and report a NaN acceptance probability.
"""

from collections.abc import Callable
from typing import NamedTuple

import torch

__all__ = [
    "LogDensityFn",
    "LangevinState",
    "LangevinInfo",
    "init_state",
    "langevin_proposal",
    "mala_log_accept_ratio",
    "metropolis_accept_prob",
    "ula_step",
    "mala_step",
    "sgld_step",
    "draw_langevin_noise",
    "draw_mala_noise",
    "ula_gaussian_stationary_covariance",
]

LogDensityFn = Callable[[torch.Tensor], tuple[torch.Tensor | None, torch.Tensor]]
"""position [..., D] -> (log p [...] up to a constant, or None for a score-only target; grad log p [..., D])."""


class LangevinState(NamedTuple):
    """position [..., D], log_density [...] (log p up to a constant; None for a score-only target), score [..., D]
    (grad log p at position)."""

    position: torch.Tensor
    log_density: torch.Tensor | None
    score: torch.Tensor


class LangevinInfo(NamedTuple):
    """One step's diagnostics, tensors [...] on the state's device, in its dtype except ``accepted`` (bool).

    accept_prob: MALA's Metropolis-Hastings acceptance probability; for ULA the probability MALA *would* have
        accepted this move with (a free measure of the discretization error); NaN for SGLD, whose log densities are
        minibatch estimates, and for score-only targets. accepted: whether the chain moved (always for ULA and SGLD).
    step_size: the step used. log_density: log p of the returned state (ArviZ's ``lp``).
    """

    accept_prob: torch.Tensor
    accepted: torch.Tensor
    step_size: torch.Tensor
    log_density: torch.Tensor | None


def init_state(position: torch.Tensor, log_density_fn: LogDensityFn) -> LangevinState:
    """The state at ``position`` [..., D]."""
    log_density, score = log_density_fn(position)
    return LangevinState(position, log_density, score)


def langevin_proposal(
    x: torch.Tensor, score: torch.Tensor, step_size: torch.Tensor | float, noise: torch.Tensor
) -> torch.Tensor:
    """x + step_size * score + sqrt(2 step_size) * noise: one Euler-Maruyama step of the Langevin diffusion
    dx = grad log p(x) dt + sqrt(2) dW, whose stationary law is p.

    Args:
        x, score: [..., D] the position and grad log p at it.
        step_size: a number, or a tensor broadcasting against x (e.g. [..., 1] per chain).
        noise: [..., D] standard normal draws.
    """
    return x + step_size * score + (2 * step_size) ** 0.5 * noise


def mala_log_accept_ratio(
    x: torch.Tensor,
    log_density: torch.Tensor,
    score: torch.Tensor,
    x_new: torch.Tensor,
    log_density_new: torch.Tensor,
    score_new: torch.Tensor,
    step_size: torch.Tensor | float,
) -> torch.Tensor:
    """log [p(x_new) q(x | x_new)] - log [p(x) q(x_new | x)]: the Metropolis-Hastings log ratio that makes the
    Langevin proposal exact (MALA; Roberts & Tweedie 1996, Bernoulli 2(4), 341-363, doi:10.2307/3318418).

    Args:
        x, x_new: [..., D] the current and the proposed point.
        log_density, log_density_new: [...] log p at them, up to the same constant.
        score, score_new: [..., D] grad log p at them.
        step_size: the step size the proposal was made with.
    Returns:
        [...] the log ratio; it is antisymmetric in (current, proposed), which is detailed balance.

    q(x_new | x) is N(x + h score, 2 h I) (``langevin_proposal``); both proposals have covariance 2 h I, so their
    normalizers cancel: log q(x | x_new) - log q(x_new | x) = (|x_new - x - h score|^2 - |x - x_new - h score_new|^2)
    / (4 h).
    """
    forward = x_new - x - step_size * score
    backward = x - x_new - step_size * score_new
    return log_density_new - log_density + ((forward**2 - backward**2) / (4 * step_size)).sum(-1)


def metropolis_accept_prob(log_ratio: torch.Tensor) -> torch.Tensor:
    """min(1, exp(log_ratio)), elementwise; NaN (a proposal whose log density overflowed) gives 0."""
    return torch.nan_to_num(log_ratio, nan=-torch.inf).clamp(max=0).exp()


def ula_step(
    state: LangevinState, log_density_fn: LogDensityFn, step_size: torch.Tensor | float, noise: torch.Tensor
) -> tuple[LangevinState, LangevinInfo]:
    """One unadjusted Langevin step: the proposal x' = x + h grad log p(x) + sqrt(2 h) noise, always accepted.

    Its stationary law is p only as h -> 0 (``ula_gaussian_stationary_covariance`` gives it for a Gaussian).

    Args:
        state: the current state. log_density_fn: position [..., D] -> (log p [...] or None, score [..., D]).
        step_size: h > 0, a number or a tensor broadcasting against the position (a number becomes a 0-d tensor
            on the state's device, a copy that waits for it).
        noise: [..., D] standard normal draws.
    Returns:
        (the proposed state, its ``LangevinInfo``).
    Reference: Roberts & Tweedie 1996, doi:10.2307/3318418; Durmus & Moulines, arXiv:1507.05021.
    """
    step_size = torch.as_tensor(step_size, dtype=state.position.dtype, device=state.position.device)
    proposal = init_state(langevin_proposal(state.position, state.score, step_size, noise), log_density_fn)
    if proposal.log_density is None:  # a score-only target has no Metropolis-Hastings ratio
        accept_prob = torch.full_like(state.position[..., 0], float("nan"))
    else:
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
    """One Metropolis-adjusted Langevin step: ``ula_step``'s proposal, accepted when uniform < its Metropolis-Hastings
    probability, which makes p exactly invariant for any step size.

    Args:
        as ``ula_step`` (the log density must be given), and uniform: [...] Uniform(0, 1) draws.
    Reference: Roberts & Tweedie 1996, doi:10.2307/3318418.
    """
    proposal, info = ula_step(state, log_density_fn, step_size, noise)
    accepted = uniform < info.accept_prob
    moved = accepted.unsqueeze(-1)  # against [..., D]
    new_state = LangevinState(
        torch.where(moved, proposal.position, state.position),
        torch.where(accepted, proposal.log_density, state.log_density),
        torch.where(moved, proposal.score, state.score),
    )
    return new_state, info._replace(accepted=accepted, log_density=new_state.log_density)


def sgld_step(
    state: LangevinState, log_density_fn: LogDensityFn, step_size: torch.Tensor | float, noise: torch.Tensor
) -> tuple[LangevinState, LangevinInfo]:
    """One stochastic-gradient Langevin step: ``ula_step`` where ``log_density_fn`` is an unbiased minibatch
    estimate (a fresh minibatch at each call), so no acceptance probability is reported (NaN).

    Args: as ``ula_step``.
    Reference: Welling & Teh 2011, ICML, "Bayesian learning via stochastic gradient Langevin dynamics".
    """
    state, info = ula_step(state, log_density_fn, step_size, noise)
    return state, info._replace(accept_prob=torch.full_like(info.accept_prob, float("nan")))


def draw_langevin_noise(position: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor]:
    """(noise,): the randomness of ``ula_step`` and ``sgld_step``, standard normal draws shaped like ``position``,
    from ``generator`` (torch's default generator for the position's device when None, which ``pyro.set_rng_seed``
    seeds)."""
    return (torch.randn(position.shape, generator=generator, dtype=position.dtype, device=position.device),)


def draw_mala_noise(
    position: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(noise, uniform): the randomness of ``mala_step``, drawn in that order (as ``draw_langevin_noise``, then
    Uniform(0, 1) draws [...])."""
    (noise,) = draw_langevin_noise(position, generator)
    uniform = torch.rand(position.shape[:-1], generator=generator, dtype=position.dtype, device=position.device)
    return noise, uniform


def ula_gaussian_stationary_covariance(covariance: torch.Tensor, step_size: torch.Tensor | float) -> torch.Tensor:
    """The covariance of ULA's stationary law on a N(m, S) target.

    With score -S^-1 (x - m) a step is x' - m = A (x - m) + sqrt(2 h) xi with A = I - h S^-1, so the stationary
    law is N(m, V) with V = A V A + 2 h I, whose solution (A and S commute) is V = S (I - h S^-1 / 2)^-1: each
    eigenvalue s of S becomes s / (1 - h / (2 s)). The mean is exact, the variance too large by a factor
    1 + h / (2 s) + O(h^2); the chain diverges unless h < 2 s for every eigenvalue. For h = s in 1-D the draws
    are independent N(m, 2 s).

    Args:
        covariance: [..., D, D] the target's covariance S.
        step_size: h, a number or a tensor broadcasting against [..., 1, 1].
    Returns:
        [..., D, D] the stationary covariance V (meaningful only when h < 2 * the smallest eigenvalue of S).
    Reference: Durmus & Moulines, arXiv:1507.05021, for ULA's bias in general.
    """
    precision = torch.linalg.inv(covariance)
    return torch.linalg.inv(precision - 0.5 * step_size * precision @ precision)
