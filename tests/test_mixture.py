"""The mixture family: exact log p(x) against the closed-form logsumexp, an SVI fit as good as EM's, recovered
Bernoulli components, its spec table and shipped specs. Tolerances are float rounding for exact figures, and
otherwise stated where they are asserted."""

import math
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from sklearn.mixture import GaussianMixture

import ppgen
from ppgen.errors import SpecError
from ppgen.evaluate import elbo, log_likelihood
from ppgen.models import Mixture, build_model
from ppgen.models.mixture import kmeans_plus_plus
from ppgen.runner import run
from ppgen.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]
FLOAT32 = 1e-4  # absolute tolerance on a float32 log-density of a few to a few tens of nats


def _closed_form(mixture: Mixture, x: torch.Tensor) -> torch.Tensor:
    """logsumexp_k log pi_k + log p(x | theta_k) [N], from torch's own densities, component by component."""
    log_pi = torch.log_softmax(mixture.mixture_logits, 0)
    terms = []
    for k in range(mixture.num_components):
        if mixture.component_likelihood == "bernoulli":
            density = torch.distributions.Bernoulli(logits=mixture.logits[k])
            terms.append(density.log_prob(x).sum(-1))
        elif mixture.covariance == "full":
            density = torch.distributions.MultivariateNormal(mixture.locs[k], scale_tril=mixture.scale_tril[k])
            terms.append(density.log_prob(x))
        else:
            terms.append(torch.distributions.Normal(mixture.locs[k], mixture.scales[k]).log_prob(x).sum(-1))
    return torch.logsumexp(log_pi + torch.stack(terms, -1), -1).detach()


def _fitted_shape(kind: str, seed: int = 0) -> tuple[Mixture, torch.Tensor]:
    """A mixture of 3 components on 5 dimensions with random (not initial) parameters, and data for it."""
    generator = torch.Generator().manual_seed(seed)
    likelihood, covariance = {"diagonal": ("gaussian", "diagonal"), "full": ("gaussian", "full")}.get(
        kind, ("bernoulli", "diagonal")
    )
    mixture = Mixture(5, 3, likelihood, covariance)
    with torch.no_grad():
        mixture.mixture_logits = torch.randn(3, generator=generator)
        if likelihood == "bernoulli":
            mixture.logits = 2 * torch.randn(3, 5, generator=generator)
            x = torch.bernoulli(torch.full((40, 5), 0.5), generator=generator)
        else:
            mixture.locs = torch.randn(3, 5, generator=generator)
            if covariance == "full":
                mixture.scale_tril = torch.tril(0.3 * torch.randn(3, 5, 5, generator=generator)) + torch.eye(5)
            else:
                mixture.scales = 0.5 + torch.rand(3, 5, generator=generator)
            x = torch.randn(40, 5, generator=generator)
    mixture.initialized.fill_(True)
    return mixture, x


@pytest.mark.parametrize("kind", ["diagonal", "full", "bernoulli"])
def test_the_log_likelihood_and_elbo_are_the_closed_form_mixture_density(kind):
    mixture, x = _fitted_shape(kind)
    exact = _closed_form(mixture, x)
    result = log_likelihood(mixture.model, mixture.guide, x, num_samples=4, chunk_size=30)
    torch.testing.assert_close(result.estimate, exact, rtol=0, atol=FLOAT32)
    torch.testing.assert_close(elbo(mixture.model, mixture.guide, x), exact, rtol=0, atol=FLOAT32)
    torch.testing.assert_close(mixture.log_prob(x), exact, rtol=0, atol=FLOAT32)


def test_the_held_out_log_likelihood_is_exact_with_stderr_zero_and_every_sample_effective():
    mixture, x = _fitted_shape("full")
    result = mixture.held_out_log_likelihood(x, num_samples=50, chunk_size=None)
    torch.testing.assert_close(result.estimate, _closed_form(mixture, x), rtol=0, atol=FLOAT32)
    assert result.num_samples == 50 and (result.stderr == 0).all() and (result.effective_sample_size == 50).all()
    assert result.mean_stderr() == 0.0


def test_ancestral_samples_follow_the_mixture_weights():
    mixture = Mixture(2, 2, "gaussian", "diagonal")
    with torch.no_grad():
        mixture.mixture_logits = torch.tensor([0.0, math.log(3.0)])  # weights 1/4, 3/4
        mixture.locs = torch.tensor([[-5.0, 0.0], [5.0, 0.0]])
        mixture.scales = torch.full((2, 2), 0.5)
    pyro.set_rng_seed(0)
    samples = mixture.sample(4000)
    assert samples.shape == (4000, 2)
    # The share on the right is binomial: standard error sqrt(3/16 / 4000) = 0.0068; four of them.
    assert abs((samples[:, 0] > 0).double().mean().item() - 0.75) < 4 * 0.0068


def test_kmeans_plus_plus_picks_one_centre_per_separated_cluster_repeatably():
    x = torch.cat([torch.randn(50, 2) * 0.1 + centre for centre in (-10.0, 0.0, 10.0)])
    centres = kmeans_plus_plus(x, 3, seed=4)
    assert torch.equal(centres, kmeans_plus_plus(x, 3, seed=4))
    assert sorted(round(value / 10) for value in centres[:, 0].tolist()) == [-1, 0, 1]


def test_a_loaded_mixture_is_not_initialized_again_by_its_first_data():
    fitted, x = _fitted_shape("diagonal")
    fresh = Mixture(5, 3, "gaussian", "diagonal")
    fresh.load_state_dict(fitted.state_dict())
    fresh.model(x)
    torch.testing.assert_close(fresh.log_prob(x), fitted.log_prob(x), rtol=0, atol=0)


def _three_clusters() -> np.ndarray:
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [3.0, 1.0], [-1.0, 3.0]])
    covariances = [[[1.0, 0.6], [0.6, 0.8]], [[0.3, 0.0], [0.0, 1.2]], [[0.5, -0.3], [-0.3, 0.5]]]
    parts = [rng.multivariate_normal(m, c, n) for m, c, n in zip(means, covariances, (300, 200, 100))]
    return np.concatenate(parts)


@pytest.mark.parametrize(("covariance", "sklearn_covariance"), [("full", "full"), ("diagonal", "diag")])
def test_svi_with_the_assignment_summed_out_fits_as_well_as_em(covariance, sklearn_covariance):
    """Both maximize the same exact log-likelihood from several starts (EM: 5 k-means starts; SVI: 3 k-means++
    starts, full-batch Adam for 100 steps). EM stops once an iteration gains < 1e-3 nats per example, so the two
    agree to a few 1e-3 (measured: SVI 0.0002 above). Two of the three diagonal starts end in a local optimum
    0.049 nats below, which one start would report."""
    x = _three_clusters()
    em = GaussianMixture(3, covariance_type=sklearn_covariance, n_init=5, random_state=0).fit(x).score(x)
    data = torch.tensor(x, dtype=torch.float32)
    best = -math.inf
    for init_seed in range(3):
        pyro.set_rng_seed(0)
        mixture = Mixture(2, 3, "gaussian", covariance, init_seed=init_seed)
        ppgen.fit(mixture.model, mixture.guide, data, epochs=100, batch_size=600, lr=0.1, progress=False)
        best = max(best, log_likelihood(mixture.model, mixture.guide, data, num_samples=1).estimate.mean().item())
    assert abs(best - em) < 0.01


def test_a_bernoulli_mixture_recovers_its_components():
    """600 binary vectors of 12 pixels from 3 prototypes (each pixel on with probability 0.85 or 0.1) with weights
    1/2, 1/3, 1/6. A fitted pixel probability has binomial standard error at most sqrt(0.85 * 0.15 / 100) = 0.036
    (the smallest component has about 100 examples); 4 standard errors is 0.15. A weight has standard error at
    most sqrt(1/4 / 600) = 0.02; 4 of them is 0.08."""
    generator = torch.Generator().manual_seed(0)
    prototypes = torch.tensor([[1] * 6 + [0] * 6, [0] * 6 + [1] * 6, [1, 0] * 6], dtype=torch.float32)
    probabilities = 0.1 + 0.75 * prototypes
    weights = torch.tensor([1 / 2, 1 / 3, 1 / 6])
    c = torch.multinomial(weights, 600, replacement=True, generator=generator)
    x = torch.bernoulli(probabilities[c], generator=generator)
    pyro.set_rng_seed(0)
    mixture = Mixture(12, 3, "bernoulli", init_seed=0)
    ppgen.fit(mixture.model, mixture.guide, x, epochs=150, batch_size=600, lr=0.1, progress=False)
    fitted = torch.sigmoid(mixture.logits).detach()
    match = torch.cdist(probabilities, fitted).argmin(-1)  # each true component's nearest fitted one
    assert sorted(match.tolist()) == [0, 1, 2]
    assert (fitted[match] - probabilities).abs().max() < 0.15
    assert (torch.softmax(mixture.mixture_logits, 0).detach()[match] - weights).abs().max() < 0.08


def test_the_spec_table_builds_the_family_and_refuses_bernoulli_on_continuous_data():
    spec = load_spec(REPO / "models" / "mixture-gaussian.toml")
    model = build_model(spec.model, (2,))
    assert isinstance(model, Mixture) and (model.num_components, model.covariance) == (8, "full")
    with pytest.raises(SpecError, match="model.likelihood = 'bernoulli' needs binary data") as error:
        load_spec(REPO / "models" / "mixture-gaussian.toml", overrides=["model.likelihood='bernoulli'"])
    assert "\n" not in str(error.value)
    with pytest.raises(SpecError, match="model.covariance = 'full' applies to likelihood 'gaussian' only"):
        load_spec(REPO / "models" / "mixture-bernoulli.toml", overrides=["model.covariance='full'"])


@pytest.mark.parametrize("name", ["mixture-gaussian", "mixture-bernoulli"])
def test_a_short_run_of_each_spec_reports_the_exact_likelihood(name, tmp_path):
    budget = ["inference.epochs=2", "inference.device=cpu", "evaluation.num_samples=8", "evaluation.max_examples=50"]
    metrics = run(load_spec(REPO / "models" / f"{name}.toml", overrides=budget), tmp_path / "run", progress=False)
    test = metrics["test"]
    assert test["nll_method"] == "exact" and test["nll_stderr"] == 0.0
    assert test["nll_effective_sample_size_median"] == 8 and "kl_per_site" not in test
    assert math.isfinite(test["nll"])
