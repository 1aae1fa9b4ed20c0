"""log p(x) through the probability-flow ODE of a variance-exploding SDE (Song et al. 2021, arXiv:2011.13456,
sec. 4.3 and appendix D.2), for any score function.

The VE SDE dx = sqrt(d[sigma^2]/dt) dw on t in [0, 1] has marginals p_t = p_0 * N(0, (sigma(t)^2 - sigma(0)^2) I)
and shares them with the ODE

    dx/dt = f(x, t) = -1/2 d[sigma^2]/dt grad log p_t(x),

whose flow changes log-densities by the instantaneous change of variables (Chen et al. 2018, arXiv:1806.07366):

    log p_0(x_0) = log p_1(x_1) + integral_0^1 div f(x_t, t) dt.

With a learned score s(x, t) in place of grad log p_t, and p_1 replaced by a prior, this is the model's exact
log-density. The divergence is estimated by Hutchinson's trace estimator with Rademacher probes v, div f =
E[v^T (df/dx) v] (Hutchinson 1989; FFJORD, Grathwohl et al. 2018, arXiv:1810.01367), each probe fixed along the
trajectory so that each gives an unbiased estimate of the integral; K independent probes give the estimate's
Monte-Carlo standard error. For small D the trace is exact with the D basis vectors as probes.
"""

from collections.abc import Callable
from typing import NamedTuple

import pyro.distributions as dist
import torch
from torchdiffeq import odeint

__all__ = ["ScoreFn", "SigmaFn", "FlowLogLikelihood", "probability_flow_log_likelihood", "ve_drift_rate"]

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(x [B, D], t [] in [0, 1]) -> s(x, t) [B, D], an estimate of grad log p_t(x)."""

SigmaFn = Callable[[torch.Tensor], torch.Tensor]
"""t [] -> sigma(t) [], the VE SDE's noise scale, differentiable in t."""


class FlowLogLikelihood(NamedTuple):
    """log_prob [N]: log p_0(x) per example (the mean over probes); stderr [N]: its Monte-Carlo standard error over
    the probes (0 with the exact trace); num_probes: K; function_evaluations: the ODE solver's calls of the score;
    escaped [N]: the trajectory ended outside the prior's bulk (``ESCAPE`` prior scales from its centre), where the
    learned drift, not the data, set log p."""

    log_prob: torch.Tensor
    stderr: torch.Tensor
    num_probes: int
    function_evaluations: int
    escaped: torch.Tensor


ESCAPE = 10.0
"""A trajectory ending farther than this many times sigma(1) sqrt(D) from the prior's centre has left it (the prior
puts no appreciable mass there): the network extrapolated off the data, and that example's log p is meaningless in
practice though it is the learned flow's."""


def ve_drift_rate(sigma: SigmaFn, t: torch.Tensor) -> torch.Tensor:
    """d[sigma^2]/dt at t [] by automatic differentiation: the VE SDE's squared diffusion coefficient g(t)^2."""
    with torch.enable_grad():
        t = t.detach().requires_grad_(True)
        (rate,) = torch.autograd.grad(sigma(t).square(), t)
    return rate


def probability_flow_log_likelihood(
    score: ScoreFn,
    sigma: SigmaFn,
    x: torch.Tensor,
    prior: dist.Distribution | None = None,
    *,
    probes: int = 4,
    exact_trace: bool = False,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    generator: torch.Generator | None = None,
) -> FlowLogLikelihood:
    """log p_0(x) for x [N, D] by solving the probability-flow ODE from t = 0 to t = 1 (``torchdiffeq.odeint``).

    Args:
        score: s(x, t), see ``ScoreFn``. sigma: the SDE's sigma(t), see ``SigmaFn``.
        x: [N, D] the points, at t = 0.
        prior: log p_1, a distribution with event shape [D]; None: N(0, sigma(1)^2 I), the VE SDE's usual prior
            (Song et al. 2021), which approximates p_1 = p_0 * N(0, (sigma(1)^2 - sigma(0)^2) I) when sigma(1) is
            large against the data's spread.
        probes: K >= 2 Rademacher probes per example for Hutchinson's estimator; ignored with ``exact_trace``.
        exact_trace: the exact divergence, with the D basis vectors as probes (D times the cost of one probe).
        rtol, atol: the adaptive solver's tolerances. method: a ``torchdiffeq`` solver.
        generator: draws the probes (torch's default generator when None).
    Returns:
        a ``FlowLogLikelihood``: the estimate [N] and its standard error [N] (the sample standard deviation of the
        K per-probe estimates over sqrt(K)).
    """
    num_examples, dim = x.shape
    if exact_trace:
        vectors = torch.eye(dim, dtype=x.dtype, device=x.device).unsqueeze(1).expand(dim, num_examples, dim)
    elif probes < 2:
        raise ValueError(f"probes = {probes}: the standard error needs at least 2 probes")
    else:
        device = x.device if generator is None else generator.device
        signs = torch.randint(0, 2, (probes, num_examples, dim), generator=generator, device=device)
        vectors = (2 * signs - 1).to(dtype=x.dtype, device=x.device)
    evaluations = 0

    def dynamics(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """d/dt of (x_t [K, N, D], the per-probe divergence integral [K, N])."""
        nonlocal evaluations
        evaluations += 1
        with torch.enable_grad():
            position = state[0].detach().requires_grad_(True)
            drift = -0.5 * ve_drift_rate(sigma, t) * score(position.reshape(-1, dim), t).reshape(position.shape)
            (vector_jacobian,) = torch.autograd.grad(drift, position, vectors)  # v^T df/dx, rows independent
        return drift.detach(), (vector_jacobian * vectors).sum(-1)

    start = (x.unsqueeze(0).expand(vectors.shape).contiguous(), x.new_zeros(vectors.shape[:-1]))
    times = torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device)
    path, integral = odeint(dynamics, start, times, rtol=rtol, atol=atol, method=method)
    x_1, integral = path[-1, 0], integral[-1]  # every probe's copy of x follows the same trajectory
    if prior is None:
        scale = sigma(times[-1]).expand(dim)
        prior = dist.Normal(torch.zeros_like(scale), scale).to_event(1)
    log_prior = prior.log_prob(x_1)
    escaped = (x_1 - prior.mean).norm(dim=-1) > ESCAPE * prior.stddev.square().sum(-1).sqrt()
    if exact_trace:
        return FlowLogLikelihood(log_prior + integral.sum(0), torch.zeros_like(log_prior), dim, evaluations, escaped)
    stderr = integral.std(0) / probes**0.5
    return FlowLogLikelihood(log_prior + integral.mean(0), stderr, probes, evaluations, escaped)
