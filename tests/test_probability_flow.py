"""The probability-flow ODE's log-likelihood, checked against a Gaussian, whose VE-noised marginals are Gaussian too."""

import pyro.distributions as dist
import pytest
import torch

from ppgen.evaluate.probability_flow import probability_flow_log_likelihood, ve_drift_rate

D, SIGMA_MIN, SIGMA_MAX = 5, 0.05, 5.0
# The ODE solved at rtol = atol = 1e-5 in float64 moves log p by well under 1e-3 (the exact trace agrees with the
# closed form to about 5e-5 at D = 3), so 1e-3 is the allowance for the solver's error.
ODE_TOLERANCE = 1e-3


def sigma(t):
    return SIGMA_MIN * (SIGMA_MAX / SIGMA_MIN) ** t


@pytest.fixture
def gaussian():
    """N(m, S) with a dense S (with a diagonal S, Rademacher probes would be exact), and its exact VE score: the data
    convolved with N(0, sigma^2 I) is N(m, S + sigma^2 I)."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(D, generator=g, dtype=torch.float64)
    root = torch.randn(D, D, generator=g, dtype=torch.float64)
    covariance = root @ root.T / D + 0.1 * torch.eye(D, dtype=torch.float64)

    def score(x, t):
        noised = covariance + sigma(t) ** 2 * torch.eye(D, dtype=torch.float64)
        return -torch.linalg.solve(noised, (x - mean).unsqueeze(-1)).squeeze(-1)

    x = mean + torch.randn(40, D, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(covariance).T
    eye = torch.eye(D, dtype=torch.float64)
    exact = dist.MultivariateNormal(mean, covariance + SIGMA_MIN**2 * eye).log_prob(x)  # t = 0: sigma_min's blur
    prior = dist.MultivariateNormal(mean, covariance + SIGMA_MAX**2 * eye)  # the exact p_1
    return score, x, exact, prior


def test_the_drift_rate_is_the_derivative_of_sigma_squared():
    t = torch.tensor(0.3, dtype=torch.float64)
    expected = 2 * sigma(t) ** 2 * torch.log(torch.tensor(SIGMA_MAX / SIGMA_MIN, dtype=torch.float64))
    torch.testing.assert_close(ve_drift_rate(sigma, t), expected)


def test_exact_trace_gives_the_gaussian_density(gaussian):
    score, x, exact, prior = gaussian
    result = probability_flow_log_likelihood(score, sigma, x, prior, exact_trace=True)
    assert result.num_probes == D and (result.stderr == 0).all()
    torch.testing.assert_close(result.log_prob, exact, rtol=0, atol=ODE_TOLERANCE)


def test_hutchinson_estimate_is_within_its_standard_error(gaussian):
    score, x, exact, prior = gaussian
    result = probability_flow_log_likelihood(
        score, sigma, x, prior, probes=32, generator=torch.Generator().manual_seed(1)
    )
    error = result.log_prob - exact
    assert (result.stderr > 0).all()
    # Per example the error over its standard error is ~ t with 31 degrees of freedom: |z| < 5 for all 40 (a chance
    # of about 1e-3 to fail), allowing the solver's error on top.
    assert (error.abs() < 5 * result.stderr + ODE_TOLERANCE).all()
    # The mean over the 40 independent examples: within 4 of its standard errors.
    assert error.mean().abs() < 4 * result.stderr.square().sum().sqrt() / len(x) + ODE_TOLERANCE


def test_default_prior_is_the_wide_normal(gaussian):
    score, x, _, _ = gaussian
    wide = dist.Normal(torch.zeros(D, dtype=torch.float64), SIGMA_MAX).to_event(1)
    default = probability_flow_log_likelihood(score, sigma, x, exact_trace=True)
    explicit = probability_flow_log_likelihood(score, sigma, x, wide, exact_trace=True)
    torch.testing.assert_close(default.log_prob, explicit.log_prob)


def test_a_single_probe_has_no_standard_error():
    with pytest.raises(ValueError, match="probes = 1"):
        probability_flow_log_likelihood(lambda x, t: -x, sigma, torch.zeros(3, 2), probes=1)


def test_a_trajectory_that_leaves_the_prior_is_flagged(gaussian):
    """The exact score keeps every trajectory in the prior's bulk; a score five times too steep on some examples (a
    network extrapolating badly) makes the forward ODE's drift, -g^2 s / 2, expand them by exp(5 ln(100)) ~ 1e10
    instead of the prior's 100, and only those are flagged."""
    score, x, _, prior = gaussian
    assert not probability_flow_log_likelihood(score, sigma, x, prior, exact_trace=True).escaped.any()
    outward = torch.zeros(len(x), dtype=torch.bool)
    outward[:3] = True

    def bad_score(points, t):  # -5 points / sigma^2 for the first three examples
        rows = outward.repeat(len(points) // len(x))  # the solver stacks every probe's copy of the N examples
        return torch.where(rows.unsqueeze(-1), -5 * points / sigma(t) ** 2, score(points, t))

    escaped = probability_flow_log_likelihood(bad_score, sigma, x, prior, exact_trace=True).escaped
    assert escaped.tolist() == outward.tolist()
