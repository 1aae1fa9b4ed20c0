"""Declarative Bayesian models: the Pyro and NumPyro compilations agree (log joint, potential energy) on
every spec in models/ and on the posteriordb specs at reference draws; spec errors name the variable."""

import json
import re
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpyro import handlers
from numpyro.infer.util import log_density, potential_energy
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.infer.mcmc.util import initialize_model
from scipy import stats

from ppgen.errors import DataError, SpecError
from ppgen.models.bayes import bayes_model_from_tables, is_bayes_spec, load_bayes_model
from ppgen.models.initialization import pyro_init_to_uniform
from ppgen.spec.language import FUNCTIONS

REPO = Path(__file__).resolve().parents[1]
MODEL_FILES = sorted(p for p in (REPO / "models").glob("*.toml") if is_bayes_spec(tomllib.loads(p.read_text())))
POSTERIORDB_FILES = sorted((REPO / "models" / "posteriordb").glob("*.toml"))
# The log joint is a sum of float64 terms computed by different libraries: they agree to rounding.
RTOL = 1e-9
# With ODEs solved to 1e-10 (load_solved_tightly), the solutions agree to about 1e-9 relative (scipy's BDF serves
# the Pyro side of a stiff solver); the lognormal likelihoods scale that by |log y - log z| / sigma^2 < 100.
RTOL_ODE = 1e-7


def rtol_of(model) -> float:
    return RTOL_ODE if any(v.ode is not None for v in model.spec.variables.values()) else RTOL


def pyro_log_joint(model, params: dict) -> float:
    values = model.pyro_sites({k: torch.as_tensor(v) for k, v in params.items()})
    conditioned = poutine.condition(model.pyro_model, values)
    return poutine.trace(conditioned).get_trace().log_prob_sum().item()


def numpyro_log_joints(model, draws: list[dict]) -> np.ndarray:
    """NumPyro's log joint at each draw: one jit-compiled, vmapped call, in float64."""
    with jax.enable_x64(True):
        batched = {name: jnp.asarray(np.stack([draw[name] for draw in draws])) for name in draws[0]}
        data = model.jax_data()
        log_joint = jax.jit(jax.vmap(lambda params: log_density(model.numpyro_model, (data,), {}, params)[0]))
        return np.asarray(log_joint(batched))


def uniform_latents(model, seed: int) -> dict[str, np.ndarray]:
    """Latent values drawn uniformly in (-2, 2) on the unconstrained scale, which works for improper priors
    too; float64."""
    with torch.random.fork_rng(devices=[]), InitMessenger(pyro_init_to_uniform):
        torch.manual_seed(seed)
        trace = poutine.trace(model.pyro_model).get_trace()
    return {name: trace.nodes[name]["value"].numpy() for name in model.latent_names}


def model_from(variables: dict, data: dict | None = None, plates: dict | None = None, tmp_path=Path(".")):
    tables = {"data": data or {}, "plates": plates or {}, "variables": variables}
    return bayes_model_from_tables(tables, tmp_path, "test.toml")


def load_solved_tightly(path: Path):
    """The spec's model with its ODEs solved to 1e-10: the two backends' solvers (diffrax, torchdiffeq) take
    different steps, so their solutions, and the log joints, agree only to the tolerance they are solved to."""
    tables = tomllib.loads(path.read_text())
    for entry in tables["variables"].values():
        if isinstance(entry, dict) and "ode" in entry:
            entry.update(rtol=1e-10, atol=1e-10, max_steps=100_000)
    return bayes_model_from_tables(tables, path.parent, str(path))


@pytest.fixture(scope="module", params=MODEL_FILES, ids=lambda p: p.stem)
def model_file_model(request):
    return load_solved_tightly(request.param)


def test_the_conjugate_and_example_models_are_there():
    assert {p.stem for p in MODEL_FILES} >= {"eight_schools", "logistic_regression", "normal_normal", "beta_binomial"}


def test_pyro_and_numpyro_log_joints_agree(model_file_model):
    draws = [uniform_latents(model_file_model, seed) for seed in range(3)]
    expected = [pyro_log_joint(model_file_model, params) for params in draws]
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(numpyro_log_joints(model_file_model, draws), expected, rtol=rtol_of(model_file_model))


def test_pyro_and_numpyro_potential_energies_agree(model_file_model):
    """The unconstrained-space potential (minus log joint minus log-Jacobian) that NUTS uses."""
    model = model_file_model
    _, potential_fn, _, _ = initialize_model(
        model.pyro_model,
        model_args=(model.torch_data(),),
        init_strategy=pyro_init_to_uniform,
        max_plate_nesting=model.max_plate_nesting,
    )
    rng = np.random.default_rng(0)
    shapes = {name: value.shape for name, value in uniform_latents(model, 0).items()}
    points = [{name: rng.uniform(-2, 2, size=shape) for name, shape in shapes.items()} for _ in range(2)]
    expected = [potential_fn(model.pyro_sites({k: torch.as_tensor(v) for k, v in p.items()})).item() for p in points]
    with jax.enable_x64(True):
        batched = {name: jnp.asarray(np.stack([point[name] for point in points])) for name in shapes}
        data = model.jax_data()
        potential = jax.jit(jax.vmap(lambda point: potential_energy(model.numpyro_model, (data,), {}, point)))
        np.testing.assert_allclose(np.asarray(potential(batched)), expected, rtol=rtol_of(model))


def test_prior_predictive_from_both_backends(model_file_model):
    model = model_file_model
    try:
        model.check_proper()
    except SpecError:  # e.g. a bound that moves with another parameter: no exact sampler, said before any work
        with pytest.raises(SpecError, match="cannot"):
            model.prior_predictive(7, seed=1)
        return
    draws = {backend: model.prior_predictive(7, seed=1, backend=backend) for backend in ("pyro", "numpyro")}
    trace = poutine.trace(model.pyro_model).get_trace()
    shapes = {name: trace.nodes[name]["value"].shape for name in [*model.latent_names, *model.deterministic_names]}
    shapes.update({name: value.shape for name, value in model.observed_values.items()})
    sites = [*model.latent_names, *model.deterministic_names, *model.observed]
    for backend, samples in draws.items():
        assert list(samples) == sites, backend
        for name in sites:
            assert samples[name].shape == (7, *shapes[name]), (backend, name)
            assert np.all(np.isfinite(samples[name]))
    for name in model.observed:  # simulated, not copied from the data
        assert np.ptp(draws["numpyro"][name], axis=0).max() > 0


def test_prior_predictive_has_the_prior_predictive_spread():
    """normal_normal: y_i = mu + noise, so Var(y_i) = tau0^2 + sigma^2 = 5 and Cov(y_i, y_j) = tau0^2 = 4.

    With 4000 draws the sample variance has standard error 5 * sqrt(2 / 3999) = 0.11; 5 of those is the bound.
    """
    model = load_bayes_model(REPO / "models" / "normal_normal.toml")
    y = model.prior_predictive(4000, seed=0)["y"]
    assert np.var(y[:, 0]) == pytest.approx(5.0, abs=5 * 5 * np.sqrt(2 / 3999))
    assert np.cov(y[:, 0], y[:, 1])[0, 1] == pytest.approx(4.0, abs=0.6)  # Var of the covariance <= 5^2 * 2/N


def test_missing_observed_data_is_sampled():
    model = load_bayes_model(REPO / "models" / "eight_schools.toml")
    trace = poutine.trace(model.pyro_model).get_trace(model.torch_data(observed=False))
    assert not trace.nodes["y"]["is_observed"] and trace.nodes["y"]["value"].shape == (8,)
    data = {**model.torch_data(), "y": None}
    assert not poutine.trace(model.pyro_model).get_trace(data).nodes["y"]["is_observed"]
    assert set(model.jax_data(observed=False)) == {"J", "sigma"}
    assert model.torch_data()["y"].dtype == torch.int64 and model.torch_data()["sigma"].dtype == torch.int64


def test_flat_priors_get_the_jacobian_of_their_support_in_both_samplers():
    """Potential at unconstrained z = -(log p(y | x(z)) + log |dx/dz|), with Stan's transforms: exp for
    (0, inf), scaled logistic for (a, b), exp-cumsum for ordered vectors, upper - exp for (-inf, b)."""
    model = model_from(
        {
            "s": "Flat(lower=0)",
            "u": "Flat(lower=-1, upper=2)",
            "o": "FlatOrdered(2)",
            "n": "Flat(upper=1)",
            "y": {"dist": "Normal(u + o[1] + n, s)", "plate": "obs", "observed": "y"},
        },
        data={"y": [0.5, -1.2, 2.0]},
        plates={"obs": 3},
    )
    z = {"s": 0.3, "u": -0.4, "o": np.array([0.2, -0.5]), "n": 0.7}
    s, u, o, n = np.exp(0.3), -1 + 3 * stats.logistic.cdf(-0.4), np.array([0.2, 0.2 + np.exp(-0.5)]), 1 - np.exp(0.7)
    log_jacobian = 0.3 + np.log(3 * stats.logistic.pdf(-0.4)) - 0.5 + 0.7
    exact = -(stats.norm.logpdf([0.5, -1.2, 2.0], u + o[1] + n, s).sum() + log_jacobian)
    _, potential_fn, _, _ = initialize_model(
        model.pyro_model, (model.torch_data(),), init_strategy=pyro_init_to_uniform, max_plate_nesting=1
    )
    point = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in z.items()}
    assert potential_fn(point).item() == pytest.approx(exact, rel=1e-12)
    with jax.enable_x64(True):
        params = {k: jnp.asarray(v) for k, v in z.items()}
        assert float(potential_energy(model.numpyro_model, (), {}, params)) == pytest.approx(exact, rel=1e-12)
    with pytest.raises(SpecError, match="variables.s has an improper flat prior"):
        model.prior_predictive(2, seed=0)


def test_nested_plates_broadcast_like_pyro():
    """A plate with another inside it sits at dim -2, so a variable in it alone has shape [A, 1]."""
    model = model_from(
        {
            "u": {"dist": "Normal(0, 1)", "plate": "a"},
            "v": {"dist": "Normal(u, 1)", "plate": ["a", "b"]},
            "w": {"dist": "Normal(0, 1)", "plate": "b"},
            "s": {"value": "v + w", "plate": ["a", "b"]},
        },
        plates={"a": 2, "b": 3},
    )
    assert model.spec.plate_dims == {"a": -2, "b": -1} and model.max_plate_nesting == 2
    trace = poutine.trace(model.pyro_model).get_trace()
    assert {n: tuple(trace.nodes[n]["value"].shape) for n in "uvws"} == {
        "u": (2, 1),
        "v": (2, 3),
        "w": (3,),
        "s": (2, 3),
    }
    params = uniform_latents(model, 0)
    assert numpyro_log_joints(model, [params])[0] == pytest.approx(pyro_log_joint(model, params), rel=RTOL)


def test_observed_may_name_a_computed_value_or_a_latent():
    model = model_from(
        {
            "log_y": {"value": "log(y)", "plate": "obs"},
            "mu": "FlatOrdered(2)",
            "mu_prior": {"dist": "Normal(0, 2)", "shape": [2], "observed": "mu"},
            "sigma": "HalfNormal(1)",
            "z": {"dist": "Normal(mu[1], sigma)", "plate": "obs", "observed": "log_y"},
        },
        data={"y": [1.0, 2.0, 4.0], "x": 3},
        plates={"obs": "x"},
    )
    assert model.observed == {"z": "log_y"} and model.factor_names == ["mu_prior"]
    assert model.spec.transformed_data_names == ("log_y",) and model.deterministic_names == []
    assert model.spec.observed_data_keys == ("y",)
    np.testing.assert_allclose(model.observed_values["z"], np.log([1.0, 2.0, 4.0]))
    params = {"mu": np.array([-0.5, 0.4]), "sigma": np.array(0.7)}
    exact = (
        stats.norm.logpdf([-0.5, 0.4], 0, 2).sum()
        + stats.halfnorm.logpdf(0.7)
        + stats.norm.logpdf(np.log([1.0, 2.0, 4.0]), 0.4, 0.7).sum()
    )
    assert pyro_log_joint(model, params) == pytest.approx(exact, rel=1e-12)
    assert numpyro_log_joints(model, [params])[0] == pytest.approx(exact, rel=1e-12)
    with InitMessenger(pyro_init_to_uniform):  # mu cannot be sampled: it has an improper prior
        trace = poutine.trace(model.pyro_model).get_trace({"x": torch.tensor(3)})  # no y: z is simulated
    assert not trace.nodes["z"]["is_observed"] and "log_y" not in trace.nodes


SCHOOLS = {"J": 3, "y": [1.0, 2.0, 3.0], "sigma": [1.0, 1.0, 2.0]}


@pytest.mark.parametrize(
    "variables, data, plates, message",
    [
        ({"mu": "Normal(m0, 1)"}, {"m00": 1.0}, {}, "variables.mu.dist: unknown name 'm0'; did you mean 'm00'?"),
        ({"a": "Normal(b, 1)", "b": "Normal(a, 1)"}, {}, {}, "variables.a: dependency cycle a -> b -> a"),
        ({"e": {"value": "log(e)"}}, {}, {}, "variables.e: dependency cycle e -> e"),
        ({"e": {"value": "log(e)"}}, {"e": 1.0}, {}, "variables.e: 'e' names both a data key and a variable"),
        ({"y": {"dist": "Normal(0, 1)", "observed": "x"}}, {"x": 1.0, "y": 2.0}, {}, "rename the variable or the data"),
        (
            {"theta": {"dist": "Normal(0, 1)", "plate": "scool"}},
            {},
            {"school": 3},
            "variables.theta.plate: unknown plate 'scool'; did you mean 'school'?",
        ),
        (
            {"theta": "Normal(0, 1)", "y": {"dist": "Normal(theta, sigma)", "plate": "school", "observed": "yy"}},
            SCHOOLS,
            {"school": "J"},
            "variables.y.observed: 'yy' is neither a data key nor another variable; did you mean 'y'?",
        ),
        (
            {"y": {"dist": "Normal(0, sigma)", "plate": "school", "observed": "y"}},
            {**SCHOOLS, "sigma": [1.0, 2.0]},
            {"school": "J"},
            "variables.y.dist: batch shape (2,) does not fit its plates school (size 3, dim -1)",
        ),
        (
            {"y": {"dist": "Normal(0, 1)", "plate": "school", "observed": "y"}},
            {**SCHOOLS, "y": [1.0, 2.0]},
            {"school": "J"},
            "variables.y.observed: 'y' has shape (2,), but the distribution (with its plates and shape) gives (3,)",
        ),
        (
            {"b": {"dist": "Normal(0, 1)", "shape": [2]}, "y": {"dist": "Normal(X @ b, 1)", "observed": "y"}},
            {"X": [[1.0, 2.0, 3.0]], "y": [1.0]},
            {},
            "variables.y.dist: RuntimeError",
        ),
        ({"z": {"value": "x + w"}}, {"x": [1.0, 2.0], "w": [1.0, 2.0, 3.0]}, {}, "variables.z.value: RuntimeError"),
        ({"t": {"value": "x", "plate": "p"}}, {"x": [1.0, 2.0]}, {"p": 3}, "variables.t.value: shape (2,)"),
        ({"mu": {"dist": "Normal(0, 1)", "prior": "x"}}, {}, {}, "variables.mu.prior: unknown key"),
        ({"mu": {"dist": "Normal(0, 1)", "value": "1"}}, {}, {}, "variables.mu: give exactly one of"),
        ({"mu": {"value": "x.__class__"}}, {"x": 1.0}, {}, "variables.mu.value: attribute access"),
        (
            {"mu": "Normal(0, 1)", "y": {"dist": "Normal(mu, 1)", "plate": "p"}},
            {},
            {"p": "N"},
            "plates.p: unknown data",
        ),
        ({"mu": {"dist": "Normal(0, 1)", "shape": ["K"]}}, {}, {}, "variables.mu.shape[0]: unknown data 'K'"),
        ({"mu": {"dist": "Normal(0, 1)", "plate": "p"}}, {"n": 2.5}, {"p": "n"}, "plates.p: expected a non-negative"),
        ({"mu": "Normal(0, -1)"}, {}, {}, "variables.mu.dist: Normal's scale must be > 0, got -1"),
        (
            {"u": {"dist": "Normal(0, 1)", "plate": ["a", "b"]}, "v": {"dist": "Normal(0, 1)", "plate": ["b", "a"]}},
            {},
            {"a": 2, "b": 3},
            "plates are nested both ways",
        ),
        ({"1x": "Normal(0, 1)"}, {}, {}, "variables.1x: a variable's name must be a Python identifier"),
        ({"mu": 3}, {}, {}, "variables.mu: expected a distribution string or a table"),
        ({"mu": "Normal(0, 1)"}, {"x": ["a"]}, {}, "data.x: expected a number"),
        ({"mu": "Normal(0, 1)"}, {"x": [[1], [2, 3]]}, {}, "data.x: not a rectangular array"),
    ],
)
def test_spec_errors_name_the_variable(variables, data, plates, message):
    with pytest.raises(SpecError) as error:
        model_from(variables, data, plates)
    assert message in str(error.value) and "\n" not in str(error.value)


def _expressions():
    leaves = st.sampled_from(["x", "mu", "K", "M", "1", "2.5", "-3", "None", "...", "1e308", "0"])
    functions = st.sampled_from([*FUNCTIONS, "Normal"])

    def extend(children):
        return st.one_of(
            st.tuples(children, st.sampled_from(["+", "-", "*", "/", "**", "@"]), children).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            st.tuples(functions, st.lists(children, min_size=1, max_size=3)).map(
                lambda t: f"{t[0]}({', '.join(t[1])})"
            ),
            st.tuples(functions, st.lists(children, min_size=1, max_size=3)).map(
                lambda t: f"{t[0]}([{', '.join(t[1])}])"
            ),
            st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}]"),
            st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}:, :{t[1]}]"),
        )

    return st.recursive(leaves, extend, max_leaves=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_expressions(), st.booleans())
def test_any_expression_builds_or_raises_spec_error(text, as_distribution_parameter):
    """Whatever an expression computes (wrong shapes, wrong types, overflow), building the model either
    works or raises a SpecError naming the variable."""
    variables = {"mu": "Normal(0, 1)"}
    if as_distribution_parameter:
        variables["z"] = {"dist": f"Normal({text}, 1)"}
    else:
        variables["z"] = {"value": text}
    data = {"x": [1.0, 2.0, 3.0], "K": 2, "M": [[1.0, 0.5], [0.5, 2.0]]}
    try:
        model_from(variables, data)
    except SpecError as error:
        assert str(error).startswith("variables.z."), str(error)


def test_missing_covariate_is_named_at_run_time():
    model = load_bayes_model(REPO / "models" / "logistic_regression.toml")
    data = {k: v for k, v in model.jax_data().items() if k != "x2"}
    with pytest.raises(SpecError, match=r"variables\.y\.dist: needs data 'x2', which was not given"):
        handlers.seed(model.numpyro_model, 0)(data)


def test_model_table_errors(tmp_path):
    with pytest.raises(SpecError, match="model.kind = 'vae'"):
        bayes_model_from_tables({"model": {"kind": "vae"}, "variables": {"mu": "Normal(0, 1)"}}, tmp_path, "m.toml")
    with pytest.raises(SpecError, match="model.dat_file: unknown key; did you mean 'data_file'"):
        bayes_model_from_tables({"model": {"dat_file": "x"}, "variables": {"mu": "Normal(0, 1)"}}, tmp_path, "m.toml")
    with pytest.raises(DataError, match="missing.json does not exist"):
        tables = {"model": {"data_file": "missing.json"}, "variables": {"mu": "Normal(0, 1)"}}
        bayes_model_from_tables(tables, tmp_path, "m.toml")
    (tmp_path / "bad.toml").write_text("[variables\n")
    with pytest.raises(SpecError, match="bad.toml: invalid TOML"):
        load_bayes_model(tmp_path / "bad.toml")


def test_data_files_keep_integers_and_inline_data_wins(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"n": [1, 2], "x": [1.5, 2], "K": 3, "flag": [True, False]}))
    (tmp_path / "d.csv").write_text("n,x\n1,1.5\n2,2.0\n")
    np.savez(tmp_path / "d.npz", n=np.array([1, 2], dtype=np.int32), x=np.array([1.5, 2.0], dtype=np.float32))
    for name in ("d.json", "d.csv", "d.npz"):
        tables = {"model": {"data_file": name}, "data": {"x": [0.5, 0.25]}, "variables": {"mu": "Normal(0, 1)"}}
        data = bayes_model_from_tables(tables, tmp_path, "m.toml").data
        assert data["n"].dtype == np.int64 and data["n"].tolist() == [1, 2], name
        assert data["x"].dtype == np.float64 and data["x"].tolist() == [0.5, 0.25], name
    tables = {"model": {"data_file": "d.json"}, "variables": {"m": "Normal(0, 1)"}}
    assert bayes_model_from_tables(tables, tmp_path, "m").data["flag"].tolist() == [1, 0]
    (tmp_path / "e.csv").write_text("n,x\n1,a\n")
    with pytest.raises(DataError, match="column 'x' holds a cell that is not a number"):
        bayes_model_from_tables({"model": {"data_file": "e.csv"}, "variables": {"m": "Normal(0, 1)"}}, tmp_path, "m")


def test_every_posteriordb_spec_compiles():
    assert len(POSTERIORDB_FILES) == 17
    for path in POSTERIORDB_FILES:
        model = load_bayes_model(path)
        assert model.name == path.stem and model.latent_names


def _stan_draws(chain: dict[str, list[float]], index: int) -> dict[str, np.ndarray]:
    """One reference draw, Stan's 1-based ``theta[3]`` columns gathered into 0-based arrays."""
    gathered: dict[str, dict[int, float]] = {}
    for column, values in chain.items():
        match = re.fullmatch(r"(\w+)\[(\d+)\]", column)
        name, position = (match[1], int(match[2]) - 1) if match else (column, None)
        gathered.setdefault(name, {})[position] = values[index]
    return {
        name: np.array(entries[None]) if None in entries else np.array([entries[i] for i in range(len(entries))])
        for name, entries in gathered.items()
    }


def _to_latents(model, draw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """posteriordb stores the transformed theta and f, not the non-centered latents: invert them."""
    if "theta_trans" in model.latent_names:
        draw["theta_trans"] = (draw.pop("theta") - draw["mu"]) / draw["tau"]
    if "f_tilde" in model.latent_names:
        x = model.data["x"].astype(np.float64)
        kernel = draw["alpha"] ** 2 * np.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / draw["rho"] ** 2)
        draw["f_tilde"] = np.linalg.solve(np.linalg.cholesky(kernel + 1e-10 * np.eye(len(x))), draw.pop("f"))
    if "lambda_" in model.latent_names:  # Stan's lambda is a Python keyword: lambda_ in the spec
        draw["lambda_"] = draw.pop("lambda")
    return draw


@pytest.mark.parametrize("path", POSTERIORDB_FILES, ids=lambda p: p.stem)
def test_posteriordb_log_joints_agree_at_reference_draws(path, shared_data):
    folder = shared_data / "posteriordb" / path.stem
    model = load_solved_tightly(path)
    stored = json.loads((folder / "data.json").read_text())
    assert all(np.array_equal(model.data[key], np.asarray(value)) for key, value in stored.items())
    chain = json.loads((folder / "reference_draws.json").read_text())[0]
    draws = [_to_latents(model, _stan_draws(chain, index)) for index in range(10)]
    assert set(draws[0]) == set(model.latent_names) - set(model.discrete_names)
    if model.discrete_names:
        pytest.skip("states summed out by enumeration: tests/test_time_plates.py checks bball against Stan's target")
    expected = [pyro_log_joint(model, params) for params in draws]
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(numpyro_log_joints(model, draws), expected, rtol=rtol_of(model))


def test_flat_sites_start_on_the_device_they_are_asked_for():
    """The CUDA path of Pyro's NUTS, checked on the CPU: an improper site's start is made on the named device
    ("meta" has no data, so nothing runs), not on the default one."""
    import pyro.distributions as pdist
    from pyro.distributions import constraints

    site = {"fn": pdist.ImproperUniform(constraints.positive, (3,), ())}
    assert pyro_init_to_uniform(device="meta")(site).device.type == "meta"
    assert pyro_init_to_uniform(site).device.type == "cpu"
