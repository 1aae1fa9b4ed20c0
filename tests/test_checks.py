"""Posterior checks against exact answers: convergence warnings, posterior predictive p-values, LOO/WAIC, plots.

Like tests/test_inference_data.py, this file needs no torch, so `.ci/arviz1` also runs it against ArviZ 1.x.
"""

import math

import numpy as np
import pytest
from scipy import stats

from ppgen.errors import DataError, SpecError
from ppgen.evaluate import check_plots, checks, elpd, inference_data
from ppgen.evaluate.inference_data import SUMMARY_COLUMNS, build_inference_data

CHAINS, DRAWS = 4, 1000
S = CHAINS * DRAWS


def iid_normal(seed: int, shape: tuple[int, ...] = ()) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(CHAINS, DRAWS, *shape))


# --------------------------------------------------------------------------------------------------------- summary


def test_well_mixed_iid_draws_give_no_warning():
    results = build_inference_data(
        {"mu": iid_normal(0), "theta": iid_normal(1, (3,))},
        sample_stats={"diverging": np.zeros((CHAINS, DRAWS), dtype=bool)},
    )
    table, warnings = checks.summarize(results)
    assert tuple(table.columns) == SUMMARY_COLUMNS
    assert list(table.index) == ["mu", "theta[0]", "theta[1]", "theta[2]"]
    assert warnings == []
    # ESS of iid draws is close to S (its estimate has sd ~ 0.04 S here: 0.2 S is 5 sd).
    assert np.all(np.abs(table["ess_bulk"] / S - 1) < 0.2)
    assert checks.format_summary(table, warnings).endswith("No warnings.\n")


def test_chains_with_shifted_means_warn_about_r_hat():
    # Chain means 0, 0, 0, 1 with unit sd: R-hat ~ sqrt(1 + var(chain means)) ~ 1.09, far above 1.01.
    shifted = iid_normal(2) + np.array([0.0, 0.0, 0.0, 1.0])[:, None]
    results = build_inference_data({"mu": shifted, "tau": iid_normal(3)})
    table, warnings = checks.summarize(results)
    assert table.loc["mu", "r_hat"] > 1.05
    r_hat_lines = [line for line in warnings if "R-hat" in line]
    assert len(r_hat_lines) == 1 and r_hat_lines[0].startswith("mu: R-hat")
    assert not any(line.startswith("tau") for line in warnings)


def test_autocorrelated_draws_warn_about_ess():
    # AR(1) with rho = 0.99 has ESS = S (1 - rho) / (1 + rho) = 20 << 100 per chain x 4 = 400.
    rho, noise = 0.99, iid_normal(4, (2,))
    draws = np.zeros_like(noise)
    for t in range(1, DRAWS):
        draws[:, t] = rho * draws[:, t - 1] + math.sqrt(1 - rho**2) * noise[:, t]
    _, warnings = checks.summarize(build_inference_data({"z": draws}))
    assert any(line.startswith("z: bulk ESS") and "in 2 of 2 elements (z[0], z[1])" in line for line in warnings)
    assert any(line.startswith("z: tail ESS") and "< 400" in line for line in warnings)


def test_divergences_are_counted():
    diverging = np.zeros((CHAINS, DRAWS), dtype=bool)
    diverging[1, [5, 50, 500]] = True
    results = build_inference_data({"mu": iid_normal(5)}, sample_stats={"diverging": diverging})
    table, warnings = checks.summarize(results)
    assert warnings == [
        "sampler: 3 divergent transitions (0.07% of 4000 draws): the posterior may be biased; "
        "reparameterize or raise target_accept_prob"
    ]
    text = checks.format_summary(table, warnings)
    assert "mu" in text and "\nWarnings:\n- sampler: 3 divergent transitions" in text


def healthy_sample_stats(seed: int) -> dict[str, np.ndarray]:
    """Sample stats of a sound NUTS run: depths 3-5 of 10, one step size 0.5 per chain, iid energies (E-BFMI ~ 2)."""
    rng = np.random.default_rng(seed)
    return {
        "diverging": np.zeros((CHAINS, DRAWS), dtype=bool),
        "tree_depth": rng.integers(3, 6, size=(CHAINS, DRAWS)),
        "step_size": np.full((CHAINS, DRAWS), 0.5),
        "energy": rng.normal(size=(CHAINS, DRAWS)),
    }


def sampler_warnings(sample_stats: dict[str, np.ndarray], max_tree_depth: int | None = 10) -> list[str]:
    results = build_inference_data({"mu": iid_normal(20)}, sample_stats=sample_stats)
    return checks.summarize(results, max_tree_depth=max_tree_depth)[1]


def test_a_sound_sampler_gives_no_sampler_warning():
    assert sampler_warnings(healthy_sample_stats(21)) == []


def test_draws_at_the_maximum_tree_depth_warn_above_one_percent():
    sample_stats = healthy_sample_stats(22)
    sample_stats["tree_depth"][0, :40] = 10  # 40 of 4000 draws: exactly 1%, not above it
    assert sampler_warnings(sample_stats) == []
    sample_stats["tree_depth"][0, 40] = 10
    assert sampler_warnings(sample_stats) == [
        "sampler: 41 transitions (1.03% of 4000 draws) hit the maximum tree depth 10: their trajectories were cut "
        "short and the chains explore slowly; raise inference.max_tree_depth, or reparameterize; a dense mass matrix "
        "(inference.mass = 'dense') helps correlated posteriors"
    ]
    assert sampler_warnings(sample_stats, max_tree_depth=11) == []  # compared with the setting, not the data
    assert sampler_warnings(sample_stats, max_tree_depth=None) == []  # no setting, no check


@pytest.mark.parametrize(
    "step_sizes, collapsed",
    [((0.5, 0.4, 0.6, 5e-4), "3"), ((0.5, 0.04, 0.6, 0.45), "1"), ((2e-4, 5e-4, 3e-4, 4e-4), "0, 1, 2, 3")],
)
def test_a_collapsed_step_size_warns(step_sizes, collapsed):
    sample_stats = healthy_sample_stats(23)
    sample_stats["step_size"] = np.repeat(np.array(step_sizes)[:, None], DRAWS, axis=1)
    (line,) = sampler_warnings(sample_stats)
    assert line.startswith(f"sampler: the adapted step size collapsed in chains {collapsed} (smallest ")
    assert line.endswith("reparameterize, check for funnels (non-centred scales), or raise inference.num_warmup")


def test_step_sizes_within_tenfold_of_the_median_chain_are_fine():
    sample_stats = healthy_sample_stats(24)
    sample_stats["step_size"] = np.repeat(np.array([0.5, 0.06, 0.6, 0.45])[:, None], DRAWS, axis=1)
    assert sampler_warnings(sample_stats) == []


def test_small_langevin_step_sizes_are_not_hamiltonian_collapse():
    # SGLD's steps are 1e-4 by design; without ``diverging`` the stats are not from HMC or NUTS.
    step_size = np.full((CHAINS, DRAWS), 1e-4)
    assert sampler_warnings({"step_size": step_size}) == []
    assert len(sampler_warnings({"step_size": step_size, "diverging": np.zeros((CHAINS, DRAWS), dtype=bool)})) == 1


def test_bfmi_matches_a_hand_computation():
    energy = np.array([[1.0, 3.0, 2.0, 6.0], [0.0, 1.0, 2.0, 3.0]])
    # chain 0: mean 3, squared deviations 4 + 0 + 1 + 9 = 14, squared steps 4 + 1 + 16 = 21 -> 1.5;
    # chain 1: mean 1.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, squared steps 3 -> 0.6.
    np.testing.assert_allclose(checks.bfmi(energy), [1.5, 0.6], rtol=1e-15)


def test_low_bfmi_warns_for_its_chains():
    # A random walk in energy: steps of sd 0.1 against a spread of order sqrt(DRAWS) * 0.1, so E-BFMI << 0.3.
    sample_stats = healthy_sample_stats(25)
    sample_stats["energy"][2] = np.cumsum(np.random.default_rng(26).normal(0, 0.1, size=DRAWS))
    values = checks.bfmi(sample_stats["energy"])
    assert values[2] < 0.05 and np.all(np.delete(values, 2) > 1.5)  # iid draws: E-BFMI ~ 2
    assert sampler_warnings(sample_stats) == [
        f"sampler: E-BFMI {values[2]:.2f} < 0.3 in chains 2: the momentum resampling explores the energy poorly; "
        "reparameterize (e.g. non-centred) or use a dense mass matrix (inference.mass = 'dense')"
    ]


def test_summary_of_chosen_variables():
    results = build_inference_data({"mu": iid_normal(0), "tau": iid_normal(1)})
    table, _ = checks.summarize(results, var_names=["tau"])
    assert list(table.index) == ["tau"]
    with pytest.raises(SpecError, match="unknown variable 'sigma'"):
        checks.summarize(results, var_names=["sigma"])


# ------------------------------------------------------------------------------------ posterior predictive checks


def test_p_value_is_the_fraction_of_replicates_above_the_observed_statistic_with_ties_counted_half():
    replicated = np.array([[[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])  # [chain 1, draw 4, 2 points]
    results = build_inference_data(
        {"mu": np.zeros((1, 4))}, observed_data={"y": np.array([0.0, 2.0])}, posterior_predictive={"y": replicated}
    )
    result, _ = checks.ppc(results, statistics=("mean", "fraction_zeros"))
    # means 0, 1, 2, 3 against 1: two above, one tie; fractions of zeros 1, 0, 0, 0 against 0.5: one above
    assert result["y"]["mean"] == {"observed": 1.0, "replicated_mean": 1.5, "p_value": 0.625}
    assert result["y"]["fraction_zeros"] == {"observed": 0.5, "replicated_mean": 0.25, "p_value": 0.25}


def test_a_statistic_every_replicate_ties_raises_no_alarm():
    """Binary outcomes: the maximum is 1 in the data and in every replicate, which says nothing about the model."""
    rng = np.random.default_rng(8)
    y, y_rep = rng.binomial(1, 0.5, size=50), rng.binomial(1, 0.5, size=(CHAINS, 100, 50))
    results = build_inference_data(
        {"mu": np.zeros((CHAINS, 100))}, observed_data={"y": y}, posterior_predictive={"y": y_rep}
    )
    result, warnings = checks.ppc(results, statistics=("max", "min"))
    assert result["y"]["max"]["p_value"] == result["y"]["min"]["p_value"] == 0.5
    assert warnings == []


def quantile_sample(n: int) -> np.ndarray:
    """The n quantiles (i - 1/2) / n of N(0, 1): a data set whose statistics are typical of N(0, 1) samples."""
    return stats.norm.ppf((np.arange(1, n + 1) - 0.5) / n)


def test_replicates_from_the_true_model_give_the_exact_p_values():
    n, draws = 100, 500
    y = quantile_sample(n)
    y_rep = np.random.default_rng(6).normal(size=(CHAINS, draws, n))
    results = build_inference_data(
        {"mu": np.zeros((CHAINS, draws))}, observed_data={"y": y}, posterior_predictive={"y": y_rep}
    )
    result, warnings = checks.ppc(results)
    # Exact p-values for y_rep ~ N(0, 1)^n: P(mean >= 0) = 1/2; n sd^2 ~ chi2(n - 1); P(min >= a) = (1 - Phi(a))^n;
    # P(max >= b) = 1 - Phi(b)^n. Each estimate is a mean of 2000 indicators: |error| < 4 sqrt(p (1 - p) / 2000).
    exact = {
        "mean": 0.5,
        "sd": stats.chi2.sf(n * np.std(y) ** 2, n - 1),
        "min": stats.norm.sf(y.min()) ** n,
        "max": 1 - stats.norm.cdf(y.max()) ** n,
    }
    for name, p in exact.items():
        assert abs(result["y"][name]["p_value"] - p) < 4 * math.sqrt(p * (1 - p) / y_rep[..., 0].size), name
    assert warnings == []


def test_a_model_with_too_small_a_spread_fails_the_sd_check():
    n, draws = 100, 500
    y_rep = 0.5 * np.random.default_rng(7).normal(size=(CHAINS, draws, n))
    results = build_inference_data(
        {"mu": np.zeros((CHAINS, draws))}, observed_data={"y": quantile_sample(n)}, posterior_predictive={"y": y_rep}
    )
    result, warnings = checks.ppc(results, statistics=("mean", "sd"))
    # sd of 100 draws of N(0, 0.5^2) exceeding the observed 0.99 is a chi2(99) tail beyond 392: p ~ 1e-38.
    assert result["y"]["sd"]["p_value"] == 0.0
    assert len(warnings) == 1 and warnings[0].startswith("y: posterior predictive p-value of sd is 0.000")


def test_ppc_mistakes_are_reported():
    results = build_inference_data({"mu": np.zeros((1, 4))}, observed_data={"y": np.zeros(2)})
    with pytest.raises(SpecError, match="unknown test statistic 'mode'"):
        checks.ppc(results, statistics=("mode",))
    with pytest.raises(DataError, match="no 'posterior_predictive' group"):
        checks.ppc(results)


# ------------------------------------------------------------------------------------------------------- LOO, WAIC


class ConjugateNormal:
    """y_i ~ N(mu, sigma^2) with mu ~ N(m0, s0^2) and sigma known: every predictive density is Normal.

    Posterior given n points: precision 1/s0^2 + n/sigma^2, mean (m0/s0^2 + sum y / sigma^2) / precision; the
    predictive density of a new point is N(mean, sigma^2 + 1/precision) (BDA3, section 2.5).
    """

    def __init__(self, y: np.ndarray, sigma: float = 1.0, m0: float = 0.0, s0: float = 3.0):
        self.y, self.sigma, self.m0, self.s0 = y, sigma, m0, s0

    def posterior(self, total: np.ndarray | float, count: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
        precision = 1 / self.s0**2 + count / self.sigma**2
        return (self.m0 / self.s0**2 + total / self.sigma**2) / precision, 1 / precision

    def results(self, seed: int, shift: float = 0.0):
        """Exact posterior draws of mu (shifted by ``shift`` to make a wrong model) and their log-likelihoods."""
        mean, variance = self.posterior(self.y.sum(), self.y.size)
        mu = np.random.default_rng(seed).normal(mean, math.sqrt(variance), size=(CHAINS, DRAWS)) + shift
        log_likelihood = stats.norm.logpdf(self.y, mu[..., None], self.sigma)
        return build_inference_data({"mu": mu}, log_likelihood={"y": log_likelihood}), log_likelihood.reshape(S, -1)

    def exact_elpd_loo(self) -> float:
        """sum_i log p(y_i | y_-i), each a Normal predictive density given the other n - 1 points."""
        mean, variance = self.posterior(self.y.sum() - self.y, self.y.size - 1)
        return float(stats.norm.logpdf(self.y, mean, np.sqrt(self.sigma**2 + variance)).sum())

    def exact_elpd_waic(self) -> float:
        """sum_i log p(y_i | y) - Var_post log p(y_i | mu) (arXiv:1507.04544, eq. 12), in closed form:
        with d = y_i - mu ~ N(a, v) a posteriori, Var(d^2 / (2 sigma^2)) = (2 v^2 + 4 a^2 v) / (4 sigma^4)."""
        mean, variance = self.posterior(self.y.sum(), self.y.size)
        lppd = stats.norm.logpdf(self.y, mean, math.sqrt(self.sigma**2 + variance))
        offset = self.y - mean
        return float((lppd - (2 * variance**2 + 4 * offset**2 * variance) / (4 * self.sigma**4)).sum())


@pytest.fixture(scope="module")
def conjugate() -> ConjugateNormal:
    return ConjugateNormal(np.random.default_rng(8).normal(1.0, 1.0, size=20))


def test_psis_loo_matches_the_exact_leave_one_out_density(conjugate):
    results, log_likelihood = conjugate.results(seed=9)
    summary, warnings = checks.loo(results)
    # Monte Carlo error of the importance-sampling estimate sum_i -log mean_s r_is with r_is = 1 / p(y_i | mu_s),
    # by the delta method over iid draws: psi_s = -sum_i (r_is / mean_s r_is - 1), MCSE = sd(psi) / sqrt(S).
    # (PSIS only smooths the largest ratios; with every k < 0.5 its difference from plain IS is far below this.)
    ratios = np.exp(-(log_likelihood - log_likelihood.max(axis=0)))
    mcse = np.std(-(ratios / ratios.mean(axis=0) - 1).sum(axis=1)) / math.sqrt(S)
    assert mcse < 0.05 * summary["se"]  # the check is much sharper than the spread over data points
    assert abs(summary["elpd_loo"] - conjugate.exact_elpd_loo()) < 4 * mcse
    assert summary["pareto_k"] == {"good": 20, "bad": 0, "very_bad": 0} and summary["max_k"] < 0.5
    assert summary["num_data"] == 20 and summary["num_samples"] == S
    assert warnings == []


def test_waic_matches_its_closed_form(conjugate):
    results, log_likelihood = conjugate.results(seed=10)
    summary, warnings = checks.waic(results)
    # Delta-method MCSE over iid draws of sum_i [log mean_s p_is - var_s l_is], with l_is = log p(y_i | mu_s):
    # psi_s = sum_i [p_is / mean_s p_is - 1 - ((l_is - mean l_i)^2 - var l_i)].
    centred = log_likelihood - log_likelihood.mean(axis=0)
    density = np.exp(log_likelihood - log_likelihood.max(axis=0))
    psi = (density / density.mean(axis=0) - 1 - (centred**2 - (centred**2).mean(axis=0))).sum(axis=1)
    assert abs(summary["elpd_waic"] - conjugate.exact_elpd_waic()) < 4 * np.std(psi) / math.sqrt(S)
    assert warnings == []


def test_high_pareto_k_warns():
    # One point at 8 under N(mu, 0.5^2) with mu ~ N(0, 1): the ratios exp((8 - mu)^2 / 0.5) have no finite variance.
    mu = iid_normal(11)
    log_likelihood = stats.norm.logpdf(np.array([8.0, 0.0, 0.5]), mu[..., None], 0.5)
    summary, warnings = checks.loo(build_inference_data({"mu": mu}, log_likelihood={"y": log_likelihood}))
    assert summary["pareto_k"]["good"] < 3 and summary["max_k"] > 0.7
    assert len(warnings) == 1 and warnings[0].startswith("loo: ") and "Pareto k > 0.70" in warnings[0]


def conjugate_checked(y: np.ndarray, sigma: float, seed: int):
    """Exact posterior draws of the conjugate model with noise scale ``sigma``, their replicates and log-likelihoods."""
    model = ConjugateNormal(y, sigma=sigma)
    results, log_likelihood = model.results(seed)
    mu = inference_data.get_group(results, "posterior")["mu"].values
    return build_inference_data(
        {"mu": mu},
        observed_data={"y": y},
        posterior_predictive={"y": np.random.default_rng(seed).normal(mu[..., None], sigma, size=(*mu.shape, y.size))},
        log_likelihood={"y": log_likelihood.reshape(*mu.shape, y.size)},
    )


def test_loo_pit_of_the_true_model_is_uniform_and_of_a_too_narrow_one_is_not():
    y = np.random.default_rng(30).normal(1.0, 1.0, size=100)
    summary, warnings = checks.loo_pit(conjugate_checked(y, sigma=1.0, seed=31))
    # The true model: LOO-PIT values are uniform up to PSIS error, and the KS test fails only with probability 0.01.
    assert summary["num_data"] == 100 and summary["p_value"] > checks.LOO_PIT_ALPHA and warnings == []
    # Predictive sd 0.3 against data sd 1: |y_i - mu| > 0.3 * 1.645 for most points, so most PIT values lie in the
    # outer 10% tails (a U shape): KS D ~ 0.3, p ~ 1e-7 for n = 100.
    summary, warnings = checks.loo_pit(conjugate_checked(y, sigma=0.3, seed=32))
    assert summary["p_value"] < 1e-6
    (line,) = warnings
    assert line.startswith("y: LOO-PIT values are not uniform (Kolmogorov-Smirnov p = ") and "too narrow" in line


def test_loo_pit_is_not_tested_for_a_discrete_likelihood():
    rng = np.random.default_rng(33)
    rate = rng.gamma(20.0, 0.1, size=(CHAINS, 100))
    y = rng.poisson(2.0, size=30)
    results = build_inference_data(
        {"rate": rate},
        observed_data={"y": y},
        posterior_predictive={"y": rng.poisson(rate[..., None], size=(CHAINS, 100, 30))},
        log_likelihood={"y": stats.poisson.logpmf(y, rate[..., None])},
    )
    assert checks.loo_pit(results) == ({}, [])


def test_compare_ranks_the_correct_model_first(conjugate):
    correct, _ = conjugate.results(seed=12)
    wrong, _ = conjugate.results(seed=13, shift=-2.0)  # mu two sigma off: every point is badly predicted
    table = checks.compare({"wrong": wrong, "correct": correct})
    assert list(table.index) == ["correct", "wrong"]
    assert table.loc["wrong", "elpd_diff"] > 4 * table.loc["wrong", "dse"]
    assert table.loc["correct", "weight"] > table.loc["wrong", "weight"]


def test_compare_weights_are_the_stacking_weights():
    """Half the data near 0, half near 3; one model predicts each half well and the other badly. Ranking by elpd
    would put almost all weight on one; stacking (Yao et al. 2018, arXiv:1704.02030) mixes them, with the weights
    that maximize sum_i log sum_k w_k exp(elpd_loo_ik)."""
    y = np.concatenate([np.random.default_rng(40).normal(0.0, 1.0, 15), np.random.default_rng(41).normal(3.0, 1.0, 25)])
    named = {}
    for name, centre in (("low", 0.0), ("high", 3.0)):
        mu = np.random.default_rng(42).normal(centre, 0.1, size=(CHAINS, DRAWS))
        named[name] = build_inference_data({"mu": mu}, log_likelihood={"y": stats.norm.logpdf(y, mu[..., None], 1.0)})
    table = checks.compare(named)
    weights = table["weight"]
    assert abs(weights.sum() - 1) < 1e-6 and 0.2 < weights["low"] < 0.8
    pointwise = np.stack([elpd.loo(named[name]).pointwise for name in ("low", "high")])  # [model, point]

    def objective(w_low: np.ndarray) -> np.ndarray:
        mixed = w_low[:, None] * np.exp(pointwise[0]) + (1 - w_low[:, None]) * np.exp(pointwise[1])
        return np.log(mixed).sum(axis=1)

    grid = np.linspace(0.0, 1.0, 10001)  # the maximum of this concave objective lies within 1e-4 of a grid point
    assert abs(grid[np.argmax(objective(grid))] - weights["low"]) < 2e-3
    assert objective(np.array([weights["low"]]))[0] >= objective(grid).max() - 1e-6


# ----------------------------------------------------------------------------------------------------------- plots


def test_plot_checks_writes_every_plot(tmp_path):
    rng = np.random.default_rng(14)
    draws = (CHAINS, 100)
    results = build_inference_data(
        {"mu": rng.normal(size=draws), "z": rng.normal(size=(*draws, 50))},  # z is cut to its first 4 elements
        sample_stats={"diverging": rng.random(draws) < 0.02},
        observed_data={"y": rng.normal(size=10)},
        posterior_predictive={"y": rng.normal(size=(*draws, 10))},
        log_likelihood={"y": stats.norm.logpdf(rng.normal(size=(*draws, 10)))},
    )
    written = check_plots.plot_checks(results, tmp_path)
    assert [path.name for path in written] == ["trace.png", "rank.png", "ppc.png", "pareto_k.png", "loo_pit.png"]
    assert all(path.read_bytes()[:4] == b"\x89PNG" for path in written)
    with pytest.raises(SpecError, match="unknown posterior variable 'w'"):
        check_plots.plot_trace(results, tmp_path / "w.png", var_names=["w"])


def saved_figures(monkeypatch) -> list:
    """The figures the plots save from now on (kept for inspection after they are written and closed)."""
    from ppgen.evaluate import arviz_plots

    figures, save = [], arviz_plots._save_figure
    monkeypatch.setattr(
        arviz_plots, "_save_figure", lambda figure, path: (figures.append(figure), save(figure, path))[1]
    )
    return figures


@pytest.mark.parametrize(
    "draws, plots",
    [
        (1, ["ppc.png"]),
        (5, ["trace.png", "ppc.png"]),  # a rank plot compares chains: none for one
        (20, ["trace.png", "ppc.png"]),  # too few draws for PSIS-LOO's tail fit
        (30, ["trace.png", "ppc.png", "pareto_k.png", "loo_pit.png"]),
    ],
)
def test_plots_adapt_to_small_runs(draws, plots, tmp_path):
    """One chain of 20 draws once died in the posterior predictive plot; 1 draw in LOO's tail fit; one chain in
    ArviZ 1.x's rank plot."""
    rng = np.random.default_rng(15)
    shape = (1, draws)
    results = build_inference_data(
        {"mu": rng.normal(size=shape)},
        observed_data={"y": rng.normal(size=10)},
        posterior_predictive={"y": rng.normal(size=(*shape, 10))},
        log_likelihood={"y": stats.norm.logpdf(rng.normal(size=(*shape, 10)))},
    )
    assert [path.name for path in check_plots.plot_checks(results, tmp_path)] == plots
    summary, warnings = checks.loo(results)
    if draws < checks.MIN_LOO_DRAWS:
        assert summary == {} and warnings[0].startswith(f"loo: skipped, {draws} posterior draws are too few")
    else:
        assert summary["num_samples"] == draws


def test_trace_titles_clear_the_axes_above(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    posterior = {"mu": iid_normal(16), "tau": iid_normal(17), "theta": iid_normal(18, (4,)), "z": iid_normal(19, (4,))}
    check_plots.plot_trace(build_inference_data(posterior), tmp_path / "trace.png")
    (figure,) = figures
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(figure).get_renderer()  # closing the figure took its canvas
    figure.draw(renderer)
    for axes in figure.axes:
        title = axes.title.get_window_extent(renderer)
        for other in figure.axes:
            if other is not axes and axes.title.get_text():
                assert not title.overlaps(other.get_tightbbox(renderer)), (axes.title.get_text(), other.get_title())


def test_binary_and_count_data_get_a_bar_plot(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    rng = np.random.default_rng(20)
    y, y_rep = rng.poisson(2.0, size=30), rng.poisson(2.0, size=(CHAINS, 50, 30))
    results = build_inference_data(
        {"rate": rng.gamma(2.0, size=(CHAINS, 50))}, observed_data={"y": y}, posterior_predictive={"y": y_rep}
    )
    check_plots.plot_ppc(results, tmp_path / "ppc.png")
    (axes,) = figures[0].axes
    values = np.arange(min(y.min(), y_rep.min()), max(y.max(), y_rep.max()) + 1)
    heights = [patch.get_height() for patch in axes.patches]
    assert heights == [np.sum(y == value) for value in values]  # a bar per value: the observed count
    assert axes.get_xlabel() == "y" and not [line for line in axes.lines if len(line.get_xdata()) > len(values)]


def test_the_pareto_k_plot_shows_the_threshold(tmp_path, monkeypatch):
    figures = saved_figures(monkeypatch)
    rng = np.random.default_rng(21)
    results = build_inference_data(
        {"mu": iid_normal(22)}, log_likelihood={"y": stats.norm.logpdf(rng.normal(size=(CHAINS, DRAWS, 10)))}
    )
    check_plots.plot_pareto_k(results, tmp_path / "pareto_k.png")
    levels = {tuple(line.get_ydata()) for line in figures[0].axes[0].lines}
    assert (0.7, 0.7) in levels and (1.0, 1.0) in levels  # S = 4000 draws: good k is 0.7


def test_the_summary_prints_the_posterior_predictive_p_values_and_loo(conjugate):
    results, log_likelihood = conjugate.results(seed=23)
    mu = inference_data.get_group(results, "posterior")["mu"].values
    replicated = np.random.default_rng(24).normal(mu[..., None], conjugate.sigma, size=(*mu.shape, conjugate.y.size))
    results = build_inference_data(
        {"mu": mu},
        observed_data={"y": conjugate.y},
        posterior_predictive={"y": replicated},
        log_likelihood={"y": log_likelihood.reshape(replicated.shape)},
    )
    table, warnings = checks.summarize(results)
    ppc, _ = checks.ppc(results)
    loo, _ = checks.loo(results)
    text = checks.format_summary(table, warnings, ppc, loo)
    p_values = ", ".join(f"{name} {ppc['y'][name]['p_value']:.3f}" for name in ("mean", "sd", "min", "max"))
    assert f"  y: {p_values}\n" in text
    assert f"PSIS-LOO: elpd_loo {loo['elpd_loo']:.2f} (se {loo['se']:.2f}), p_loo {loo['p_loo']:.2f}" in text
    assert "20 good (<= 0.70), 0 bad, 0 very bad (> 1)" in text
    assert checks.format_summary(table, warnings) == checks.format_summary(table, warnings, {}, {})


def test_the_rank_plot_leaves_out_discrete_variables(tmp_path):
    rng = np.random.default_rng(25)
    results = build_inference_data({"mu": iid_normal(26), "z": rng.integers(0, 2, size=(CHAINS, DRAWS))})
    assert check_plots.plot_rank(results, tmp_path / "rank.png").read_bytes()[:4] == b"\x89PNG"


def test_the_summary_prints_loo_pit_and_sensitivity():
    """A sensitivity table without any diagnosis once failed: pandas refused to fill a float column with text."""
    table, _ = checks.summarize(build_inference_data({"mu": iid_normal(50)}))
    loo_pit = {"ks_statistic": 0.061, "p_value": 0.818, "num_data": 100}
    quiet = {"mu": {"prior": 0.01, "likelihood": 0.2, "diagnosis": None}}
    text = checks.format_summary(table, [], loo_pit=loo_pit, sensitivity=quiet)
    assert "LOO-PIT uniformity: Kolmogorov-Smirnov D 0.061, p = 0.818 (miscalibrated below 0.01)" in text
    assert "\nmu  0.010       0.200         -\n" in text
    loud = {**quiet, "tau": {"prior": 0.1, "likelihood": 0.01, "diagnosis": "strong prior / weak likelihood"}}
    assert "\ntau  0.100       0.010  strong prior / weak likelihood\n" in checks.format_summary(
        table, [], sensitivity=loud
    )


def test_the_summary_lists_the_most_sensitive_parameters_first_and_counts_the_rest():
    # 14 parameters, theta[i] with prior sensitivity i / 100 and none diagnosed but theta[2]: the table shows
    # theta[2] first, then the nine largest of the others, and says that four more are in metrics.json.
    table, _ = checks.summarize(build_inference_data({"mu": iid_normal(51)}))
    values = {f"theta[{i}]": {"prior": i / 100, "likelihood": 0.0, "diagnosis": None} for i in range(14)}
    values["theta[2]"]["diagnosis"] = "strong prior / weak likelihood"
    text = checks.format_summary(table, [], sensitivity=values)
    lines = text.split("Power-scaling sensitivity")[1].splitlines()[2:]
    assert [line.split()[0] for line in lines[: checks.SENSITIVITY_ROWS]] == [
        "theta[2]",
        *(f"theta[{i}]" for i in range(13, 4, -1)),
    ]
    assert lines[checks.SENSITIVITY_ROWS] == "(4 more parameters in metrics.json)"


def test_interval_coverage_counts_the_points_inside_their_central_interval():
    # Replicates evenly spread over [0, 1] at every point: the central 90% interval is [0.05, 0.95] (linear
    # interpolation between draws), which holds 0.5 and 0.06 but not 0.01, 0.99 or 2.
    spread = np.repeat(np.linspace(0.0, 1.0, 1001)[:, None], 5, axis=1)[None]  # [chain 1, draw 1001, 5 points]
    results = build_inference_data(
        {"mu": np.zeros((1, 1001))},
        observed_data={"y": np.array([0.5, 0.06, 0.01, 0.99, 2.0]), "b": np.array([0, 1])},
        posterior_predictive={"y": spread, "b": np.random.default_rng(60).integers(0, 2, size=(1, 1001, 2))},
    )
    coverage = checks.interval_coverage(results)
    assert coverage == {"y": {"prob": 0.9, "covered": 2, "num_data": 5, "share": 0.4}}  # binary b: left out
