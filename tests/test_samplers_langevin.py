"""The Langevin steps (``ppgen.samplers.langevin``) exactly: the Metropolis-Hastings ratio against torch's Normal
densities, MALA's accept rule, ULA's proposal and its closed-form stationary covariance, and explicit randomness
(the same seed gives the same step)."""

import math

import pyro.distributions as dist
import pytest
import torch

from ppgen.samplers.langevin import (
    LangevinState,
    draw_langevin_noise,
    draw_mala_noise,
    init_state,
    langevin_proposal,
    mala_log_accept_ratio,
    mala_step,
    metropolis_accept_prob,
    sgld_step,
    ula_gaussian_stationary_covariance,
    ula_step,
)

# A correlated Gaussian target in R^3, log p and its score in float64, for a batch of chains [..., 3].
COVARIANCE = torch.tensor([[1.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 0.5]], dtype=torch.float64)
TARGET = dist.MultivariateNormal(torch.zeros(3, dtype=torch.float64), COVARIANCE)


def gaussian(position: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return TARGET.log_prob(position), -position @ torch.linalg.inv(COVARIANCE)


def chains(num_chains: int = 6, seed: int = 0) -> LangevinState:
    position = torch.randn(num_chains, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return init_state(position, gaussian)


def test_mala_log_accept_ratio_is_the_metropolis_hastings_ratio_of_the_gaussian_proposals():
    """log p(x') + log N(x; x' + h s', 2h I) - log p(x) - log N(x'; x + h s, 2h I), with torch's Normal densities."""
    g = torch.Generator().manual_seed(0)
    x, x_new, score, score_new = (torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(4))
    log_p, log_p_new = (
        torch.randn(5, generator=g, dtype=torch.float64),
        torch.randn(5, generator=g, dtype=torch.float64),
    )
    h = 0.3

    def log_q(to, start, score_at_start):
        return dist.Normal(start + h * score_at_start, math.sqrt(2 * h)).log_prob(to).sum(-1)

    expected = log_p_new + log_q(x, x_new, score_new) - log_p - log_q(x_new, x, score)
    torch.testing.assert_close(mala_log_accept_ratio(x, log_p, score, x_new, log_p_new, score_new, h), expected)


def test_mala_log_accept_ratio_is_antisymmetric_and_zero_in_the_limit():
    """Detailed balance: log r(x -> x') = -log r(x' -> x). As h -> 0 with x' - x = O(h) the ratio vanishes."""
    g = torch.Generator().manual_seed(1)
    x, x_new = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
    precision = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)

    def log_p_and_score(z):
        return -0.5 * ((z @ precision) * z).sum(-1), -z @ precision

    forward = mala_log_accept_ratio(x, *log_p_and_score(x), x_new, *log_p_and_score(x_new), 0.2)
    backward = mala_log_accept_ratio(x_new, *log_p_and_score(x_new), x, *log_p_and_score(x), 0.2)
    torch.testing.assert_close(forward, -backward)
    h = 1e-6
    x_near = x + h * log_p_and_score(x)[1] + math.sqrt(2 * h) * x_new
    assert mala_log_accept_ratio(x, *log_p_and_score(x), x_near, *log_p_and_score(x_near), h).abs().max() < 1e-4


def test_metropolis_accept_prob():
    log_ratio = torch.tensor([0.5, math.log(0.3), float("nan"), -float("inf")])
    torch.testing.assert_close(metropolis_accept_prob(log_ratio), torch.tensor([1.0, 0.3, 0.0, 0.0]))


def test_ula_gaussian_stationary_covariance_solves_the_lyapunov_equation():
    """V = A V A^T + 2 h I with A = I - h S^-1 (the stationary covariance of x' = A x + sqrt(2h) xi)."""
    cov = torch.tensor([[1.0, 0.8], [0.8, 2.0]], dtype=torch.float64)
    h = 0.1
    a = torch.eye(2, dtype=torch.float64) - h * torch.linalg.inv(cov)
    v = ula_gaussian_stationary_covariance(cov, h)
    torch.testing.assert_close(v, a @ v @ a.T + 2 * h * torch.eye(2, dtype=torch.float64))
    # In 1-D with h = s the chain is x' = m + sqrt(2 s) xi: independent draws with twice the variance.
    torch.testing.assert_close(ula_gaussian_stationary_covariance(torch.tensor([[0.3]]), 0.3), torch.tensor([[0.6]]))


STEPS = {
    "ula": (ula_step, draw_langevin_noise),
    "mala": (mala_step, draw_mala_noise),
    "sgld": (sgld_step, draw_langevin_noise),
}


@pytest.mark.parametrize("name", STEPS)
def test_the_same_seed_gives_the_same_step(name):
    step, draw = STEPS[name]
    state = chains()

    def one_step(seed):
        return step(state, gaussian, 0.4, *draw(state.position, torch.Generator().manual_seed(seed)))

    (first, first_info), (again, again_info), (other, _) = one_step(7), one_step(7), one_step(8)
    for new, repeated in zip((*first, *first_info), (*again, *again_info)):
        assert torch.equal(new, repeated) or (new.isnan().all() and repeated.isnan().all())
    assert not torch.equal(first.position, other.position)


def test_ula_step_is_the_langevin_proposal_always_accepted():
    state, h = chains(), 0.3
    (noise,) = draw_langevin_noise(state.position, torch.Generator().manual_seed(1))
    new, info = ula_step(state, gaussian, h, noise)
    torch.testing.assert_close(new.position, state.position + h * state.score + math.sqrt(2 * h) * noise)
    torch.testing.assert_close(tuple(new[1:]), gaussian(new.position))
    assert info.accepted.all() and info.accepted.shape == (6,)
    # The acceptance probability MALA would have had: a free measure of the discretization error.
    expected = metropolis_accept_prob(mala_log_accept_ratio(*state, *new, h))
    torch.testing.assert_close(info.accept_prob, expected)
    torch.testing.assert_close(info.log_density, new.log_density)


def test_mala_step_accepts_with_the_exact_metropolis_hastings_probability():
    """min(1, p(x') q(x | x') / (p(x) q(x' | x))) from torch's densities; accepted exactly when uniform is below it,
    and then the state is the proposal's, else the old one."""
    state, h = chains(num_chains=200), 0.8
    noise, uniform = draw_mala_noise(state.position, torch.Generator().manual_seed(2))
    new, info = mala_step(state, gaussian, h, noise, uniform)
    proposal = langevin_proposal(state.position, state.score, h, noise)
    proposal_score = gaussian(proposal)[1]

    def log_q(to, start, score):
        return dist.Normal(start + h * score, math.sqrt(2 * h)).log_prob(to).sum(-1)

    log_forward = TARGET.log_prob(state.position) + log_q(proposal, state.position, state.score)
    log_ratio = TARGET.log_prob(proposal) + log_q(state.position, proposal, proposal_score) - log_forward
    torch.testing.assert_close(info.accept_prob, log_ratio.exp().clamp(max=1))
    assert torch.equal(info.accepted, uniform < info.accept_prob)
    assert 0 < info.accepted.sum() < 200  # both branches are exercised
    moved = info.accepted[:, None]
    assert torch.equal(new.position, torch.where(moved, proposal, state.position))
    assert torch.equal(new.score, torch.where(moved, proposal_score, state.score))
    torch.testing.assert_close(new.log_density, TARGET.log_prob(new.position))
    assert torch.equal(info.log_density, new.log_density)


def test_sgld_step_moves_as_ula_without_an_acceptance_probability():
    state = chains()
    (noise,) = draw_langevin_noise(state.position, torch.Generator().manual_seed(3))
    (ula, _), (sgld, info) = ula_step(state, gaussian, 0.1, noise), sgld_step(state, gaussian, 0.1, noise)
    assert all(torch.equal(a, b) for a, b in zip(ula, sgld))
    assert info.accept_prob.isnan().all() and info.accepted.all()


def test_a_score_only_target_runs_ula_steps():
    """A diffusion model knows q(y_t) only through its score: ``ula_step`` moves on it and reports no acceptance."""

    def score_only(position):
        return None, gaussian(position)[1]

    state = init_state(chains().position, score_only)
    (noise,) = draw_langevin_noise(state.position, torch.Generator().manual_seed(4))
    new, info = ula_step(state, score_only, 0.2, noise)
    reference, _ = ula_step(chains(), gaussian, 0.2, noise)
    torch.testing.assert_close(new.position, reference.position)
    assert new.log_density is None and info.accept_prob.isnan().all() and info.accept_prob.shape == (6,)


def test_one_chain_is_a_position_without_batch_dimensions():
    state = init_state(torch.zeros(3, dtype=torch.float64), gaussian)
    new, info = mala_step(state, gaussian, 0.5, *draw_mala_noise(state.position, torch.Generator().manual_seed(5)))
    assert new.position.shape == (3,) and new.log_density.shape == () and info.accepted.shape == ()
