"""Power-scaling sensitivity (Kallioinen et al. 2023, arXiv:2107.14054) on the conjugate normal model, where the
power-scaled posterior is known exactly.

y_i ~ N(mu, sigma^2), mu ~ N(m0, s0^2). Raising the prior to the power alpha multiplies its precision by alpha, and
raising the likelihood to alpha multiplies n by alpha: the power-scaled posterior is normal with precision
alpha / s0^2 + n / sigma^2 (prior) or 1 / s0^2 + alpha n / sigma^2 (likelihood) (BDA3, section 2.5).

ArviZ's sensitivity values are checked against the same finite difference computed with the exact normal CDFs, the
log prior that ppgen stores against the prior density, and reweighting by it against the power-scaled posterior.
The ArviZ-level tests need only ArviZ (so `.ci/arviz1` runs them on ArviZ 1.x); the log prior that ppgen computes from
a NumPyro model is tested where NumPyro is installed.
"""

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from ppgen.evaluate import inference_data, sensitivity
from ppgen.evaluate.inference_data import build_inference_data

CHAINS, DRAWS = 4, 1000
Y = np.random.default_rng(1).normal(1.0, 1.0, size=20)


def posterior(y: np.ndarray, sigma: float, m0: float, s0: float, alpha_prior: float = 1.0, alpha_lik: float = 1.0):
    """(mean, sd) of mu given y with the prior raised to alpha_prior and the likelihood to alpha_lik."""
    precision = alpha_prior / s0**2 + alpha_lik * y.size / sigma**2
    return (alpha_prior * m0 / s0**2 + alpha_lik * y.sum() / sigma**2) / precision, precision**-0.5


def conjugate_results(sigma: float, m0: float, s0: float, seed: int):
    """Exact posterior draws of mu with their log prior and pointwise log-likelihood."""
    mean, sd = posterior(Y, sigma, m0, s0)
    mu = np.random.default_rng(seed).normal(mean, sd, size=(CHAINS, DRAWS))
    return build_inference_data(
        {"mu": mu},
        log_prior={"mu": stats.norm.logpdf(mu, m0, s0)},
        log_likelihood={"y": stats.norm.logpdf(Y, mu[..., None], sigma)},
    )


@pytest.mark.parametrize(
    "sigma, m0, s0, diagnosis",
    [
        # Prior precision 1e-4 against the data's 20: scaling the prior moves nothing (sensitivity ~4e-6), scaling
        # the likelihood moves everything (~0.09).
        (1.0, 0.0, 100.0, None),
        # A prior at -3 with precision 11 against data at 1 with precision 20: both pull (sensitivities ~0.8).
        (1.0, -3.0, 0.3, "prior-data conflict"),
        # Prior precision 1 against the data's 20 / 900: the prior is the posterior (prior ~0.08, likelihood ~0.005).
        (30.0, 0.0, 1.0, "strong prior / weak likelihood"),
    ],
)
def test_power_scaling_diagnoses_the_conjugate_model(sigma, m0, s0, diagnosis):
    # Values over 3 seeds varied by less than 10% of themselves: each case is 2x or more from the threshold 0.05.
    table, warnings = sensitivity.sensitivity(conjugate_results(sigma, m0, s0, seed=2))
    assert table["mu"]["diagnosis"] == diagnosis
    if diagnosis is None:
        assert table["mu"]["prior"] < 1e-3 and table["mu"]["likelihood"] > 0.06 and warnings == []
    else:
        (line,) = warnings
        assert line.startswith(f"sensitivity: {diagnosis} (") and line.split(") in ")[1].startswith("mu:")


def cumulative_js_distance(p: np.ndarray, q: np.ndarray, grid: np.ndarray) -> float:
    """The cumulative Jensen-Shannon distance of two CDFs on a grid, as priorsense defines it (Kallioinen et al.
    2023, eq. 9, normalized by the integral of p + q over the grid, as ArviZ's estimate is over the draws' range)."""
    mean = 0.5 * (p + q)
    with np.errstate(divide="ignore", invalid="ignore"):
        p_term = np.where(p > 0, p * np.log2(p / mean), 0.0)
        q_term = np.where(q > 0, q * np.log2(q / mean), 0.0)
    integral = lambda values: np.trapezoid(values, grid)  # noqa: E731
    shift = 0.5 / math.log(2) * (integral(q) - integral(p))
    divergence = max(integral(p_term) + shift, 0.0) + max(integral(q_term) - shift, 0.0)
    return math.sqrt(divergence / (integral(p) + integral(q)))


def exact_sensitivity(sigma: float, m0: float, s0: float, component: str, low: float, high: float) -> float:
    """ArviZ's finite difference of the distance in log2(alpha), (-d(a_lo) / log2(a_lo) + d(a_hi) / log2(a_hi)) / 2,
    computed with the exact normal CDFs of the base and power-scaled posteriors over [low, high] (the draws' range),
    for both orientations of the axis (the larger taken, as ArviZ does)."""
    alphas = (0.99, 1.01) if inference_data._is_v1() else (1 / 1.01, 1.01)
    grid = np.linspace(low, high, 100_001)  # the trapezoid rule's error is ~1e-10 here
    mean, sd = posterior(Y, sigma, m0, s0)
    gradient = 0.0
    for alpha, sign in zip(alphas, (-1, 1)):
        scaled_mean, scaled_sd = posterior(
            Y, sigma, m0, s0, **{"prior": {"alpha_prior": alpha}, "likelihood": {"alpha_lik": alpha}}[component]
        )
        distance = max(
            cumulative_js_distance(stats.norm.cdf(grid, mean, sd), stats.norm.cdf(grid, scaled_mean, scaled_sd), grid),
            cumulative_js_distance(stats.norm.sf(grid, mean, sd), stats.norm.sf(grid, scaled_mean, scaled_sd), grid),
        )
        gradient += sign * distance / math.log2(alpha) / 2
    return gradient


@pytest.mark.parametrize("sigma, m0, s0", [(1.0, -3.0, 0.3), (30.0, 0.0, 1.0)])
@pytest.mark.parametrize("component", ["prior", "likelihood"])
def test_the_sensitivity_values_match_their_closed_form(sigma, m0, s0, component):
    # The estimate replaces the CDFs by the draws' ECDF and its importance-weighted version; over 10 independent
    # sets of draws its mean must match the exact value within 4 standard errors of that mean (estimated from the
    # 10 values; a t(9) tail of 0.3%). Relative spread seen: 2-6% per set of draws.
    ratios = []
    for seed in range(10):
        results = conjugate_results(sigma, m0, s0, seed=10 + seed)
        mu = inference_data.get_group(results, "posterior")["mu"].values
        exact = exact_sensitivity(sigma, m0, s0, component, mu.min(), mu.max())
        ratios.append(sensitivity.sensitivity(results)[0]["mu"][component] / exact)
    assert abs(np.mean(ratios) - 1) < 4 * np.std(ratios, ddof=1) / math.sqrt(len(ratios))
    assert np.std(ratios, ddof=1) < 0.1  # and each estimate is close: within 10% sd of the exact value


def test_a_vector_parameter_is_named_element_by_element():
    # theta_j ~ N(0, s_j^2) apart, y_j ~ N(theta_j, 0.5^2): only theta[2]'s prior (sd 0.3, at 0 against y = 3) is
    # informative, and the draws of each element are exact and independent of the others.
    s0, y, sigma = np.array([100.0, 100.0, 0.3]), np.array([1.0, 1.0, 3.0]), 0.5
    precision = 1 / s0**2 + 1 / sigma**2
    theta = np.random.default_rng(3).normal(y / sigma**2 / precision, precision**-0.5, size=(CHAINS, DRAWS, 3))
    results = build_inference_data(
        {"theta": theta},
        log_prior={"theta": stats.norm.logpdf(theta, 0.0, s0)},
        log_likelihood={"y": stats.norm.logpdf(y, theta, sigma)},
    )
    table, warnings = sensitivity.sensitivity(results)
    assert list(table) == ["theta[0]", "theta[1]", "theta[2]"]
    assert [table[label]["diagnosis"] for label in table] == [None, None, "prior-data conflict"]
    assert len(warnings) == 1 and " in theta[2]: " in warnings[0]


# --------------------------------------------------------------------------------- the log prior ppgen computes


NORMAL = Path(__file__).resolve().parent.parent / "models" / "normal_normal.toml"


@pytest.fixture(scope="module")
def normal_run():
    """results_of on exact posterior draws of models/normal_normal.toml (N = 10, mu0 = 0, tau0 = 2, sigma = 1)."""
    pytest.importorskip("numpyro")
    from ppgen.infer.draws import Draws
    from ppgen.posterior import results_of
    from ppgen.spec.load import load_spec

    model = load_spec(NORMAL).model
    y, m0, s0, sigma = (np.asarray(model.data[key], dtype=float) for key in ("y", "mu0", "tau0", "sigma"))
    mean, sd = posterior(y, float(sigma), float(m0), float(s0))
    mu = np.random.default_rng(4).normal(mean, sd, size=(CHAINS, DRAWS))
    return results_of(model, Draws({"mu": mu})), (y, float(sigma), float(m0), float(s0))


def test_the_log_prior_group_holds_the_prior_density_of_each_draw(normal_run):
    results, (_, _, m0, s0) = normal_run
    mu = inference_data.get_group(results, "posterior")["mu"].values
    log_prior = inference_data.get_group(results, "log_prior")
    assert list(log_prior.data_vars) == ["mu"]  # the likelihood term y is not in it
    np.testing.assert_allclose(log_prior["mu"].values, stats.norm.logpdf(mu, m0, s0), rtol=1e-12)


def test_results_for_other_data_score_that_data_with_the_same_compiled_functions():
    """results_of compiles a model's predictive, log-likelihood and log prior once, with the observed data an
    argument: results for replicated data (SBC's) hold that data's log-likelihood, exactly."""
    pytest.importorskip("numpyro")
    from ppgen.infer.draws import Draws
    from ppgen.posterior import _COMPILED, results_of
    from ppgen.spec.load import load_spec

    model = load_spec(NORMAL).model
    y, sigma = np.asarray(model.data["y"], dtype=float), float(model.data["sigma"])
    mu = np.random.default_rng(5).normal(1.0, 0.3, size=(2, 50))
    for data in (y, y + 3.0):
        results = results_of(model, Draws({"mu": mu}), data={"y": data})
        pointwise = inference_data.get_group(results, "log_likelihood")["y"].values
        np.testing.assert_allclose(pointwise, stats.norm.logpdf(data, mu[..., None], sigma), rtol=1e-12)
    assert sum(key[0] is model for key in _COMPILED) == 1


# The prior (sd 2 against a posterior sd of 0.31) takes large powers to move the posterior; the likelihood's powers
# keep the scaled posterior's variance below twice the sampled one, where the importance weights have finite variance.
@pytest.mark.parametrize(
    "component, alpha", [("prior", 0.1), ("prior", 10.0), ("likelihood", 0.8), ("likelihood", 1.25)]
)
def test_reweighting_by_the_stored_groups_gives_the_exact_power_scaled_posterior(normal_run, component, alpha):
    results, (y, sigma, m0, s0) = normal_run
    mu = inference_data.get_group(results, "posterior")["mu"].values.ravel()
    group = inference_data.get_group(results, "log_prior" if component == "prior" else "log_likelihood")
    log_density = sum(value.values.reshape(mu.size, -1).sum(axis=1) for value in group.data_vars.values())
    weights = np.exp((alpha - 1) * (log_density - log_density.max()))
    weights /= weights.sum()
    mean = np.sum(weights * mu)
    variance = np.sum(weights * (mu - mean) ** 2)
    scaled = {"alpha_prior": alpha} if component == "prior" else {"alpha_lik": alpha}
    exact_mean, exact_sd = posterior(y, sigma, m0, s0, **scaled)
    # Self-normalized importance sampling over iid draws: by the delta method the Monte Carlo sd of the weighted
    # mean is sqrt(sum w^2 (mu - mean)^2), of the weighted variance sqrt(sum w^2 ((mu - mean)^2 - variance)^2).
    mcse_mean = math.sqrt(np.sum(weights**2 * (mu - mean) ** 2))
    mcse_variance = math.sqrt(np.sum(weights**2 * ((mu - mean) ** 2 - variance) ** 2))
    assert abs(mean - exact_mean) < 4 * mcse_mean
    assert abs(variance - exact_sd**2) < 4 * mcse_variance
    # and the change is resolved: the shift of the mean or of the variance is beyond that error
    base_mean, base_sd = posterior(y, sigma, m0, s0)
    assert abs(exact_mean - base_mean) > 4 * mcse_mean or abs(exact_sd**2 - base_sd**2) > 4 * mcse_variance
