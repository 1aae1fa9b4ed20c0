"""The Pyro kernels ULA, MALA and SGLD against exact answers: conjugate Gaussian posteriors, a constrained scale by
quadrature, ULA's closed-form stationary variance and SGLD's first-order one (the steps' maths is tested exactly in
test_samplers_langevin.py). Tolerances are z = 4 Monte-Carlo standard errors, with the
MCSE of a mean of a series f(draws) taken as sd(f) / sqrt(ArviZ's ESS of f); a check fails by chance with probability
about 6e-5 (two-sided normal tail at 4), so the file's dozen or so checks pass with probability > 0.999."""

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.integrate
import scipy.linalg
import torch
from pyro.infer import MCMC

from ppgen.errors import PpgenError, SpecError, TrainingError
from ppgen.infer.langevin_adapter import LangevinKernel
from ppgen.infer.langevin_kernels import MALA, SGLD, ULA
from ppgen.infer.langevin_stats import LangevinInfoRecorder
from ppgen.samplers.langevin import (
    LangevinInfo,
    draw_langevin_noise,
    draw_mala_noise,
    mala_step,
    ula_gaussian_stationary_covariance,
    ula_step,
)
from ppgen.samplers.step_size import ConstantStepSize, PolynomialDecay, ScheduledStepSize

with warnings.catch_warnings():
    # ArviZ 0.2x announces its 1.0 refactor with a FutureWarning on import.
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

Z = 4.0


@pytest.fixture(autouse=True)
def one_thread():
    """These chains run thousands of steps on tensors of a few thousand numbers at most; intra-op threads only
    contend there (up to ~10x slower on a busy two-core machine), so each test runs on one and restores the count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mcse(series: np.ndarray) -> float:
    """Monte-Carlo standard error of series.mean() for one chain's series [num_draws]."""
    return float(series.std() / math.sqrt(az.ess(series[None], method="mean")))


def assert_moments(draws: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> None:
    """draws [n, D]: each coordinate's mean within Z MCSE of mean [D], and each (co)variance entry, estimated as the
    mean of (x_j - mean_j)(x_k - mean_k) (unbiased, as the exact mean is used), within Z MCSE of cov [D, D]."""
    draws = draws.reshape(len(draws), -1).astype(np.float64)
    mean, cov = np.atleast_1d(mean), np.atleast_2d(cov)
    for j in range(draws.shape[1]):
        error = draws[:, j].mean() - mean[j]
        assert abs(error) < Z * mcse(draws[:, j]), f"mean {j}: error {error:.3g}"
        for k in range(j, draws.shape[1]):
            product = (draws[:, j] - mean[j]) * (draws[:, k] - mean[k])
            error = product.mean() - cov[j, k]
            assert abs(error) < Z * mcse(product), f"cov {j},{k}: {product.mean():.4g} vs {cov[j, k]:.4g}"


def run(kernel, num_samples: int, warmup_steps: int, *args, seed: int = 0, **kwargs):
    """(draws dict of numpy arrays [num_samples, ...], sample_stats, mcmc)."""
    pyro.set_rng_seed(seed)
    recorder = LangevinInfoRecorder()
    mcmc = MCMC(kernel, num_samples, warmup_steps, hook_fn=recorder, disable_progbar=True, **kwargs)
    mcmc.run(*args)
    return {k: v.numpy() for k, v in mcmc.get_samples().items()}, recorder.sample_stats(), mcmc


# mu ~ N(0, 1), x_i ~ N(mu, 1), i = 1..20: the posterior is N(sum x / 21, 1 / 21).
NORMAL_DATA = 0.5 + torch.randn(20, generator=torch.Generator().manual_seed(0))
NORMAL_MEAN, NORMAL_VAR = NORMAL_DATA.sum().item() / 21, 1 / 21


def normal_model(x):
    mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def scale_model(x):
    """A location and a positive scale, to check that draws come back through the transforms."""
    loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
    scale = pyro.sample("scale", dist.HalfNormal(2.0))
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Normal(loc, scale), obs=x)


# --- one generic test of the kernel interface, for every kernel ---

KERNELS = {
    "ULA": lambda: ULA(scale_model, step_size=0.01),
    "MALA": lambda: MALA(scale_model),
    "SGLD": lambda: SGLD(scale_model, step_size=PolynomialDecay(a=0.01, b=10.0)),
}


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_runs_in_pyro_mcmc(name):
    x = 1.0 + 2.0 * torch.randn(10, generator=torch.Generator().manual_seed(2))
    kernel = KERNELS[name]()
    draws, stats, mcmc = run(kernel, 30, 20, x)
    assert draws["loc"].shape == (30,) and draws["scale"].shape == (30,)
    assert (draws["scale"] > 0).all() and np.isfinite(draws["loc"]).all()  # mapped back to the constrained space
    assert set(stats) == {"acceptance_rate", "step_size", "lp", "accepted"}
    assert all(value.shape == (1, 30) for value in stats.values())
    assert isinstance(kernel.last_info, LangevinInfo)
    diagnostics = mcmc.diagnostics()
    assert {"acceptance rate", "mean accept prob", "step size"} <= set(diagnostics)
    assert set(kernel.logging()) >= {"step size"}


def test_same_seed_same_draws():
    first, _, _ = run(MALA(normal_model), 20, 20, NORMAL_DATA, seed=3)
    second, _, _ = run(MALA(normal_model), 20, 20, NORMAL_DATA, seed=3)
    np.testing.assert_array_equal(first["mu"], second["mu"])


def test_a_kernel_is_a_step_composed_with_a_step_size_rule():
    """ULA(...) is ``LangevinKernel(ula_step, ...)`` with a constant rule; any step composes with any rule, e.g. MALA's
    step with a decreasing schedule."""
    composed = LangevinKernel(ula_step, draw_langevin_noise, ConstantStepSize(0.01), scale_model, name="ULA")
    x = 1.0 + 2.0 * torch.randn(10, generator=torch.Generator().manual_seed(2))
    (first, first_stats, _), (second, second_stats, _) = (run(k, 10, 10, x) for k in (ULA(scale_model), composed))
    for name in ("loc", "scale"):
        np.testing.assert_array_equal(first[name], second[name])
    np.testing.assert_array_equal(first_stats["acceptance_rate"], second_stats["acceptance_rate"])
    schedule = PolynomialDecay(a=0.05, b=10.0)
    decaying = LangevinKernel(mala_step, draw_mala_noise, ScheduledStepSize(schedule), scale_model, name="MALA")
    _, stats, _ = run(decaying, 10, 5, x)
    np.testing.assert_allclose(stats["step_size"][0], [schedule(t) for t in range(5, 15)], rtol=1e-6)


# --- MALA: exact for any step size ---


@pytest.mark.slow
def test_mala_normal_normal_posterior_and_adapted_acceptance():
    draws, stats, _ = run(MALA(normal_model), 2000, 300, NORMAL_DATA)
    assert_moments(draws["mu"][:, None], np.array([NORMAL_MEAN]), np.array([[NORMAL_VAR]]))
    # Dual averaging targets a mean acceptance of 0.574 during warm-up; the averaged step it ends with lands near it.
    assert abs(stats["acceptance_rate"].mean() - 0.574) < 0.1
    assert np.unique(stats["step_size"]).size == 1  # fixed after warm-up


@pytest.mark.slow
def test_mala_correlated_gaussian_posterior():
    """z ~ MVN(0, S0) with correlation 0.9, y_k ~ MVN(z, 2 I), k = 1..2: posterior precision S0^-1 + I, mean
    (S0^-1 + I)^-1 sum(y_k) / 2."""
    prior_cov = torch.tensor([[1.0, 0.9], [0.9, 1.0]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.5], [0.2, 1.4]], dtype=torch.float64)
    precision = torch.linalg.inv(prior_cov) + torch.eye(2, dtype=torch.float64)
    cov = torch.linalg.inv(precision)
    mean = cov @ y.sum(0) / 2

    def model(y):
        z = pyro.sample("z", dist.MultivariateNormal(torch.zeros(2), scale_tril=prior_scale_tril))
        with pyro.plate("data", len(y)):
            pyro.sample("y", dist.MultivariateNormal(z, scale_tril=math.sqrt(2) * torch.eye(2)), obs=y)

    prior_scale_tril = torch.linalg.cholesky(prior_cov).float()
    draws, _, _ = run(MALA(model), 1500, 300, y.float())
    assert_moments(draws["z"], mean.numpy(), cov.numpy())


@pytest.mark.slow
def test_mala_positive_scale_posterior_by_quadrature():
    """scale ~ HalfNormal(2), x_i ~ N(0, scale), i = 1..10: the posterior's mean and variance by quadrature. MALA
    moves log(scale), so a missing Jacobian term would shift both."""
    x = 1.5 * torch.randn(10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    sum_sq = float((x**2).sum())

    def log_post(s):
        return -(s**2) / 8 - len(x) * math.log(s) - sum_sq / (2 * s**2)

    peak = max(log_post(s) for s in np.linspace(0.1, 10, 1000))
    moments = [scipy.integrate.quad(lambda s, k=k: s**k * math.exp(log_post(s) - peak), 0, np.inf)[0] for k in range(3)]
    mean = moments[1] / moments[0]
    var = moments[2] / moments[0] - mean**2

    def model(x):
        scale = pyro.sample("scale", dist.HalfNormal(2.0))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, scale), obs=x)

    draws, _, _ = run(MALA(model), 2000, 300, x.float())
    assert_moments(draws["scale"][:, None], np.array([mean]), np.array([[var]]))


def test_mala_with_a_potential_fn():
    """A standard normal in R^3 given as a potential; MCMC gives the initial point."""
    kernel = MALA(potential_fn=lambda z: 0.5 * (z["x"] ** 2).sum())
    draws, _, _ = run(kernel, 1500, 300, initial_params={"x": torch.zeros(1, 3)})
    assert_moments(draws["x"], np.zeros(3), np.eye(3))
    with pytest.raises(SpecError, match="initial_params"):
        run(MALA(potential_fn=lambda z: 0.5 * (z["x"] ** 2).sum()), 10, 10)


# --- ULA: biased by O(step size), in closed form on a Gaussian ---


@pytest.mark.slow
@pytest.mark.parametrize("step_fraction, measurably_biased", [(0.1, False), (1.0, True)])
def test_ula_matches_its_closed_form_stationary_law(step_fraction, measurably_biased):
    """On the N(m, s) posterior ULA's draws are N(m, s / (1 - h / (2 s))): 1.053 s for h = 0.1 s, close to exact (the
    5% excess is under one MCSE here), and 2 s for h = s, the deliberately wrong sampler (an excess of ~15 MCSE)."""
    h = step_fraction * NORMAL_VAR
    stationary_var = ula_gaussian_stationary_covariance(torch.tensor([[NORMAL_VAR]], dtype=torch.float64), h)
    draws, stats, _ = run(ULA(normal_model, step_size=h), 2000, 200, NORMAL_DATA)
    assert_moments(draws["mu"][:, None], np.array([NORMAL_MEAN]), stationary_var.numpy())
    squared = (draws["mu"].astype(np.float64) - NORMAL_MEAN) ** 2
    assert (squared.mean() - NORMAL_VAR > Z * mcse(squared)) == measurably_biased
    assert stats["accepted"].all()


# --- SGLD on minibatches ---


@pytest.mark.slow
def test_sgld_linear_gaussian_with_minibatches():
    """w ~ N(0, I_2), y_i ~ N(x_i . w, 1), N = 2000, minibatches of B = 500 scaled by N / B.

    The exact posterior is N(m, L^-1), L = I + X^T X. The drift is linear, so SGLD's stationary mean is exact and the
    means are tested against m. Its covariance is biased by O(h): with a constant step h and minibatch-gradient noise
    of covariance C = N^2 (1/B - 1/N) Cov_i(x_i (y_i - x_i . m)), the chain x' = x - h (L (x - m) + noise) + sqrt(2h) xi
    has stationary covariance V solving V = A V A^T + 2h I + h^2 C, A = I - h L (Vollmer, Zygalakis & Teh 2016,
    arXiv:1501.00438, for the O(h) bias in general). The schedule h_t changes by under 30% over the run, slowly next
    to the chain's mixing time (~1 / (h L) ~ 10 steps), so V averaged over the sampling steps' h_t is the prediction
    the covariances are tested against; here it is ~20% above L^-1, which is what "approximately right" means for
    SGLD at this cost (the bias falls with h, but the ESS per step falls with it).
    """
    num_data, batch_size = 2000, 500
    g = torch.Generator().manual_seed(6)
    x = torch.randn(num_data, 2, generator=g, dtype=torch.float64)
    y = x @ torch.tensor([0.5, -1.0], dtype=torch.float64) + torch.randn(num_data, generator=g, dtype=torch.float64)
    precision = torch.eye(2, dtype=torch.float64) + x.T @ x
    mean = torch.linalg.solve(precision, x.T @ y)
    per_example_grads = x * (y - x @ mean)[:, None]
    grad_noise = num_data**2 * (1 / batch_size - 1 / num_data) * torch.cov(per_example_grads.T)

    def model(x, y):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with pyro.plate("data", num_data, subsample_size=batch_size) as idx:
            pyro.sample("y", dist.Normal(x[idx] @ w, 1.0), obs=y[idx])

    warmup, num_samples = 300, 3000
    schedule = PolynomialDecay(a=5e-5 * 6800**0.55, b=5000.0, gamma=0.55)  # h ~ 5e-5 ~ 0.1 / L mid-run

    def stationary_cov(h):
        a = np.eye(2) - h * precision.numpy()
        return scipy.linalg.solve_discrete_lyapunov(a, 2 * h * np.eye(2) + h**2 * grad_noise.numpy())

    predicted = np.mean([stationary_cov(schedule(t)) for t in range(warmup, warmup + num_samples)], axis=0)
    draws, stats, _ = run(SGLD(model, step_size=schedule), num_samples, warmup, x.float(), y.float())
    assert_moments(draws["w"], mean.numpy(), predicted)
    np.testing.assert_allclose(stats["step_size"][0], [schedule(t) for t in range(warmup, warmup + num_samples)])
    assert np.isnan(stats["acceptance_rate"]).all()


# --- user mistakes ---


def test_user_mistakes_are_one_line_errors():
    with pytest.raises(SpecError, match="exactly one of model= or potential_fn="):
        MALA()
    with pytest.raises(SpecError, match="exactly one of model= or potential_fn="):
        ULA(normal_model, potential_fn=lambda z: 0.0)
    with pytest.raises(SpecError, match="step_size"):
        ULA(normal_model, step_size=-1.0)
    with pytest.raises(SpecError, match="target_accept_prob"):
        MALA(normal_model, target_accept_prob=1.0)

    def subsampled(x):
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x), subsample_size=5) as idx:
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x[idx])

    with pytest.raises(SpecError, match="use SGLD"):
        run(MALA(subsampled), 5, 5, NORMAL_DATA)

    def discrete(x):
        k = pyro.sample("k", dist.Bernoulli(0.5))
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(k, 1.0), obs=x)

    with pytest.raises(SpecError, match="'k' is discrete"):
        run(SGLD(discrete), 5, 5, NORMAL_DATA)
    # h = 10 s: each step multiplies the distance to the mode by -9, so the chain leaves float range.
    with pytest.raises(TrainingError, match="non-finite"):
        run(ULA(normal_model, step_size=10 * NORMAL_VAR), 200, 0, NORMAL_DATA)
    with pytest.raises(PpgenError, match="hook_fn"):
        LangevinInfoRecorder().sample_stats()
