"""Minibatched declarative models and SGLD on them: a subsampled plate's log joint is exactly the prior plus N / B
times the minibatch's log-likelihood terms, hence unbiased; SGLD's chain has the exact posterior mean of a
linear-Gaussian model and the stationary covariance that its step size and gradient noise give; plates that cannot
be minibatched are named."""

import functools
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from numpyro.infer.util import log_density
from pyro import poutine

from ppgen.errors import SpecError
from ppgen.models.bayes import bayes_model_from_tables, load_bayes_model
from ppgen.posterior import infer
from ppgen.spec.bayes_inference import BayesInferenceSpec, SGLDSpec
from ppgen.spec.load import load_spec
from ppgen.spec.subsample import likelihood_plate

with warnings.catch_warnings():  # arviz warns about its coming 1.0 API at import
    warnings.simplefilter("ignore", FutureWarning)
    import arviz as az

REPO = Path(__file__).resolve().parents[1]
Z = 4.0  # |error| < 4 standard errors: a false alarm rate of 6e-5 per comparison

# Bayesian linear regression with a known noise scale: theta = (alpha, beta) ~ Normal(0, tau^2 I),
# y = D theta + Normal(0, sigma^2), D = [1, x1 - mean(x1), x2]. The centring is computed outside the plate (from all
# the data) and the design matrix X is a value of the data alone, so both exercise what the minibatch indexes.
N, B, SIGMA, TAU = 200, 20, 1.0, 10.0


def linear_gaussian_tables() -> dict:
    rng = np.random.default_rng(7)
    x1, x2 = rng.normal(1.0, 1.0, N), rng.normal(0.0, 1.0, N)
    y = 0.5 + 1.0 * (x1 - x1.mean()) - 0.7 * x2 + SIGMA * rng.normal(size=N)
    return {
        "data": {"N": N, "sigma": SIGMA, "tau": TAU, "x1": x1.tolist(), "x2": x2.tolist(), "y": y.tolist()},
        "plates": {"obs": "N"},
        "variables": {
            "X": {"value": "stack([x1 - mean(x1), x2], 1)"},
            "alpha": "Normal(0, tau)",
            "beta": {"dist": "Normal(0, tau)", "shape": [2]},
            "y": {"dist": "Normal(alpha + X @ beta, sigma)", "plate": "obs", "observed": "y"},
        },
    }


@pytest.fixture(scope="module")
def linear():
    """The model, its design matrix D [N, 3] and y [N], the exact posterior mean [3] and precision A [3, 3]
    (Gelman et al., Bayesian Data Analysis, 3rd ed., section 14.2, with a Normal(0, tau^2 I) prior)."""
    model = bayes_model_from_tables(linear_gaussian_tables(), Path("."), "linear.toml")
    x1, x2, y = (model.data[key] for key in ("x1", "x2", "y"))
    design = np.column_stack([np.ones(N), x1 - x1.mean(), x2])
    precision = np.eye(3) / TAU**2 + design.T @ design / SIGMA**2
    mean = np.linalg.solve(precision, design.T @ y / SIGMA**2)
    return model, design, y, mean, precision


def model_from(variables: dict, data: dict, plates: dict):
    return bayes_model_from_tables({"data": data, "plates": plates, "variables": variables}, Path("."), "test.toml")


def as_tensors(params: dict) -> dict[str, torch.Tensor]:
    return {name: torch.as_tensor(value, dtype=torch.float64) for name, value in params.items()}


def pyro_terms(model, params: dict, subsample: dict | None = None):
    """The log joint of the Pyro model at ``params`` and the minibatch indices of plate 'obs' (or None)."""
    conditioned = poutine.condition(model.pyro_model, as_tensors(params))
    trace = poutine.trace(conditioned).get_trace(model.torch_data(), subsample=subsample)
    indices = trace.nodes["obs"]["value"].numpy() if subsample else None
    return trace.log_prob_sum().item(), indices


def pointwise(model, params: dict) -> tuple[float, np.ndarray]:
    """The prior's log density and the N log-likelihood terms of 'y', from the full-data model."""
    conditioned = poutine.condition(model.pyro_model, as_tensors(params))
    trace = poutine.trace(conditioned).get_trace(model.torch_data())
    trace.compute_log_prob()
    prior = sum(trace.nodes[name]["log_prob_sum"].item() for name in model.latent_names)
    return prior, trace.nodes["y"]["log_prob"].numpy()


LOGISTIC_PARAMS = {"alpha": 0.3, "beta": np.array([0.5, -1.0, 0.2])}
LINEAR_PARAMS = {"alpha": 0.4, "beta": np.array([0.9, -0.6])}


# --- exact identities ---


@pytest.mark.parametrize("spec", ["logistic_regression", "linear_gaussian"])
def test_minibatch_log_joint_is_the_prior_plus_scaled_batch_terms(spec, linear):
    """log p(theta) + N / B sum_{i in batch} log p(y_i | theta), with the batch's covariates matched to its y_i:
    exact to rounding (float64 sums in a different order)."""
    if spec == "logistic_regression":
        model, params, batch = load_bayes_model(REPO / "models" / "logistic_regression.toml"), LOGISTIC_PARAMS, 7
    else:
        model, params, batch = linear[0], LINEAR_PARAMS, B
    prior, terms = pointwise(model, params)
    size = len(terms)
    for seed in range(3):
        torch.manual_seed(seed)
        log_joint, indices = pyro_terms(model, params, {"obs": batch})
        assert len(set(indices.tolist())) == batch and indices.max() < size
        assert log_joint == pytest.approx(prior + size / batch * terms[indices].sum(), rel=1e-12)


def test_numpyro_model_subsamples_alike(linear):
    """The NumPyro compilation with the minibatch indices substituted gives the same scaled log joint."""
    model = linear[0]
    prior, terms = pointwise(model, LINEAR_PARAMS)
    indices = np.array([3, 17, 42, 199, 0])
    with jax.enable_x64(True):
        params = {**{k: jnp.asarray(v) for k, v in LINEAR_PARAMS.items()}, "obs": jnp.asarray(indices)}
        log_joint, trace = log_density(model.numpyro_model, (model.jax_data(),), {"subsample": {"obs": 5}}, params)
    assert trace["y"]["value"].shape == (5,)
    assert float(log_joint) == pytest.approx(prior + N / 5 * terms[indices].sum(), rel=1e-12)


def test_a_batch_as_large_as_the_plate_is_the_full_model(linear):
    model = linear[0]
    full, _ = pyro_terms(model, LINEAR_PARAMS)
    for batch in (N, N + 50):
        log_joint, indices = pyro_terms(model, LINEAR_PARAMS, {"obs": batch})
        assert np.array_equal(indices, np.arange(N)) and log_joint == pytest.approx(full, rel=1e-12)


# --- unbiasedness ---


def test_minibatch_log_joint_is_unbiased_with_the_sampling_variance(linear):
    """Over M minibatches drawn without replacement the estimate has mean log p(y, theta) and variance
    N^2 (1/B - 1/N) s^2, s^2 the sample variance of the N terms (Cochran, Sampling Techniques, 1977, thm 2.2).
    Tolerances: Z standard errors of the mean (exact) and of the variance (from the draws' fourth moment)."""
    model = linear[0]
    prior, terms = pointwise(model, LINEAR_PARAMS)
    exact_mean, exact_var = prior + terms.sum(), N**2 * (1 / B - 1 / N) * terms.var(ddof=1)
    num_batches = 1000
    torch.manual_seed(0)
    draws = np.array([pyro_terms(model, LINEAR_PARAMS, {"obs": B})[0] for _ in range(num_batches)])
    assert abs(draws.mean() - exact_mean) < Z * np.sqrt(exact_var / num_batches)
    fourth = np.mean((draws - draws.mean()) ** 4)
    assert abs(draws.var() - exact_var) < Z * np.sqrt((fourth - draws.var() ** 2) / num_batches)


# --- SGLD ---


def sgld_stationary_covariance(design, y, mean, precision, step_size: float, batch: int) -> np.ndarray:
    """The exact stationary covariance of SGLD with a constant step h on the linear-Gaussian model.

    With z = theta - m the step is z' = (I - h A_S) z + h e_S + sqrt(2 h) xi, where A_S = I / tau^2 + N / B
    sum_{i in S} d_i d_i^T / sigma^2 and e_S = N / B sum_{i in S} (r_i - mean(r)), r_i = d_i (y_i - d_i^T m) / sigma^2,
    both unbiased (E A_S = A, E e_S = 0) and independent of z. So E z = 0 (the mean is exact for any stable h) and
    C = E[(I - h A_S) C (I - h A_S)^T] + h^2 E[e_S e_S^T] + 2 h I, whose minibatch expectations of centred sums
    are B (N - B) / (N (N - 1)) sum_i w_i w_i^T (sampling without replacement). As h -> 0, C -> A^-1; here the
    gradient noise makes it about three times the posterior variance: the O(h) bias of SGLD (Vollmer, Zygalakis &
    Teh 2016, arXiv:1501.00438), which only a decreasing step removes.
    """
    size, dim = design.shape
    c = (size / batch) ** 2 * batch * (size - batch) / (size * (size - 1))
    outer = np.einsum("ni,nj->nij", design, design) / SIGMA**2
    centred = outer - outer.mean(0)
    residual = design * (y - design @ mean)[:, None] / SIGMA**2
    residual -= residual.mean(0)
    contraction = np.eye(dim) - step_size * precision
    operator = np.kron(contraction, contraction) + step_size**2 * c * sum(np.kron(w, w) for w in centred)
    source = step_size**2 * c * residual.T @ residual + 2 * step_size * np.eye(dim)
    return np.linalg.solve(np.eye(dim * dim) - operator, source.reshape(-1)).reshape(dim, dim)


def mcse(series: np.ndarray) -> float:
    """Monte Carlo standard error of the mean of one chain, from ArviZ's effective sample size."""
    return float(series.std() / np.sqrt(az.ess(series[None], method="mean")))


@pytest.mark.slow
def test_sgld_has_the_exact_posterior_mean_and_its_own_stationary_variance(linear):
    """SGLD through ``infer`` with B = 20 of N = 200 and a constant step h = 2e-3 (h lambda_max(A) = 0.42): the
    chain's mean is the exact posterior mean and its variance the exact stationary one above, each within Z MCSE
    (from ESS). 200 burn-in steps shrink the start's error by (1 - h lambda_min)^200 < 1e-30."""
    model, design, y, mean, precision = linear
    step_size = 2e-3
    spec = SGLDSpec(num_warmup=200, num_samples=2000, batch_size=B, step_size=step_size, step_decay=0.0, seed=0)
    draws = infer(model, BayesInferenceSpec(inference=spec))
    chain = np.column_stack([draws.posterior["alpha"][0], draws.posterior["beta"][0]])
    covariance = sgld_stationary_covariance(design, y, mean, precision, step_size, B)
    posterior_var = np.diag(np.linalg.inv(precision))
    assert np.all(np.diag(covariance) > 2 * posterior_var)  # the bias is large here, and the chain must show it
    for j in range(3):
        assert abs(chain[:, j].mean() - mean[j]) < Z * mcse(chain[:, j]), f"mean {j}"
        squared = (chain[:, j] - mean[j]) ** 2
        assert abs(squared.mean() - covariance[j, j]) < Z * mcse(squared), f"variance {j}"


def test_sgld_runs_on_logistic_regression_with_the_inference_spec():
    """inference/sgld.toml on models/logistic_regression.toml (minibatches of 10 of 100), with a tiny budget."""
    loaded = load_spec(
        REPO / "models" / "logistic_regression.toml",
        inference=REPO / "inference" / "sgld.toml",
        overrides=["inference.num_warmup=5", "inference.num_samples=20"],
    )
    model = loaded.model
    assert loaded.settings.inference.method == "sgld" and loaded.settings.inference.batch_size == 10
    draws = infer(model, loaded.settings)
    assert draws.posterior["alpha"].shape == (1, 20) and draws.posterior["beta"].shape == (1, 20, 3)
    assert all(np.all(np.isfinite(value)) for value in draws.posterior.values())
    assert np.ptp(draws.posterior["alpha"]) > 0


# --- what cannot be minibatched ---


def test_sgld_names_a_plate_holding_a_latent_variable():
    model = load_bayes_model(REPO / "models" / "eight_schools.toml")
    with pytest.raises(SpecError, match=r"plates\.school: .*latent variable 'theta_raw'"):
        infer(model, BayesInferenceSpec(inference=SGLDSpec(batch_size=4)))


def test_sgld_names_an_unknown_plate(linear):
    with pytest.raises(SpecError, match=r"plate 'ob'.*did you mean 'obs'"):
        infer(linear[0], BayesInferenceSpec(inference=SGLDSpec(plate="ob")))


@pytest.mark.parametrize(
    "variables, plates, message",
    [
        (
            {"a": "Normal(0, 1)", "y": {"dist": "Normal(a, 1)", "plate": ["g", "obs"], "observed": "y"}},
            {"g": 2, "obs": 3},
            r"plates\.obs: .*variables\.y lists it inside plate 'g'",
        ),
        (
            {
                "a": "Normal(0, 1)",
                "eta": {"value": "a + x", "plate": "obs"},
                "total": {"value": "sum(eta)"},
                "y": {"dist": "Normal(eta, 1)", "plate": "obs", "observed": "y"},
            },
            {"obs": 3},
            r"plates\.obs: .*variables\.total, outside the plate, reads 'eta'",
        ),
        ({"a": "Normal(0, 1)"}, {"obs": 3}, r"plates\.obs: .*no variable lives in it"),
    ],
    ids=["nested", "read-outside", "empty"],
)
def test_plates_that_cannot_be_minibatched_are_named(variables, plates, message):
    data = {"x": [0.1, 0.2, 0.3], "y": [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]] if "g" in plates else [1.0, 2.0, 3.0]}
    model = model_from(variables, data, plates)
    with pytest.raises(SpecError, match=message):
        model.pyro_model(subsample={"obs": 2})


@pytest.mark.parametrize("batch", [0, 2.5, True])
def test_a_batch_size_must_be_a_positive_integer(linear, batch):
    with pytest.raises(SpecError, match=r"plates\.obs: the minibatch size must be a positive integer"):
        linear[0].pyro_model(subsample={"obs": batch})


def test_a_per_element_value_of_the_parameters_outside_the_plate_is_explained():
    """eta has N entries but depends on a parameter, so it is not indexed: the message says to move it."""
    model = model_from(
        {
            "a": "Normal(0, 1)",
            "eta": {"value": "a + x"},
            "y": {"dist": "Normal(eta, 1)", "plate": "obs", "observed": "y"},
        },
        {"x": [0.1, 0.2, 0.3], "y": [1.0, 2.0, 3.0]},
        {"obs": 3},
    )
    with pytest.raises(SpecError, match=r"variables\.y\.dist: .*plate 'obs' is subsampled.*inside the plate"):
        poutine.trace(functools.partial(model.pyro_model, subsample={"obs": 2})).get_trace()


def test_the_default_plate_is_the_likelihood_plate():
    observed = {"dist": "Normal(a, 1)", "observed": "y"}
    data = {"y": [1.0, 2.0, 3.0], "z": [1.0, 2.0]}
    one = model_from({"a": "Normal(0, 1)", "y": {**observed, "plate": "obs"}}, data, {"obs": 3})
    assert likelihood_plate(one.spec) == "obs"
    two = model_from(
        {"a": "Normal(0, 1)", "y": {**observed, "plate": "obs"}, "z": {**observed, "plate": "p", "observed": "z"}},
        data,
        {"obs": 3, "p": 2},
    )
    with pytest.raises(SpecError, match=r"plates 'obs', 'p': name the one to subsample \(inference\.plate\)"):
        likelihood_plate(two.spec)
    none = model_from({"a": "Normal(0, 1)", "y": {"dist": "Normal(a, 1)", "shape": [3], "observed": "y"}}, data, {})
    with pytest.raises(SpecError, match="no observed variable lies in a plate"):
        likelihood_plate(none.spec)
