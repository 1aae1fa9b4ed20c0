"""Discrete latent variables marginalized by enumeration: exact log densities of an enumerated mixture and hidden
Markov model on both backends, the recovered discrete draws and pointwise marginals, NUTS and SVI on a mixture,
and ``ppgen run`` / ``ppgen sbc`` on the example specs."""

from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

from ppgen.cli import main
from ppgen.infer import discrete
from ppgen.infer.discrete import discrete_draws, has_pointwise_marginal, marginal_log_likelihood
from ppgen.models.bayes import bayes_model_from_tables, load_bayes_model

EXAMPLES = Path(__file__).parent.parent / "examples"

# A mixture with known weights, offsets and scale: mu is the only continuous latent (no Jacobian).
W, OFFSET, Y_MIX = np.array([0.3, 0.7]), np.array([-2.0, 2.0]), np.array([-2.5, -1.0, 0.3, 1.9, 2.4, 3.1])
MIXTURE = {
    "model": {"name": "mixture"},
    "data": {"N": len(Y_MIX), "w": W.tolist(), "offset": OFFSET.tolist(), "y": Y_MIX.tolist()},
    "plates": {"obs": "N"},
    "variables": {
        "mu": "Normal(0, 2)",
        "z": {"dist": "Categorical(w)", "plate": "obs"},
        "y": {"dist": "Normal(mu + offset[z], 1)", "plate": "obs", "observed": "y"},
    },
}

# A two-state HMM with known initial distribution, transitions and scale: the state means are the latents.
RHO, GAMMA, SIGMA = np.array([0.6, 0.4]), np.array([[0.8, 0.2], [0.3, 0.7]]), 0.8
Y_HMM = np.array([-1.2, -0.4, 1.3, 0.2, 1.6])
HMM = {
    "model": {"name": "hmm"},
    "data": {"T": len(Y_HMM), "rho": RHO.tolist(), "Gamma": GAMMA.tolist(), "sigma": SIGMA, "y": Y_HMM.tolist()},
    "plates": {"time": {"size": "T", "step": "t"}},
    "variables": {
        "mu": {"dist": "Normal(0, 3)", "shape": [2]},
        "z": {"dist": "Categorical(where(t == 0, rho, Gamma[z[t - 1]]))", "plate": "time", "init": "0"},
        "y": {"dist": "Normal(mu[z], sigma)", "plate": "time", "observed": "y"},
    },
}


def _model(tables):
    return bayes_model_from_tables(tables, Path("."), "test")


def _mixture_terms(mu: float) -> np.ndarray:
    """[N, K] log w_k + log Normal(y_n | mu + offset_k, 1)."""
    return np.log(W) + stats.norm.logpdf(Y_MIX[:, None], mu + OFFSET, 1.0)


def _mixture_log_joint(mu: float) -> float:
    return stats.norm.logpdf(mu, 0, 2) + logsumexp(_mixture_terms(mu), axis=1).sum()


def _emissions(mu: np.ndarray) -> np.ndarray:
    """[T, K] log Normal(y_t | mu_k, sigma)."""
    return stats.norm.logpdf(Y_HMM[:, None], mu, SIGMA)


def _forward(mu: np.ndarray) -> np.ndarray:
    """[T, K] log alpha_t(k) = log p(y_0..t, z_t = k | mu) (the forward algorithm)."""
    emissions, alpha = _emissions(mu), []
    alpha.append(np.log(RHO) + emissions[0])
    for t in range(1, len(Y_HMM)):
        alpha.append(logsumexp(alpha[-1][:, None] + np.log(GAMMA), axis=0) + emissions[t])
    return np.array(alpha)


def _hmm_log_joint(mu: np.ndarray) -> float:
    return stats.norm.logpdf(mu, 0, 3).sum() + logsumexp(_forward(mu)[-1])


def _numpyro_potential(model):
    """value of mu -> NumPyro's potential energy (minus the log joint, discrete variables enumerated)."""
    from numpyro.infer.util import initialize_model

    with jax.enable_x64(True):
        info = initialize_model(jax.random.PRNGKey(0), model.numpyro_model, model_args=(model.jax_data(),))
        compiled = jax.jit(info.potential_fn)

    def potential(value: np.ndarray) -> float:
        with jax.enable_x64(True):
            return float(compiled({"mu": jax.numpy.asarray(value, dtype=jax.numpy.float64)}))

    return potential


def _pyro_potential(model):
    """value of mu -> Pyro's potential energy (discrete variables enumerated)."""
    from pyro.infer.mcmc.util import initialize_model

    _, potential, _, _ = initialize_model(
        model.pyro_model, model_args=(model.torch_data(),), max_plate_nesting=model.max_plate_nesting
    )
    return lambda value: float(potential({"mu": torch.as_tensor(value, dtype=torch.float64)}))


# Both log densities are the same sums in float64: they agree to rounding.
@pytest.mark.parametrize("potential_of", [_numpyro_potential, _pyro_potential], ids=["numpyro", "pyro"])
def test_enumerated_mixture_log_density_is_the_logsumexp(potential_of):
    potential = potential_of(_model(MIXTURE))
    for mu in (-0.7, 0.0, 1.3):
        np.testing.assert_allclose(-potential(np.array(mu)), _mixture_log_joint(mu), rtol=1e-10)


@pytest.mark.parametrize("potential_of", [_numpyro_potential, _pyro_potential], ids=["numpyro", "pyro"])
def test_enumerated_hmm_log_density_is_the_forward_algorithm(potential_of):
    potential = potential_of(_model(HMM))
    for mu in ([-1.0, 1.0], [0.5, -0.3], [2.0, 2.5]):
        mu = np.array(mu)
        np.testing.assert_allclose(-potential(mu), _hmm_log_joint(mu), rtol=1e-10)


def test_pointwise_marginal_only_where_discrete_variables_are_local():
    assert has_pointwise_marginal(_model(MIXTURE))
    assert has_pointwise_marginal(load_bayes_model(EXAMPLES / "mixture.toml"))
    assert not has_pointwise_marginal(load_bayes_model(EXAMPLES / "change_point.toml"))
    assert not has_pointwise_marginal(_model(HMM))


def test_mixture_pointwise_marginal_log_likelihood():
    model, mus = _model(MIXTURE), np.array([-0.7, 0.0, 1.3])
    pointwise = marginal_log_likelihood(model, {"mu": mus}, None)["y"]
    expected = np.stack([logsumexp(_mixture_terms(mu), axis=1) for mu in mus])
    np.testing.assert_allclose(pointwise, expected, rtol=1e-10)


def _frequencies_match(draws: np.ndarray, probabilities: np.ndarray) -> None:
    """Each frequency of state 1 within 4.5 binomial standard errors of its exact probability (a false alarm has
    chance below 1e-5 per element)."""
    count = len(draws)
    error = 4.5 * np.sqrt(probabilities * (1 - probabilities) / count) + 1e-12
    assert np.all(np.abs((np.asarray(draws) == 1).mean(0) - probabilities) <= error)


def test_mixture_assignments_given_theta():
    model, mu, count = _model(MIXTURE), 0.4, 4000
    terms = _mixture_terms(mu)
    posterior = np.exp(terms - logsumexp(terms, axis=1, keepdims=True))  # p(z_n = k | mu, y_n)
    flat = {"mu": np.full(count, mu)}
    _frequencies_match(discrete_draws(model, flat, None, seed=0, temperature=1)["z"], posterior[:, 1])
    most_likely = discrete_draws(model, flat, None, seed=0, temperature=0)["z"]
    np.testing.assert_array_equal(most_likely, np.broadcast_to(posterior.argmax(1), most_likely.shape))


def _viterbi(mu: np.ndarray) -> np.ndarray:
    emissions = _emissions(mu)
    score, back = np.log(RHO) + emissions[0], []
    for t in range(1, len(Y_HMM)):
        candidates = score[:, None] + np.log(GAMMA)
        back.append(candidates.argmax(0))
        score = candidates.max(0) + emissions[t]
    path = [int(score.argmax())]
    for pointers in reversed(back):
        path.append(int(pointers[path[-1]]))
    return np.array(path[::-1])


def _smoothed(mu: np.ndarray) -> np.ndarray:
    """[T, K] p(z_t = k | mu, y) by forward-backward."""
    alpha, emissions = _forward(mu), _emissions(mu)
    beta = [np.zeros(2)]
    for t in range(len(Y_HMM) - 1, 0, -1):
        beta.append(logsumexp(np.log(GAMMA) + emissions[t] + beta[-1], axis=1))
    joint = alpha + np.array(beta[::-1])
    return np.exp(joint - logsumexp(joint, axis=1, keepdims=True))


def test_results_hold_discrete_draws_and_leave_out_a_tied_likelihood():
    from ppgen.evaluate import inference_data
    from ppgen.infer.draws import Draws
    from ppgen.posterior import results_of

    model = load_bayes_model(EXAMPLES / "change_point.toml")
    draws = Draws({"early": np.full((2, 5), 3.0), "late": np.full((2, 5), 1.0)})
    results = results_of(model, draws)
    posterior = inference_data.get_group(results, "posterior")
    assert posterior["s"].shape == posterior["s_map"].shape == (2, 5)
    # rate is computed with each draw of s: early before it, late from it on.
    years = np.arange(model.data["T"])
    expected = np.where(years < np.asarray(posterior["s"])[..., None], 3.0, 1.0)
    np.testing.assert_array_equal(np.asarray(posterior["rate"]), expected)
    assert inference_data.get_group(results, "posterior_predictive")["D"].shape == (2, 5, model.data["T"])
    assert "log_likelihood" not in inference_data.groups(results)  # the years share s: nothing for LOO to leave out


# The JAX forward-backward path (a chain of scalar states), and Pyro's infer_discrete that serves the other
# discrete variables of time plates.
RECOVERIES = {
    "forward_backward": lambda model, *args: {"z": discrete._chain_discrete(model, "z", *args)},
    "pyro": discrete._pyro_discrete,
}


@pytest.mark.parametrize("recover", RECOVERIES.values(), ids=RECOVERIES.keys())
def test_hmm_most_likely_path_is_viterbi(recover):
    model = _model(HMM)
    mus = np.array([[-0.5, 0.9], [0.9, -0.5], [0.2, 0.3]])
    paths = recover(model, {"mu": mus}, None, 0, 0)["z"]
    np.testing.assert_array_equal(paths, np.stack([_viterbi(mu) for mu in mus]))


def test_hmm_state_draws_have_the_smoothed_marginals():
    model, mu, count = _model(HMM), np.array([-0.5, 0.9]), 4000
    paths = discrete_draws(model, {"mu": np.tile(mu, (count, 1))}, None, seed=0, temperature=1)["z"]
    _frequencies_match(paths, _smoothed(mu)[:, 1])
    # Pairs too: p(z_t = 1, z_{t+1} = 1 | mu, y), from the forward and backward messages.
    alpha, emissions = _forward(mu), _emissions(mu)
    beta = [np.zeros(2)]
    for t in range(len(Y_HMM) - 1, 0, -1):
        beta.append(logsumexp(np.log(GAMMA) + emissions[t] + beta[-1], axis=1))
    beta = np.array(beta[::-1])
    pair = np.exp(alpha[:-1, 1] + np.log(GAMMA[1, 1]) + emissions[1:, 1] + beta[1:, 1] - logsumexp(alpha[-1]))
    _frequencies_match((paths[:, :-1] == 1) & (paths[:, 1:] == 1), pair)


@pytest.mark.slow
def test_pyro_hmm_state_draws_have_the_smoothed_marginals():
    model, mu, count = _model(HMM), np.array([-0.5, 0.9]), 400
    paths = discrete._pyro_discrete(model, {"mu": np.tile(mu, (count, 1))}, None, 0, 1)["z"]
    _frequencies_match(paths, _smoothed(mu)[:, 1])


def _exact_mixture_posterior_mean() -> float:
    """E[mu | y] by quadrature: the posterior density is smooth and negligible outside [-8, 8]."""
    grid = np.linspace(-8, 8, 20001)
    log_density = np.array([_mixture_log_joint(mu) for mu in grid])
    density = np.exp(log_density - log_density.max())
    return float((grid * density).sum() / density.sum())


def _write_spec(tmp_path: Path, inference: dict) -> Path:
    import tomli_w

    path = tmp_path / "mixture.toml"
    path.write_bytes(tomli_w.dumps({**MIXTURE, "inference": inference}).encode())
    return path


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_nuts_recovers_the_exact_mixture_posterior(tmp_path, backend):
    from ppgen.evaluate import inference_data
    from ppgen.posterior import infer, results_of
    from ppgen.spec.load import load_spec

    inference = {"method": "nuts", "backend": backend, "num_warmup": 300, "num_samples": 1000, "num_chains": 1}
    spec = load_spec(_write_spec(tmp_path, inference))
    draws = infer(spec.model, spec.settings)
    assert set(draws.posterior) == {"mu"}
    results = results_of(spec.model, draws)
    posterior = inference_data.get_group(results, "posterior")
    assert {"mu", "z", "z_map"} <= set(posterior.data_vars)
    mu = np.asarray(posterior["mu"])
    mcse = inference_data.mcse(mu)
    # |mean - exact| < 4 MCSE: a false alarm has chance 6e-5 when the sampler is exact.
    assert abs(mu.mean() - _exact_mixture_posterior_mean()) < 4 * mcse
    assert inference_data.has_pointwise_log_likelihood(results)


def test_svi_fits_the_continuous_sites_with_the_discrete_summed_out(tmp_path):
    from ppgen.evaluate import inference_data
    from ppgen.posterior import infer, results_of
    from ppgen.spec.load import load_spec

    inference = {"method": "svi", "num_steps": 300, "lr": 0.05, "num_samples": 200}
    spec = load_spec(_write_spec(tmp_path, inference))
    draws = infer(spec.model, spec.settings)
    assert set(draws.posterior) == {"mu"}
    posterior = inference_data.get_group(results_of(spec.model, draws), "posterior")
    assert posterior["z"].shape[2:] == (len(Y_MIX),)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(path.stem for path in EXAMPLES.glob("*.toml")))
def test_ppgen_run_on_the_examples(tmp_path, name):
    # Every example spec (the README's walkthroughs: mixture, change point, HMM, ODE) runs through the CLI.
    from ppgen.evaluate import inference_data

    # A diagonal mass matrix: "auto" would first trace and compile the ODE's Hessian (tests/test_mass_matrix.py).
    budget = ["inference.num_warmup=30", "inference.num_samples=30", "inference.num_chains=1", "inference.mass=diag"]
    argv = ["run", str(EXAMPLES / f"{name}.toml"), "--out", str(tmp_path / name), "--quiet"]
    for setting in budget:
        argv += ["--set", setting]
    assert main(argv) == 0
    posterior = inference_data.get_group(inference_data.load(tmp_path / name / "posterior.nc"), "posterior")
    discrete = {"mixture": "z", "change_point": "s", "hmm": "z"}.get(name)
    if discrete is not None:
        assert {discrete, discrete + "_map"} <= set(posterior.data_vars)
    assert (tmp_path / name / "trace.png").is_file()  # one chain: no rank plot (tests/test_checks.py has one)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mixture", "hmm"])
def test_sbc_ranks_the_continuous_and_the_discrete_variables(tmp_path, name):
    from ppgen.calibration import run_calibration

    budget = ["inference.num_warmup=100", "inference.num_samples=100", "inference.num_chains=1"]
    result = run_calibration(
        EXAMPLES / f"{name}.toml", tmp_path / "sbc", overrides=budget, replicates=3, num_draws=20, progress=False
    )
    assert {"mu_low", "gap", "sigma", "z[0]"} <= set(result.ranks)
