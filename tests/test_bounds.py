"""ELBO and importance-sampled log-likelihood against exact answers.

Tolerances are Monte-Carlo standard errors: the estimator's own delta-method stderr for log p(x), and for
ELBO estimates the spread of single-sample log-weights divided by sqrt(number of particles).
"""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from models_exact import ConjugateNormalMean, ProbabilisticPCA

from ppgen.errors import PpgenError
from ppgen.evaluate import elbo, log_likelihood
from ppgen.evaluate.bounds import effective_sample_size_warning
from ppgen.models import VAE

Z = 4.0  # standard errors allowed; a wrong estimator misses by far more (see the gaps asserted below)


@pytest.fixture(scope="module")
def ppca():
    return ProbabilisticPCA()


@pytest.fixture(scope="module")
def x(ppca):
    return ppca.sample(60)


@pytest.mark.parametrize("chunk_size", [8192, 7, 1])
@pytest.mark.parametrize("vectorize", [True, False])
def test_exact_posterior_as_guide_gives_exact_log_likelihood_with_zero_variance(ppca, x, chunk_size, vectorize):
    pyro.set_rng_seed(0)
    result = log_likelihood(
        ppca.model, ppca.exact_guide, x[:10], num_samples=20, chunk_size=chunk_size, vectorize=vectorize
    )
    assert result.per_example and result.estimate.shape == result.stderr.shape == (10,)
    # Every log-weight equals log p(x) exactly, so only float64 rounding remains.
    torch.testing.assert_close(result.estimate, ppca.log_evidence(x[:10]), rtol=0, atol=1e-10)
    assert result.stderr.max() < 1e-6
    torch.testing.assert_close(result.effective_sample_size, torch.full((10,), 20.0, dtype=torch.float64))


def test_importance_sampled_estimate_lies_within_four_standard_errors(ppca, x):
    pyro.set_rng_seed(0)
    result = log_likelihood(ppca.model, ppca.approximate_guide, x, num_samples=2000, chunk_size=3000)
    z_scores = (result.estimate - ppca.log_evidence(x)) / result.stderr
    assert z_scores.abs().max() < Z
    assert ((result.effective_sample_size > 1) & (result.effective_sample_size < 2000)).all()
    # Across 60 independent examples the mean z-score has standard error 1 / sqrt(60).
    assert z_scores.mean().abs() < Z / math.sqrt(len(x))


def _elbo_standard_error(ppca, x, num_particles, repeats=200):
    """Per-example standard error of a num_particles ELBO estimate, from single-particle draws."""
    draws = torch.stack([elbo(ppca.model, ppca.approximate_guide, x, num_particles=1) for _ in range(repeats)])
    return draws.std(0) / math.sqrt(num_particles)


def test_elbo_matches_the_exact_elbo_and_lies_below_the_log_likelihood(ppca, x):
    pyro.set_rng_seed(0)
    estimate = elbo(ppca.model, ppca.approximate_guide, x, num_particles=500)
    exact = ppca.exact_elbo_of_approximate_guide(x)
    stderr = _elbo_standard_error(ppca, x, 500)
    assert estimate.shape == (len(x),)
    assert ((estimate - exact).abs() / stderr).max() < Z
    # The guide's KL gap is far larger than the noise, so the estimate is below log p(x) for every example.
    gap = ppca.log_evidence(x) - exact
    assert (gap > 10 * stderr).all()
    assert (estimate < ppca.log_evidence(x)).all()


def test_estimate_rises_towards_the_exact_value_as_k_grows(ppca):
    """E[L_K] is non-decreasing in K (Burda et al. 2015, Theorem 1) and tends to log p(x)."""
    x = ppca.sample(400)
    exact = ppca.log_evidence(x)
    pyro.set_rng_seed(0)
    gaps, stderrs = [], []
    for k in (10, 100, 1000):
        result = log_likelihood(ppca.model, ppca.poor_guide, x, num_samples=k)
        gaps.append((exact - result.estimate).mean().item())
        stderrs.append(result.stderr.square().sum().sqrt().item() / len(x))
    one_sample = elbo(ppca.model, ppca.poor_guide, x, num_particles=1)  # L_1 is a one-particle ELBO
    assert (exact - one_sample).mean() > gaps[0] + 1.0
    for (gap, stderr), (next_gap, next_stderr) in zip(zip(gaps, stderrs), zip(gaps[1:], stderrs[1:])):
        assert gap - next_gap > Z * math.hypot(stderr, next_stderr)
    # What remains at K = 1000 is the estimator's bias, about Var[w] / (2 K E[w]^2), close to stderr^2 / 2.
    bias = (result.stderr.square() / 2).mean().item()
    assert abs(gaps[-1] - bias) < Z * stderrs[-1]


def test_global_latent_gives_the_joint_evidence():
    model = ConjugateNormalMean()
    x = model.sample(40)
    pyro.set_rng_seed(0)
    exact = log_likelihood(model.model, model.exact_guide, x, num_samples=50, chunk_size=64)
    assert not exact.per_example and exact.estimate.shape == ()
    torch.testing.assert_close(exact.estimate, model.log_evidence(x), rtol=0, atol=1e-9)
    assert exact.stderr < 1e-6
    approximate = log_likelihood(model.model, model.approximate_guide, x, num_samples=4000, chunk_size=4000)
    assert abs(approximate.estimate - model.log_evidence(x)) < Z * approximate.stderr
    bound = elbo(model.model, model.approximate_guide, x, num_particles=200)
    assert bound.shape == () and bound < model.log_evidence(x)


def test_chunking_over_examples_and_samples_gives_consistent_estimates(ppca, x):
    pyro.set_rng_seed(0)
    whole = log_likelihood(ppca.model, ppca.approximate_guide, x, num_samples=500, chunk_size=10**6)
    chunked = log_likelihood(ppca.model, ppca.approximate_guide, x, num_samples=500, chunk_size=37)
    difference = (whole.estimate - chunked.estimate) / torch.hypot(whole.stderr, chunked.stderr)
    assert difference.abs().max() < Z


def test_a_vae_gives_per_example_bounds_in_its_dtype():
    pyro.set_rng_seed(0)
    vae = VAE(data_dim=12, latent_dim=3, hidden=[8])
    x = torch.bernoulli(torch.full((9, 12), 0.4))
    bound = elbo(vae.model, vae.guide, x, num_particles=300)
    result = log_likelihood(vae.model, vae.guide, x, num_samples=300, chunk_size=100)
    assert bound.shape == result.estimate.shape == (9,) and bound.dtype == torch.float32
    # ELBO <= log p(x): the gap is a KL divergence, and an untrained guide leaves a wide one.
    assert (bound < result.estimate + Z * result.stderr).all()


def test_a_model_that_cannot_broadcast_is_evaluated_one_sample_at_a_time(ppca, x):
    def unbroadcastable_model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
            assert z.dim() == 2, "this model assumes z is [N, k]"
            pyro.sample("x", dist.Normal(z @ ppca.W.T + ppca.mu, ppca.sigma).to_event(1), obs=x)

    with pytest.raises(AssertionError, match="assumes z is"):
        log_likelihood(unbroadcastable_model, ppca.exact_guide, x[:4], num_samples=3)
    result = log_likelihood(unbroadcastable_model, ppca.exact_guide, x[:4], num_samples=3, vectorize=False)
    torch.testing.assert_close(result.estimate, ppca.log_evidence(x[:4]), rtol=0, atol=1e-10)


def test_one_sample_has_an_infinite_standard_error(ppca, x):
    result = log_likelihood(ppca.model, ppca.approximate_guide, x[:3], num_samples=1)
    assert torch.isinf(result.stderr).all()


def _no_data_plate(x):
    pyro.sample("x", dist.Normal(0.0, 1.0).expand(x.shape).to_event(2), obs=x)


def _subsampling_plate(x):
    with pyro.plate("data", x.shape[0], subsample_size=2) as rows:
        pyro.sample("x", dist.Normal(0.0, 1.0).expand([2, x.shape[1]]).to_event(1), obs=x[rows])


def _empty_guide(x):
    pass


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_no_data_plate, r"no pyro\.plate\('data'"),
        (_subsampling_plate, "plate has size 2 but the batch has 5 examples"),
    ],
)
def test_models_that_break_the_data_plate_convention_are_reported(model, message):
    with pytest.raises(PpgenError, match=message):
        log_likelihood(model, _empty_guide, torch.zeros(5, 3), num_samples=4)


def test_num_samples_must_be_positive(ppca, x):
    with pytest.raises(PpgenError, match="num_samples must be at least 1"):
        log_likelihood(ppca.model, ppca.exact_guide, x, num_samples=0)


def test_memory_stays_bounded_by_the_chunk_size(ppca):
    """K = 5000 samples for 40 examples is 200,000 (example, sample) pairs; no vectorized call may hold
    more than chunk_size of them."""
    pairs_per_call = []

    def watched_model(x):
        with pyro.poutine.trace() as capture:
            ppca.model(x)
        pairs_per_call.append(capture.trace.nodes["z"]["value"].shape[:-1].numel())

    result = log_likelihood(watched_model, ppca.approximate_guide, ppca.sample(40), num_samples=5000, chunk_size=1000)
    assert result.estimate.shape == (40,) and torch.isfinite(result.estimate).all()
    assert max(pairs_per_call) == 1000 and sum(pairs_per_call[1:]) == 40 * 5000  # call 0 probes the structure


@pytest.mark.parametrize(
    ("effective_sample_size", "num_samples", "warns"),
    [(2.6, 200, True), (1.0, 100, True), (1.0, 1, True), (7.0, 8, False), (80.0, 1000, False), (40.0, 1000, True)],
)
def test_a_tiny_effective_sample_size_warns_that_the_standard_error_means_little(
    effective_sample_size, num_samples, warns
):
    warning = effective_sample_size_warning(effective_sample_size, num_samples)
    assert (warning is not None) == warns
    if warns:
        assert f"effective sample size of {effective_sample_size:.1f} of K = {num_samples}" in warning
        assert "no error bar" in warning and "Raise K" in warning


def test_a_guide_far_from_the_posterior_gives_an_estimate_that_warns(ppca, x):
    """A guide that ignores the data (the prior) is dominated by the few samples near the posterior."""

    def prior_guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(ppca.latent_dim, dtype=x.dtype), 1.0).to_event(1))

    estimate = log_likelihood(ppca.model, prior_guide, x, num_samples=200, chunk_size=10_000)
    median = estimate.effective_sample_size.median().item()
    assert effective_sample_size_warning(median, 200) is not None
    exact = log_likelihood(ppca.model, ppca.exact_guide, x, num_samples=200, chunk_size=10_000)
    assert effective_sample_size_warning(exact.effective_sample_size.median().item(), 200) is None
