"""The ArviZ adapter: building results from numpy, NetCDF round trips, and the statistics and plot wrappers.

This file needs only numpy, xarray, ArviZ and matplotlib (no torch, no conftest fixtures), so `.ci/arviz1` runs it
unchanged against ArviZ 1.x on Python 3.12.
"""

import math

import numpy as np
import pytest
from scipy.special import logsumexp

from ppgen.errors import DataError, SpecError
from ppgen.evaluate import arviz_plots, elpd, inference_data

CHAINS, DRAWS, N = 4, 1000, 10


@pytest.fixture(scope="module")
def arrays() -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return {
        "posterior": {"mu": rng.normal(size=(CHAINS, DRAWS)), "theta": rng.normal(size=(CHAINS, DRAWS, 3))},
        "sample_stats": {
            "diverging": rng.random((CHAINS, DRAWS)) < 0.01,
            "acceptance_rate": rng.random((CHAINS, DRAWS)),
            "step_size": np.full((CHAINS, DRAWS), 0.3),
            "tree_depth": rng.integers(1, 6, size=(CHAINS, DRAWS)),
            "lp": rng.normal(size=(CHAINS, DRAWS)),
        },
        "observed_data": {"y": rng.normal(size=N)},
        "constant_data": {"x": rng.normal(size=(N, 2)), "scale": np.asarray(2.0)},
        "posterior_predictive": {"y": rng.normal(size=(CHAINS, DRAWS, N))},
        "log_likelihood": {"y": -1.0 - 0.5 * rng.normal(size=(CHAINS, DRAWS, N)) ** 2},
        "log_prior": {"mu": rng.normal(size=(CHAINS, DRAWS)), "theta": rng.normal(size=(CHAINS, DRAWS, 3))},
        "prior": {"mu": rng.normal(size=(1, 200))},
        "prior_predictive": {"y": rng.normal(size=(1, 200, N))},
    }


@pytest.fixture(scope="module")
def results(arrays):
    return inference_data.build_inference_data(
        **arrays, dims={"theta": ["school"], "y": ["obs"], "x": ["obs"]}, coords={"school": ["a", "b", "c"]}
    )


def test_every_group_keeps_its_arrays(results, arrays):
    assert set(inference_data.groups(results)) == set(inference_data.GROUPS)
    for group, variables in arrays.items():
        dataset = inference_data.get_group(results, group)
        for name, value in variables.items():
            np.testing.assert_array_equal(dataset[name].values, value)
    theta = inference_data.get_group(results, "posterior")["theta"]
    assert theta.dims == ("chain", "draw", "school")
    assert list(theta["school"].values) == ["a", "b", "c"]
    assert inference_data.get_group(results, "observed_data")["y"].dims == ("obs",)
    # dims may name the leading dimensions only (a variable's plates): ArviZ names the rest
    obs, event = inference_data.get_group(results, "constant_data")["x"].dims
    assert obs == "obs" and event.startswith("x_dim_")  # x_dim_1 on ArviZ 0.x, x_dim_0 on 1.x


def test_netcdf_round_trip_keeps_every_group(results, arrays, tmp_path):
    path = inference_data.save(results, tmp_path / "posterior.nc")
    assert path == tmp_path / "posterior.nc" and [p.name for p in tmp_path.iterdir()] == ["posterior.nc"]
    loaded = inference_data.load(path)
    assert set(inference_data.groups(loaded)) == set(inference_data.GROUPS)
    for group, variables in arrays.items():
        dataset = inference_data.get_group(loaded, group)
        for name, value in variables.items():
            np.testing.assert_array_equal(dataset[name].values, value)
            assert dataset[name].dtype == value.dtype
    assert list(inference_data.get_group(loaded, "posterior")["school"].values) == ["a", "b", "c"]
    inference_data.save(loaded, path)  # overwriting the file that was loaded works: nothing holds it open


def test_shape_mistakes_name_the_variable():
    draws = np.zeros((2, 10))
    with pytest.raises(DataError, match=r"posterior\['mu'\] has shape \(10,\)"):
        inference_data.build_inference_data({"mu": np.zeros(10)})
    with pytest.raises(DataError, match=r"log_likelihood\['y'\] has \(chain, draw\) = \(2, 9\)"):
        inference_data.build_inference_data({"mu": draws}, log_likelihood={"y": np.zeros((2, 9, 3))})
    with pytest.raises(DataError, match="posterior: no variables"):
        inference_data.build_inference_data({})


def test_a_prior_predictive_check_has_no_posterior(tmp_path):
    rng = np.random.default_rng(1)
    prior = inference_data.build_inference_data(
        None,
        prior={"mu": rng.normal(size=(1, 50))},
        prior_predictive={"y": rng.normal(size=(1, 50, N))},
        observed_data={"y": rng.normal(size=N)},
    )
    loaded = inference_data.load(inference_data.save(prior, tmp_path / "prior.nc"))
    assert set(inference_data.groups(loaded)) == {"prior", "prior_predictive", "observed_data"}
    with pytest.raises(DataError, match=r"prior_predictive\['y'\] has \(chain, draw\) = \(1, 49\)"):
        inference_data.build_inference_data(
            None, prior={"mu": np.zeros((1, 50))}, prior_predictive={"y": np.zeros((1, 49, N))}
        )


def test_missing_groups_files_and_names_are_reported(results, tmp_path):
    bare = inference_data.build_inference_data({"mu": np.zeros((2, 10))})
    with pytest.raises(DataError, match="no 'log_likelihood' group"):
        inference_data.get_group(bare, "log_likelihood")
    with pytest.raises(DataError, match="no such results file"):
        inference_data.load(tmp_path / "absent.nc")
    (tmp_path / "garbage.nc").write_text("not netcdf")
    with pytest.raises(DataError, match="garbage.nc"):
        inference_data.load(tmp_path / "garbage.nc")
    with pytest.raises(SpecError, match="unknown variable 'sigma'"):
        inference_data.summary(results, var_names=["sigma"])
    two = inference_data.build_inference_data(
        {"mu": np.zeros((2, 10))}, log_likelihood={"a": np.zeros((2, 10, 3)), "b": np.zeros((2, 10, 3))}
    )
    with pytest.raises(SpecError, match="several variables"):
        elpd.loo(two)


def test_summary_has_the_same_columns_on_every_arviz(results):
    table = inference_data.summary(results)
    assert tuple(table.columns) == inference_data.SUMMARY_COLUMNS
    assert list(table.index) == ["mu", "theta[a]", "theta[b]", "theta[c]"]
    assert all(dtype == np.float64 for dtype in table.dtypes)
    assert inference_data.summary(results, hdi_prob=0.9).columns[2:4].tolist() == ["hdi_5%", "hdi_95%"]


def test_diagnostics_of_iid_normal_draws():
    # S = 4000 iid N(0, 1) draws. Each autocorrelation estimate has sd ~ 1/sqrt(S) = 0.016 and the truncated sum
    # keeps a few lags, so ESS / S has sd ~ 0.04: 0.2 is 5 sd. R-hat - 1 has sd ~ 1e-3 here, far below 0.01.
    draws = np.random.default_rng(1).normal(size=(CHAINS, DRAWS))
    size = draws.size
    assert abs(inference_data.ess(draws) / size - 1) < 0.2
    assert abs(inference_data.ess(draws, method="tail") / size - 1) < 0.2
    assert abs(inference_data.rhat(draws) - 1) < 0.01
    # MCSE of the mean = sd / sqrt(ESS), so it inherits ESS's 20% (halved by the square root).
    assert abs(inference_data.mcse(draws) * math.sqrt(size) - 1) < 0.15
    # 94% HDI of N(0, 1) = +-1.881; an endpoint's sd is about sqrt(p (1 - p) / S) / phi(1.881) = 0.04: 4 sd.
    np.testing.assert_allclose(inference_data.hdi(draws), [-1.881, 1.881], atol=0.16)


def test_wrappers_return_one_array_per_variable(results):
    assert inference_data.ess(results)["theta"].shape == (3,)
    assert inference_data.rhat(results, var_names=["mu"]).keys() == {"mu"}
    assert inference_data.mcse(results, method="sd")["theta"].shape == (3,)
    assert inference_data.hdi(results)["theta"].shape == (3, 2)


def _pointwise_waic(log_likelihood: np.ndarray) -> np.ndarray:
    """lppd_i - var_s log p(y_i | theta_s) (arXiv:1507.04544, eqs. 3, 11 and 12 with ArviZ's ddof = 0)."""
    return logsumexp(log_likelihood, axis=0) - math.log(len(log_likelihood)) - np.var(log_likelihood, axis=0)


def test_waic_is_the_textbook_formula(results, arrays):
    log_likelihood = arrays["log_likelihood"]["y"].reshape(-1, N)
    pointwise = _pointwise_waic(log_likelihood)
    for estimate in (elpd.waic(results), elpd.waic_from_log_likelihood(log_likelihood)):
        assert estimate.method == "waic" and estimate.num_samples == CHAINS * DRAWS and estimate.num_data == N
        np.testing.assert_allclose(estimate.pointwise, pointwise, rtol=1e-10)
        assert estimate.elpd == pytest.approx(pointwise.sum(), rel=1e-10)
        assert estimate.se == pytest.approx(math.sqrt(N * np.var(pointwise, ddof=1)), rel=1e-10)
        assert estimate.p == pytest.approx(np.var(log_likelihood, axis=0).sum(), rel=1e-10)


def test_loo_estimate_is_consistent(results):
    estimate = elpd.loo(results)
    assert estimate.method == "loo" and estimate.pointwise.shape == estimate.pareto_k.shape == (N,)
    assert estimate.elpd == pytest.approx(estimate.pointwise.sum(), rel=1e-10)
    assert estimate.se == pytest.approx(math.sqrt(N * np.var(estimate.pointwise, ddof=1)), rel=1e-10)
    assert estimate.good_k == pytest.approx(min(1 - 1 / math.log10(CHAINS * DRAWS), 0.7))


def test_compare_ranks_by_elpd(arrays):
    # Shifting every log-likelihood by -1 leaves the importance weights unchanged, so elpd drops by exactly N.
    posterior, log_likelihood = arrays["posterior"], arrays["log_likelihood"]["y"]
    good = inference_data.build_inference_data(posterior, log_likelihood={"y": log_likelihood})
    worse = inference_data.build_inference_data(posterior, log_likelihood={"y": log_likelihood - 1.0})
    table = elpd.compare({"worse": worse, "good": good})
    assert tuple(table.columns) == elpd.COMPARE_COLUMNS
    assert list(table.index) == ["good", "worse"] and list(table["rank"]) == [0, 1]
    np.testing.assert_allclose(table["elpd_diff"], [0.0, N], atol=1e-8)
    assert table["weight"].sum() == pytest.approx(1.0)
    with pytest.raises(SpecError, match="at least two models"):
        elpd.compare({"good": good})


@pytest.mark.parametrize("plot", ["plot_trace", "plot_rank", "plot_ppc", "plot_pareto_k", "plot_loo_pit"])
def test_plots_write_png_and_close_their_figure(plot, results, tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    path = getattr(arviz_plots, plot)(results, tmp_path / f"{plot}.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plt.get_fignums() == before


def test_mcse_of_the_sd_works_with_numba_installed_and_leaves_the_users_setting_alone():
    pytest.importorskip("numba")  # ArviZ 0.x only takes its numba path when numba is importable
    if inference_data.arviz_version()[0] >= 1:
        pytest.skip("ArviZ 1.x has no numba path")
    az = inference_data._arviz()
    draws = np.random.default_rng(0).normal(size=(2, 100))
    original = az.Numba.numba_flag
    az.Numba.enable_numba()
    try:
        value = inference_data.mcse(draws, method="sd")
        assert az.Numba.numba_flag
    finally:
        az.Numba.enable_numba() if original else az.Numba.disable_numba()
    # For iid normal draws the sd's MCSE is about sd / sqrt(2 n) = 0.05 (n = 200).
    assert 0.03 < float(value) < 0.08


@pytest.mark.parametrize(("method", "prob", "exact"), [("median", None, 0.5), ("quantile", 0.25, 0.25)])
def test_mcse_of_a_quantile_matches_the_asymptotic_standard_error(method, prob, exact):
    # For n iid N(0, 1) draws the p-quantile's standard error is sqrt(p (1 - p) / n) / phi(Phi^-1(p)): 0.0198 for
    # the median and 0.0215 for the lower quartile at n = 4000. ArviZ estimates it from the draws (an interval
    # of order statistics through the ESS), itself random: within 25% here (fixed seed).
    from scipy.stats import norm

    draws = np.random.default_rng(3).normal(size=(4, 1000))
    standard_error = math.sqrt(exact * (1 - exact) / draws.size) / norm.pdf(norm.ppf(exact))
    value = float(inference_data.mcse(draws, method=method, prob=prob))
    assert value == pytest.approx(standard_error, rel=0.25)
