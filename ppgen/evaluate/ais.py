"""Annealed importance sampling (Neal 2001, arXiv:physics/9803008): the normalizing constant Z of any unnormalized
log-density log f, from a normalized base density p_0 along the geometric path

    log pi_k(x) = (1 - beta_k) log p_0(x) + beta_k log f(x),    0 = beta_0 < beta_1 < ... < beta_K = 1.

Each of C independent chains starts at x_0 ~ p_0 and at temperature k adds (beta_k - beta_k-1) (log f - log p_0)(x)
to its log-weight before a MALA step (``ppgen.samplers.langevin.mala_step``) that leaves pi_k invariant. The weights
are unbiased for Z / Z_0 = Z, so log Z ~ logmeanexp of the log-weights, with the delta-method standard error
sqrt(Var[w] / C) / mean[w] of ``ppgen.evaluate.bounds.log_likelihood``; the estimate of log Z itself is
stochastically a lower bound (Jensen), which more temperatures tighten.

The MALA step size is adapted between temperatures towards an acceptance rate of 0.574 (Roberts & Rosenthal 1998,
J. R. Stat. Soc. B 60(1), 255-268), as Wu et al. adapt their AIS's HMC step (arXiv:1611.04273): the step at
temperature k depends on the acceptance of all chains at k - 1, a small coupling between chains that vanishes as C
grows.
"""

import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from ppgen.samplers.langevin import LangevinState, LogDensityFn, draw_mala_noise, mala_step

__all__ = ["AISResult", "ais", "with_score", "log_mean_exp_with_stderr", "TARGET_ACCEPT"]

TARGET_ACCEPT = 0.574  # MALA's optimal acceptance rate in high dimension (Roberts & Rosenthal 1998)
ADAPTATION_RATE = 1.0  # log step size += rate * (acceptance - target) after each temperature


class AISResult(NamedTuple):
    """log_z, stderr, effective_sample_size: [] the estimate of log Z, its delta-method standard error and the
    weights' effective sample size (sum w)^2 / sum w^2 in 1..C. log_weights: [C]. samples: [C, D] the chains' final
    positions (approximately from f / Z). accept_prob: [K] the mean MALA acceptance at each temperature."""

    log_z: torch.Tensor
    stderr: torch.Tensor
    effective_sample_size: torch.Tensor
    log_weights: torch.Tensor
    samples: torch.Tensor
    accept_prob: torch.Tensor


def with_score(log_density: Callable[[torch.Tensor], torch.Tensor]) -> LogDensityFn:
    """The ``LogDensityFn`` of the Langevin steps for ``log_density`` (position [..., D] -> [...]): position ->
    (log density, its gradient by autograd), both detached. Gradients are taken even under ``torch.no_grad`` and
    only with respect to the position, so nothing accumulates in any network's ``.grad``."""

    def log_density_fn(position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            position = position.detach().requires_grad_(True)
            value = log_density(position)
            (score,) = torch.autograd.grad(value.sum(), position)
        return value.detach(), score

    return log_density_fn


def ais(
    log_target: Callable[[torch.Tensor], torch.Tensor],
    base: torch.distributions.Distribution,
    *,
    num_steps: int,
    num_chains: int,
    step_size: float = 0.1,
) -> AISResult:
    """log Z of f = exp(log_target) by annealed importance sampling from ``base`` with ``num_steps`` MALA steps.

    Args:
        log_target: position [..., D] -> log f [...], up to nothing: its constant is what Z measures.
        base: a normalized distribution with event shape [D] (sample, log_prob), e.g. a Gaussian fitted to data.
        num_steps: K, the temperatures after beta_0 = 0, evenly spaced up to beta_K = 1.
        num_chains: C >= 2.
        step_size: MALA's initial step size, adapted after each temperature.
    Draws from torch's global generator (``pyro.set_rng_seed`` seeds it).
    """
    if num_steps < 1 or num_chains < 2:
        raise ValueError(f"AIS needs num_steps >= 1 and num_chains >= 2, got {num_steps} and {num_chains}")
    base_fn, target_fn = with_score(base.log_prob), with_score(log_target)
    position = base.sample((num_chains,))
    log_weights = torch.zeros(num_chains, dtype=position.dtype, device=position.device)
    log_step = torch.tensor(math.log(step_size), dtype=position.dtype, device=position.device)
    betas = torch.linspace(0.0, 1.0, num_steps + 1, dtype=position.dtype).tolist()
    accept_prob = []
    for previous, beta in zip(betas[:-1], betas[1:]):
        (log_base, base_score), (log_f, target_score) = base_fn(position), target_fn(position)
        log_weights += (beta - previous) * (log_f - log_base)
        state = LangevinState(
            position, (1 - beta) * log_base + beta * log_f, (1 - beta) * base_score + beta * target_score
        )
        state, info = mala_step(state, _geometric(base_fn, target_fn, beta), log_step.exp(), *draw_mala_noise(position))
        position = state.position
        accept_prob.append(info.accept_prob.mean())
        log_step = log_step + ADAPTATION_RATE * (accept_prob[-1] - TARGET_ACCEPT)
    log_z, stderr, effective_sample_size = log_mean_exp_with_stderr(log_weights)
    return AISResult(log_z, stderr, effective_sample_size, log_weights, position, torch.stack(accept_prob))


def log_mean_exp_with_stderr(log_weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log mean w, its delta-method standard error sqrt(Var[w] / C) / mean[w], the effective sample size) of C
    log-weights [C], as ``ppgen.evaluate.bounds.log_likelihood`` computes them per example."""
    count = len(log_weights)
    lse, lse_squared = log_weights.logsumexp(0), (2 * log_weights).logsumexp(0)
    relative_variance = torch.expm1(math.log(count) + lse_squared - 2 * lse).clamp(min=0)
    return lse - math.log(count), (relative_variance / (count - 1)).sqrt(), torch.exp(2 * lse - lse_squared)


def _geometric(base_fn: LogDensityFn, target_fn: LogDensityFn, beta: float) -> LogDensityFn:
    """The ``LogDensityFn`` of (1 - beta) log p_0 + beta log f."""

    def log_density_fn(position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        (log_base, base_score), (log_f, target_score) = base_fn(position), target_fn(position)
        return (1 - beta) * log_base + beta * log_f, (1 - beta) * base_score + beta * target_score

    return log_density_fn
