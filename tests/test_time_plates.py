"""Time plates (``[plates] time = { size = "T", step = "t" }``): recursions computed one step at a time.

- The log densities of NumPyro's ``scan`` and Pyro's ``pyro.markov`` loop (step sites ``name__t``) agree, and equal
  a hand computation: a local-level model with sampled states, GARCH(1,1), ARMA(1,1), and a hidden Markov model
  whose states are summed out by enumeration (against the forward algorithm; also posteriordb's bball HMM against
  Stan's forward algorithm, which has no initial distribution).
- The local level's posterior with its states sampled equals that of the same model with the states marginalized
  by a Kalman filter written in the language as a deterministic recursion.
- Spec errors name the key; the posterior predictive of ARMA is one step ahead; Pyro NUTS and SVI run end to end.
"""

import copy
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyro
import pytest
import torch
from numpyro.infer.util import log_density
from pyro import poutine
from scipy import stats
from scipy.special import logsumexp
from test_cli import cli

from ppgen.errors import SpecError
from ppgen.evaluate import inference_data
from ppgen.models.bayes import bayes_model_from_tables, load_bayes_model
from ppgen.posterior import infer
from ppgen.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]
LOCAL_LEVEL = REPO / "models" / "local_level.toml"
GARCH = REPO / "models" / "garch11.toml"
ARMA = REPO / "models" / "posteriordb" / "arma-arma11.toml"
BBALL = REPO / "models" / "posteriordb" / "bball_drive_event_0-hmm_drive_0.toml"
# Sums of a few hundred float64 terms computed by different libraries (and numpy/scipy): equal up to rounding.
RTOL = 1e-9

# A two-state HMM with Gaussian emissions: z[0] ~ Categorical(rho), z[t] ~ Categorical(Gamma[z[t - 1]]).
HMM = {
    "data": {"T": 8, "rho": [0.3, 0.7], "y": [-1.0, -1.2, 0.9, 1.1, 1.0, -0.8, 0.2, 1.4]},
    "plates": {"time": {"size": "T", "step": "t"}},
    "variables": {
        "Gamma": {"dist": "Dirichlet(ones(2) * 2)", "shape": [2]},
        "mu": {"dist": "Normal(0, 2)", "shape": [2]},
        "z": {"dist": "Categorical(where(t == 0, rho, Gamma[z[t - 1]]))", "plate": "time", "init": "0"},
        "y": {"dist": "Normal(mu[z], 0.5)", "plate": "time", "observed": "y"},
    },
}


def hmm_model():
    return bayes_model_from_tables(copy.deepcopy(HMM), Path("."), "hmm.toml")


# ----------------------------------------------------------------------------------------- log densities


def numpyro_log_joints(model, points: list[dict], enumerate_discrete: bool = False) -> np.ndarray:
    """log p(params, data) of the NumPyro model at each point (float64; one jit-compiled, vmapped call), its discrete
    sites summed out with funsor if asked."""
    with jax.enable_x64(True):
        batched = {name: jnp.asarray(np.stack([point[name] for point in points])) for name in points[0]}
        data, numpyro_model = model.jax_data(), model.numpyro_model
        density = log_density
        if enumerate_discrete:
            from numpyro.contrib.funsor import config_enumerate, enum
            from numpyro.contrib.funsor import log_density as density

            numpyro_model = enum(config_enumerate(numpyro_model), -1 - model.max_plate_nesting)
        return np.asarray(jax.jit(jax.vmap(lambda params: density(numpyro_model, (data,), {}, params)[0]))(batched))


def pyro_sites(model, params: dict) -> dict[str, torch.Tensor]:
    """NumPyro-layout values (a time plate's variable [T, ...]) as the Pyro model's sites (step sites ``name__t``)."""
    return model.pyro_sites({name: torch.as_tensor(np.asarray(value)) for name, value in params.items()})


def pyro_log_joint(model, params: dict) -> float:
    conditioned = poutine.condition(model.pyro_model, pyro_sites(model, params))
    return poutine.trace(conditioned).get_trace().log_prob_sum().item()


def pyro_enumerated_log_joint(model, params: dict) -> float:
    """log p(params, data) with the discrete sites summed out: TraceEnum_ELBO with an empty guide is exactly that."""
    conditioned = poutine.condition(model.pyro_model, pyro_sites(model, params))
    elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=model.max_plate_nesting)
    with torch.no_grad():
        return -elbo.loss(conditioned, lambda *args, **kwargs: None)


def assert_both_backends(model, points: list[dict], expected: list[float], enumerate_discrete: bool = False) -> None:
    pyro_values = [(pyro_enumerated_log_joint if enumerate_discrete else pyro_log_joint)(model, p) for p in points]
    np.testing.assert_allclose(numpyro_log_joints(model, points, enumerate_discrete), expected, rtol=RTOL)
    np.testing.assert_allclose(pyro_values, expected, rtol=RTOL)


def test_local_level_log_joint():
    model = load_bayes_model(LOCAL_LEVEL)
    y = model.data["y"]
    rng = np.random.default_rng(0)
    points, expected = [], []
    for _ in range(2):
        sigma_level, sigma_obs = 0.3 + rng.uniform(size=2)
        level0 = rng.normal()
        level = level0 + np.cumsum(rng.normal(0, sigma_level, len(y)))
        params = {"sigma_level": sigma_level, "sigma_obs": sigma_obs, "level0": level0, "level": level}
        previous = np.append(level0, level[:-1])
        points.append(params)
        expected.append(
            stats.halfnorm.logpdf([sigma_level, sigma_obs]).sum()
            + stats.norm.logpdf(level0, 0, 5)
            + stats.norm.logpdf(level, previous, sigma_level).sum()
            + stats.norm.logpdf(y, level, sigma_obs).sum()
        )
    assert_both_backends(model, points, expected)


def test_garch_log_joint():
    model = load_bayes_model(GARCH)
    assert model.latent_names == ["mu", "alpha0", "alpha1", "beta1__raw"]
    y, sigma1 = model.data["y"], float(model.data["sigma1"])
    points, expected = [], []
    for mu, alpha0, alpha1, u in [(0.4, 0.3, 0.2, 0.5), (0.6, 0.1, 0.7, 0.9)]:
        beta1 = (1 - alpha1) * u  # beta1 in (0, 1 - alpha1) is the deterministic image of beta1__raw u in (0, 1)
        sigma = np.empty_like(y)
        sigma[0] = sigma1
        for t in range(1, len(y)):
            sigma[t] = np.sqrt(alpha0 + alpha1 * (y[t - 1] - mu) ** 2 + beta1 * sigma[t - 1] ** 2)
        # flat priors; the density of u carries the Jacobian of u -> beta1, log(1 - alpha1)
        expected.append(stats.norm.logpdf(y, mu, sigma).sum() + np.log(1 - alpha1))
        points.append({"mu": mu, "alpha0": alpha0, "alpha1": alpha1, "beta1__raw": u})
    assert_both_backends(model, points, expected)


def arma_means(y: np.ndarray, mu: float, phi: float, theta: float) -> np.ndarray:
    """nu[t] = mu + phi * y[t - 1] + theta * err[t - 1] (y[-1] := mu, err[-1] := 0), err[t] = y[t] - nu[t]."""
    nu, err = np.empty_like(y), 0.0
    for t in range(len(y)):
        nu[t] = mu + phi * (mu if t == 0 else y[t - 1]) + theta * err
        err = y[t] - nu[t]
    return nu


def test_arma_log_joint():
    model = load_bayes_model(ARMA)
    y = model.data["y"]
    points, expected = [], []
    for mu, phi, theta, sigma in [(0.1, 0.8, -0.3, 0.2), (-0.5, 0.2, 0.6, 1.1)]:
        points.append({"mu": mu, "phi": phi, "theta": theta, "sigma": sigma})
        expected.append(
            stats.norm.logpdf(mu, 0, 10)
            + stats.norm.logpdf([phi, theta], 0, 2).sum()
            + stats.halfcauchy.logpdf(sigma, scale=2.5)
            + stats.norm.logpdf(y, arma_means(y, mu, phi, theta), sigma).sum()
        )
    assert_both_backends(model, points, expected)


def forward_log_likelihood(log_start: np.ndarray, log_transition: np.ndarray, log_emission: np.ndarray) -> float:
    """log sum_z exp(log_start[z0] + sum_t log_transition[z(t-1), z(t)] + sum_t log_emission[t, z(t)])."""
    alpha = log_start + log_emission[0]
    for t in range(1, len(log_emission)):
        alpha = logsumexp(alpha[:, None] + log_transition, axis=0) + log_emission[t]
    return float(logsumexp(alpha))


def test_hmm_log_joint_is_the_forward_algorithm():
    model = hmm_model()
    assert model.discrete_names == ["z"]
    rho, y = model.data["rho"], model.data["y"]
    points, expected = [], []
    for gamma, mu in [([[0.8, 0.2], [0.3, 0.7]], [-1.0, 1.0]), ([[0.5, 0.5], [0.1, 0.9]], [0.3, -0.4])]:
        gamma, mu = np.array(gamma), np.array(mu)
        points.append({"Gamma": gamma, "mu": mu})
        expected.append(
            sum(stats.dirichlet.logpdf(row, [2.0, 2.0]) for row in gamma)
            + stats.norm.logpdf(mu, 0, 2).sum()
            + forward_log_likelihood(np.log(rho), np.log(gamma), stats.norm.logpdf(y[:, None], mu, 0.5))
        )
    assert_both_backends(model, points, expected, enumerate_discrete=True)


def stan_bball_target(data: dict, draw: dict) -> float:
    """The target of posteriordb's hmm_drive_0 Stan program (its forward algorithm starts from weight 1 per state)."""
    log_emission = stats.expon.logpdf(data["u"][:, None], scale=1 / draw["phi"]) + stats.expon.logpdf(
        data["v"][:, None], scale=1 / draw["lambda"]
    )
    theta = np.stack([draw["theta1"], draw["theta2"]])
    priors = (
        stats.dirichlet.logpdf(draw["theta1"], data["alpha"][0])
        + stats.dirichlet.logpdf(draw["theta2"], data["alpha"][1])
        + stats.norm.logpdf(draw["phi"], [0, 3], 1).sum()
        + stats.norm.logpdf(draw["lambda"], [0, 3], 1).sum()
    )
    return priors + forward_log_likelihood(np.zeros(2), np.log(theta), log_emission)


def test_bball_hmm_log_joint_is_stans_target(shared_data):
    """Exactly Stan's target (no constant dropped) at the first reference draws, on both backends."""
    model = load_bayes_model(BBALL)
    folder = shared_data / "posteriordb" / BBALL.stem
    chain = json.loads((folder / "reference_draws.json").read_text())[0]
    points, expected = [], []
    for index in range(2):  # each point costs Pyro's enumeration about a second and a half
        names = ("theta1", "theta2", "phi", "lambda")
        draw = {name: np.array([chain[f"{name}[{k}]"][index] for k in (1, 2)]) for name in names}
        points.append({"lambda_" if name == "lambda" else name: value for name, value in draw.items()})
        expected.append(stan_bball_target(model.data, draw))
    assert_both_backends(model, points, expected, enumerate_discrete=True)


# ------------------------------------------------------------------------------ Kalman filter against states

# The local level with the states summed out: a Kalman filter in the language, carrying the filter's mean m and
# variance P of level[t] given y[0..t]. R is the variance of level[t] given y[0..t-1]; y[t] ~ Normal(m[t - 1],
# sqrt(R + sigma_obs^2)) is the prediction error decomposition of the marginal likelihood. init: level0's prior.
KALMAN_VARIABLES = """
sigma_level = "HalfNormal(1)"
sigma_obs = "HalfNormal(1)"
R = { value = "P[t - 1] + sigma_level ** 2", plate = "time" }
y = { dist = "Normal(m[t - 1], sqrt(R + sigma_obs ** 2))", plate = "time", observed = "y" }
m = { value = "m[t - 1] + R / (R + sigma_obs ** 2) * (y[t] - m[t - 1])", plate = "time", init = "0" }
P = { value = "R * sigma_obs ** 2 / (R + sigma_obs ** 2)", plate = "time", init = "25" }
"""


def kalman_spec(tmp_path: Path) -> Path:
    """models/local_level.toml with the Kalman filter's [variables] (the same data and [inference])."""
    head, rest = LOCAL_LEVEL.read_text().split("[variables]")
    path = tmp_path / "kalman.toml"
    path.write_text(f"{head}[variables]{KALMAN_VARIABLES}\n[inference]{rest.split('[inference]')[1]}")
    return path


def kalman_log_likelihood(y: np.ndarray, sigma_level: float, sigma_obs: float) -> float:
    """log p(y | sigma_level, sigma_obs) of the local level with level0 ~ Normal(0, 5), by the Kalman filter."""
    mean, variance, total = 0.0, 25.0, 0.0
    for value in y:
        predicted = variance + sigma_level**2
        total += stats.norm.logpdf(value, mean, np.sqrt(predicted + sigma_obs**2))
        gain = predicted / (predicted + sigma_obs**2)
        mean, variance = mean + gain * (value - mean), predicted * (1 - gain)
    return total


def test_kalman_spec_is_the_marginal_likelihood(tmp_path):
    model = load_bayes_model(kalman_spec(tmp_path))
    assert model.latent_names == ["sigma_level", "sigma_obs"]
    scales = [(0.4, 0.8), (1.3, 0.2), (0.05, 1.5)]
    points = [{"sigma_level": np.array(a), "sigma_obs": np.array(b)} for a, b in scales]
    expected = [stats.halfnorm.logpdf([a, b]).sum() + kalman_log_likelihood(model.data["y"], a, b) for a, b in scales]
    assert_both_backends(model, points, expected)


@pytest.mark.slow
def test_sampled_states_and_kalman_filter_give_one_posterior(tmp_path):
    kalman = kalman_spec(tmp_path)
    # 4 x 500 draws: ESS about 150 (states sampled) and 450 (filtered) for sigma_level, about 40 s on one core
    budget = ["inference.num_chains=4", "inference.num_warmup=300", "inference.num_samples=500"]
    budget += ["inference.chain_method=sequential", "inference.seed=3", "inference.target_accept_prob=0.9"]
    means = {}
    for path in (LOCAL_LEVEL, kalman):
        loaded = load_spec(path, overrides=budget)
        draws = infer(loaded.model, loaded.settings).posterior
        means[path.stem] = {
            name: (draws[name].mean(), float(inference_data.mcse(np.asarray(draws[name]), method="mean")))
            for name in ("sigma_level", "sigma_obs")
        }
    # The two posteriors are one: their means differ by Monte Carlo error only, within z = 4 combined MCSEs.
    for name in ("sigma_level", "sigma_obs"):
        (states, states_mcse), (filtered, filtered_mcse) = means["local_level"][name], means["kalman"][name]
        assert abs(states - filtered) < 4 * np.hypot(states_mcse, filtered_mcse), (name, means)


# ------------------------------------------------------------------------------------------------- errors

PLATES = {"time": {"size": "T", "step": "t"}}
DATA = {"T": 3, "y": [1.0, 2.0, 3.0], "N": 2}
Y = {"dist": "Normal(x, 1)", "plate": "time", "observed": "y"}


def model_from(variables: dict, plates: dict | None = None):
    tables = {"data": DATA, "plates": plates or PLATES, "variables": {"s": "HalfNormal(1)", **variables}}
    return bayes_model_from_tables(tables, Path("."), "test.toml")


@pytest.mark.parametrize(
    "variables, plates, message",
    [
        (
            {"x": {"dist": "Normal(x[t - 2], s)", "plate": "time", "init": "0"}, "y": Y},
            None,
            r"^variables\.x\.dist: x\[t - 2\] reads another step of 'x'",
        ),
        (
            {"x": {"dist": "Normal(x[t - 1], s)", "plate": "time"}, "y": Y},
            None,
            r"^variables\.x\.init: x reads x\[t - 1\], so x needs an init",
        ),
        (
            {"x": {"dist": "Normal(x[t - 1], s)", "plate": ["obs", "time"], "init": "0"}},
            {**PLATES, "obs": "N"},
            r"^variables\.x\.plate: the time plate 'time' must come first \(outermost\)",
        ),
        (
            {"x": {"dist": "Normal(x[t - 1], s)", "plate": "time", "init": "0"}},
            {"time": {"size": "T", "step": "y"}},
            r"^plates\.time\.step: 'y' is also a data key",
        ),
        (
            {"x": {"dist": "Normal(x[t - 1], s)", "plate": "time", "init": "0", "shape": [2]}},
            None,
            r"^variables\.x\.init: shape \(\), but x has shape \(2,\) at each step of plate 'time'",
        ),
        (
            {"x": {"value": "x[t - 1][0] + y[t]", "plate": "time", "init": "zeros(2)"}},
            None,
            r"^variables\.x\.init: shape \(2,\), but x has shape \(\) at each step of plate 'time'",
        ),
    ],
    ids=["lag-2", "missing-init", "not-outermost", "step-named-like-data", "init-shape", "init-shape-value"],
)
def test_spec_errors_name_the_key(variables, plates, message):
    with pytest.raises(SpecError, match=message) as error:
        model_from(variables, plates)
    assert "\n" not in str(error.value)


# ----------------------------------------------------------------------------------- posterior predictive


def test_arma_posterior_predictive_is_one_step_ahead():
    """Replicates of y[t] are Normal(nu[t], sigma) with nu[t] from the observed history, not the replicated one."""
    from numpyro.infer import Predictive

    model = load_bayes_model(ARMA)
    y = model.data["y"]
    point = {"mu": 0.1, "phi": 0.8, "theta": -0.3, "sigma": 0.2}
    num_draws = 2000
    with jax.enable_x64(True):
        samples = {name: jnp.full((num_draws,), value) for name, value in point.items()}
        predictive = Predictive(lambda data: model.numpyro_model(data, predict=True), posterior_samples=samples)
        replicated = predictive(jax.random.PRNGKey(0), model.jax_data())
    nu = arma_means(y, point["mu"], point["phi"], point["theta"])
    np.testing.assert_allclose(np.asarray(replicated["nu"]), np.broadcast_to(nu, (num_draws, len(y))), rtol=RTOL)
    draws = np.asarray(replicated["y"])
    assert draws.shape == (num_draws, len(y))
    # Each step's mean over the draws is within z = 5 standard errors sigma / sqrt(n) of nu[t] (200 steps: a
    # false alarm has probability < 200 * 6e-7). Replicating from the replicated history would add the
    # propagated noise, sd(nu_rep[t]) ~ sigma * |phi| ~ 0.16, and an sd of the residuals well above sigma.
    z = (draws.mean(axis=0) - nu) / (point["sigma"] / np.sqrt(num_draws))
    assert np.abs(z).max() < 5
    residual_sd = (draws - nu).std(axis=0, ddof=1)
    # the sd of n normal draws is within 5 * sigma / sqrt(2 n) of sigma
    assert np.abs(residual_sd - point["sigma"]).max() < 5 * point["sigma"] / np.sqrt(2 * num_draws)


# ------------------------------------------------------------------------------------------ end to end


def local_level_with(tmp_path: Path, inference: str) -> Path:
    """models/local_level.toml with its [inference] table replaced (the data stay in the spec)."""
    head = LOCAL_LEVEL.read_text().split("[inference]")[0]
    path = tmp_path / "local_level.toml"
    path.write_text(head + "[inference]\n" + inference + "\n[evaluation]\nplots = false\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize(
    "inference",
    [
        'method = "nuts"\nbackend = "pyro"\nnum_chains = 1\nnum_warmup = 10\nnum_samples = 10\nmax_tree_depth = 4',
        'method = "svi"\nnum_steps = 50\nnum_samples = 20',
    ],
    ids=["pyro-nuts", "svi"],
)
def test_local_level_runs_end_to_end(tmp_path, inference):
    import arviz as az

    out = tmp_path / "run"
    result = cli("run", local_level_with(tmp_path, inference), "--out", out, "--quiet")
    assert result.code == 0, result.err
    posterior = az.from_netcdf(out / "posterior.nc").posterior
    num_chains, num_draws = (1, 10) if "nuts" in inference else (4, 5)  # SVI's 20 draws split into 4 chains
    assert posterior["level"].shape == (num_chains, num_draws, 50)
    assert not any(name.startswith("level__") for name in posterior.data_vars)
