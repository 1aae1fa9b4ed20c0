"""Simulation-based calibration against conjugate models whose posteriors are sampled exactly.

Size: with the exact posterior the ranks are exactly uniform, so a check at family-wise level alpha = 0.01
(Bonferroni over the chi-square and KS tests of every scalar) fails with probability at most 0.01.
Power: for each deliberately wrong posterior the expected rank-bin probabilities are computed exactly
(Gauss-Hermite over the true value, a binomial over the draws), giving the chi-square noncentrality; each
test asserts that the chance of a miss is below 1e-9 before asserting that the check fails.
"""

import functools
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import stats

from ppgen.errors import PpgenError, SpecError
from ppgen.evaluate.sbc import SBCResult, default_num_bins, run_sbc
from ppgen.evaluate.sbc_plots import plot_rank_histograms

ALPHA = 0.01
REPLICATES, DRAWS = 1000, 99  # 20 bins of 5 ranks, 50 expected per bin
NUM_OBSERVATIONS = 10


# mu ~ N(0, 1), y_i ~ N(mu, 1), i = 1..10: mu | y ~ N(sum(y) / 11, 1 / 11).
def simulate_normal(seed: int):
    rng = np.random.default_rng(seed)
    mu = rng.normal()
    return {"mu": mu}, {"y": rng.normal(mu, 1.0, NUM_OBSERVATIONS)}


def fit_normal(data, seed: int, shift: float = 0.0, scale: float = 1.0, num_draws: int = DRAWS):
    """Exact posterior draws, or, with shift/scale, N(mean + shift * sd, (scale * sd)^2): a wrong one."""
    precision = 1.0 + len(data["y"])
    mean, sd = data["y"].sum() / precision, precision**-0.5
    return {"mu": np.random.default_rng(seed).normal(mean + shift * sd, scale * sd, num_draws)}


# p_j ~ Beta(2, 3), y_j ~ Binomial(20, p_j), j = 0, 1: p_j | y_j ~ Beta(2 + y_j, 3 + 20 - y_j).
def simulate_beta_binomial(seed: int):
    rng = np.random.default_rng(seed)
    p = rng.beta(2.0, 3.0, size=2)
    return {"p": p}, {"y": rng.binomial(20, p)}


def fit_beta_binomial(data, seed: int):
    y = data["y"]
    return {"p": np.random.default_rng(seed).beta(2.0 + y, 3.0 + 20 - y, size=(DRAWS, 2))}


# z ~ Bernoulli(0.3), y ~ N(2 z, 1): a discrete parameter, so draws tie with the true value.
def simulate_mixture(seed: int):
    rng = np.random.default_rng(seed)
    z = int(rng.random() < 0.3)
    return {"z": z}, {"y": rng.normal(2.0 * z, 1.0)}


def fit_mixture(data, seed: int):
    odds = 0.3 / 0.7 * np.exp(stats.norm.logpdf(data["y"], 2.0) - stats.norm.logpdf(data["y"], 0.0))
    return {"z": (np.random.default_rng(seed).random(DRAWS) < odds / (1 + odds)).astype(np.int64)}


@pytest.mark.parametrize(
    "simulate, fit, names",
    [
        (simulate_normal, fit_normal, ["mu"]),
        (simulate_beta_binomial, fit_beta_binomial, ["p[0]", "p[1]"]),
        (simulate_mixture, fit_mixture, ["z"]),
    ],
    ids=["normal", "beta-binomial", "discrete"],
)
def test_exact_posterior_passes(simulate, fit, names):
    result = run_sbc(simulate, fit, REPLICATES, DRAWS, seed=0, alpha=ALPHA)
    assert list(result.ranks) == names and result.num_replicates == REPLICATES and result.num_bins == 20
    assert result.passed, result.to_json()["parameters"]


def _bin_probabilities(shift: float, scale: float, num_bins: int = 20) -> np.ndarray:
    """Rank-bin probabilities when the draws come from N(m + shift * s, (scale * s)^2), the posterior being
    N(m, s^2): given the standardized true value Z, P(draw < true) = Phi((Z - shift) / scale) and the rank
    is Binomial(L, that); Z ~ N(0, 1) is integrated by 200-point Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    below = stats.norm.cdf((nodes - shift) / scale)
    rank_probabilities = weights / weights.sum() @ stats.binom.pmf(np.arange(DRAWS + 1), DRAWS, below[:, None])
    return np.add.reduceat(rank_probabilities, np.arange(num_bins) * (DRAWS + 1) // num_bins)


@pytest.mark.parametrize(
    "shift, scale",
    [(0.0, 0.5**0.5), (0.0, 2.0**0.5), (0.5, 1.0)],
    ids=["variance-halved", "variance-doubled", "mean-shifted-half-sd"],
)
def test_wrong_posterior_fails(shift, scale):
    # Noncentrality R * sum_b (p_b - 1/B)^2 / (1/B) is about 240, 143 and 260 for these three.
    probabilities = _bin_probabilities(shift, scale)
    noncentrality = REPLICATES * ((probabilities - 0.05) ** 2 / 0.05).sum()
    critical = stats.chi2.isf(ALPHA / 2, 19)  # one scalar, two tests: Bonferroni level alpha / 2
    assert stats.ncx2.cdf(critical, 19, noncentrality) < 1e-9  # the chance this test could miss
    fit = functools.partial(fit_normal, shift=shift, scale=scale)
    result = run_sbc(simulate_normal, fit, REPLICATES, DRAWS, seed=0, alpha=ALPHA)
    assert not result.passed
    assert result.uniformity["mu"].chi_square_p_value < ALPHA / 2


def test_ties_must_be_broken_at_random():
    # Counting only draws strictly below z gives rank 0 whenever z = 0 (70% of replicates), not 1%.
    result = run_sbc(simulate_mixture, fit_mixture, 200, DRAWS, seed=1)
    assert 0 < (result.ranks["z"] == 0).mean() < 0.1


def test_ranks_do_not_depend_on_executor_or_number_of_replicates():
    serial = run_sbc(simulate_normal, fit_normal, 12, DRAWS, seed=3)
    with ThreadPoolExecutor(max_workers=3) as executor:
        threaded = run_sbc(simulate_normal, fit_normal, 12, DRAWS, seed=3, executor=executor)
    fewer = run_sbc(simulate_normal, fit_normal, 5, DRAWS, seed=3)
    np.testing.assert_array_equal(threaded.ranks["mu"], serial.ranks["mu"])
    np.testing.assert_array_equal(fewer.ranks["mu"], serial.ranks["mu"][:5])
    assert not np.array_equal(run_sbc(simulate_normal, fit_normal, 12, DRAWS, seed=4).ranks["mu"], serial.ranks["mu"])


@pytest.mark.slow
def test_process_pool_gives_the_same_ranks_as_one_process():
    # Two spawned workers, each importing this module (and torch through ppgen.evaluate): a few seconds.
    fit = functools.partial(fit_normal, num_draws=2 * DRAWS)  # a partial pickles like a function
    serial = run_sbc(simulate_normal, fit, 6, DRAWS, seed=5)
    pooled = run_sbc(simulate_normal, fit, 6, DRAWS, seed=5, workers=2)
    np.testing.assert_array_equal(pooled.ranks["mu"], serial.ranks["mu"])


def simulate_fixed(seed: int):
    return {"theta": 10.5}, {}


def fit_arange(data, seed: int, num: int = 40):
    return {"theta": np.arange(num, dtype=float)}


@pytest.mark.parametrize(
    "thin, num_draws, rank",
    [
        (4, 10, 2),  # keeps 3, 7, ..., 39: two below 10.5
        (None, 10, 2),  # stride 40 // 10 = 4, the same draws
        (1, 10, 0),  # keeps 30..39
        (None, 40, 11),  # all draws: 0..10 below
        (13, 4, 1),  # keeps 0, 13, 26, 39
    ],
)
def test_thinning_keeps_the_last_draws_at_the_stride(thin, num_draws, rank):
    result = run_sbc(simulate_fixed, fit_arange, 1, num_draws, seed=0, thin=thin)
    assert result.ranks["theta"].tolist() == [rank]


def test_uniformity_statistics_by_hand():
    uniform = SBCResult({"a": np.tile(np.arange(10), 7)}, num_draws=9, num_bins=5)
    test = uniform.uniformity["a"]
    assert test.chi_square == 0.0 and test.chi_square_p_value == 1.0 and test.ks_statistic == 0.0
    assert test.ks_p_value == 1.0 and uniform.passed and uniform.p_value == 1.0
    # L = 3, ranks 0, 0, 1, 3: ECDF 2/4, 3/4, 3/4, 1 against 1/4, 2/4, 3/4, 1.
    skewed = SBCResult({"a": [0, 0, 1, 3]}, num_draws=3, num_bins=2)
    np.testing.assert_allclose(skewed.uniformity["a"].ks_statistic, 0.25)
    assert skewed.bin_counts("a").tolist() == [3, 1]
    chi_square = stats.chisquare([3, 1], [2, 2])
    np.testing.assert_allclose(skewed.uniformity["a"].chi_square, chi_square.statistic)
    np.testing.assert_allclose(skewed.uniformity["a"].chi_square_p_value, chi_square.pvalue)
    # L + 1 = 7 ranks in 3 bins: widths 2, 2, 3 and expected counts to match.
    uneven = SBCResult({"a": np.arange(7)}, num_draws=6, num_bins=3)
    assert uneven.bin_edges.tolist() == [0, 2, 4, 7] and uneven.bin_counts("a").tolist() == [2, 2, 3]
    assert uneven.uniformity["a"].chi_square == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    "replicates, draws, bins", [(1000, 99, 20), (100, 99, 10), (1000, 100, 20), (30, 9, 2), (5, 9, 1), (1000, 4, 5)]
)
def test_default_num_bins(replicates, draws, bins):
    assert default_num_bins(replicates, draws) == bins


def test_json_round_trip_and_plot(tmp_path):
    result = run_sbc(simulate_beta_binomial, fit_beta_binomial, 60, DRAWS, seed=2)
    summary = json.loads(json.dumps(result.to_json()))
    assert summary["passed"] == result.passed and set(summary["parameters"]) == {"p[0]", "p[1]"}
    again = SBCResult.from_json(summary)
    assert (
        again.uniformity == result.uniformity and again.num_bins == result.num_bins == 5
    )  # R / 10 = 6; 5 divides L + 1 = 100
    path = tmp_path / "sbc.png"
    plot_rank_histograms(result, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def fit_missing(data, seed):
    return {"sigma": np.zeros(DRAWS)}


def fit_wrong_shape(data, seed):
    return {"mu": np.zeros((DRAWS, 2))}


def fit_nan(data, seed):
    return {"mu": np.full(DRAWS, np.nan)}


@pytest.mark.parametrize(
    "fit, num_draws, error, message",
    [
        (fit_missing, DRAWS, SpecError, "no draws of parameter 'mu'"),
        (fit_wrong_shape, DRAWS, SpecError, "draws of 'mu' have shape"),
        (fit_nan, DRAWS, PpgenError, "non-finite true value or draws of parameter 'mu'"),
        (fit_normal, DRAWS + 1, SpecError, "fewer than num_draws=100"),
    ],
)
def test_fit_mistakes_name_the_parameter_and_replicate(fit, num_draws, error, message):
    with pytest.raises(error, match=message) as raised:
        run_sbc(simulate_normal, fit, 3, num_draws, seed=0)
    assert any("SBC replicate 0" in note for note in raised.value.__notes__)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"num_replicates": 0}, "num_replicates must be an integer >= 1"),
        ({"num_draws": 0}, "num_draws must be an integer >= 1"),
        ({"thin": 0}, "thin must be None or an integer >= 1"),
        ({"workers": 2, "executor": ThreadPoolExecutor(1)}, "either workers or executor"),
        ({"alpha": 1.5}, "alpha must lie in"),
        ({"num_bins": 101}, "num_bins must lie in 1..100"),
    ],
)
def test_bad_settings_raise_spec_errors(options, message):
    settings = {"num_replicates": 3, "num_draws": DRAWS, "seed": 0, **options}
    with pytest.raises(SpecError, match=message):
        run_sbc(simulate_normal, fit_normal, **settings)
