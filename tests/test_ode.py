"""ODE variables (ppgen.spec.ode, ppgen.models.ode): parsing, solutions against exact ones, gradients, failures.

Tolerances: an adaptive solver keeps each step's local error below about atol + rtol * |y|; over the at most
a few hundred steps of these problems the global error stays below a few hundred times that. With
rtol = atol = 1e-8 and |y| <= 100 that is < 1e-5 relative or absolute, the bound asserted (1e-4 in the
stiff problem, whose tolerances are 1e-6).
"""

import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from ppgen.errors import SpecError
from ppgen.models.backends import numpyro_backend, pyro_backend
from ppgen.models.ode import solve_ode
from ppgen.spec.bayes import parse_bayes_spec
from ppgen.spec.ode import SOLVERS, parse_ode

REPO = Path(__file__).resolve().parents[1]
BACKENDS = {"pyro": pyro_backend, "numpyro": numpyro_backend}
TIMES = np.linspace(0.5, 3.0, 6)


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):  # the Pyro backend is float64: compare like with like
        yield


def decay(**keys):
    return parse_ode("y", {"ode": {"u": "-k * u"}, "initial": "y0", "times": "ts", "rtol": 1e-8, "atol": 1e-8, **keys})


def to_numpy(value) -> np.ndarray:
    return value.detach().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


# ------------------------------------------------------------------------------------------------------ parsing


def test_parse_reads_states_in_order_and_names_without_states_or_time():
    ode = parse_ode(
        "z",
        {
            "ode": {"u": "a * u - b * u * v", "v": "c * u * v - s * v + 0 * s"},
            "initial": "z0",
            "t0": "start",
            "times": "ts",
            "time": "s",
        },
    )
    assert ode.states == ("u", "v")
    assert ode.names == ("a", "b", "c", "z0", "start", "ts")  # s is the time, u and v the states
    assert (ode.solver, ode.rtol, ode.atol, ode.max_steps, ode.time_name) == ("dopri5", 1e-6, 1e-6, 4096, "s")
    assert parse_ode("z", {"ode": {"u": "-u"}, "initial": 1, "times": "ts"}).t0.text == "0"


@pytest.mark.parametrize(
    "keys, match",
    [
        ({"ode": {}}, r"variables\.z\.ode: expected a table"),
        ({"ode": "-u"}, r"variables\.z\.ode: expected a table"),
        ({"ode": {"t": "-t"}}, r"variables\.z\.ode\.t: the state has the time's name"),
        ({"ode": {"u": "-u +"}}, r"variables\.z\.ode\.u: .* is not a valid expression"),
        ({"solver": "dorpi5"}, r"variables\.z\.solver: unknown solver 'dorpi5'; did you mean 'dopri5'\?"),
        ({"rtol": 0}, r"variables\.z\.rtol: expected a positive number, not 0"),
        ({"atol": "1e-6"}, r"variables\.z\.atol: expected a positive number"),
        ({"max_steps": 1.5}, r"variables\.z\.max_steps: expected a positive integer"),
        ({"time": "1t"}, r"variables\.z\.time: expected a name"),
        ({"times": None}, r"variables\.z\.times: expected an expression string"),
    ],
)
def test_parse_errors_name_the_key(keys, match):
    entry = {"ode": {"u": "-u"}, "initial": "u0", "times": "ts", **keys}
    with pytest.raises(SpecError, match=match):
        parse_ode("z", entry)
    with pytest.raises(SpecError, match=r"variables\.z: an ODE variable needs 'times'"):
        parse_ode("z", {"ode": {"u": "-u"}, "initial": "u0"})


# ------------------------------------------------------------------------------------------- exact solutions


@pytest.mark.parametrize("name", BACKENDS)
def test_decay_matches_the_exponential(name):
    backend = BACKENDS[name]()
    y0 = np.array([[2.0, -1.0, 0.5]])  # one state holding a vector: the solution is [N, 1, 3]
    env = {"k": backend.asarray(0.7), "y0": backend.asarray(y0), "ts": backend.asarray(TIMES)}
    ys = to_numpy(solve_ode(decay(), env, backend))
    exact = y0[None] * np.exp(-0.7 * TIMES)[:, None, None]
    assert ys.shape == (len(TIMES), 1, 3)
    np.testing.assert_allclose(ys, exact, rtol=0, atol=1e-5)


def test_gradient_of_the_decay_wrt_its_rate_is_analytic():
    # y(T) = y0 exp(-k T), so dy(T)/dk = -T y0 exp(-k T).
    k, y0, end = 0.7, 2.0, TIMES[-1]
    exact = -end * y0 * np.exp(-k * end)
    backend = numpyro_backend()

    def last(rate):
        return solve_ode(decay(), {"k": rate, "y0": jnp.array([y0]), "ts": jnp.asarray(TIMES)}, backend)[-1, 0]

    assert abs(float(jax.jit(jax.grad(last))(k)) - exact) < 1e-5
    backend = pyro_backend()
    rate = torch.tensor(k, dtype=torch.float64, requires_grad=True)
    env = {"k": rate, "y0": backend.asarray([y0]), "ts": backend.asarray(TIMES)}
    solve_ode(decay(), env, backend)[-1, 0].backward()
    assert abs(float(rate.grad) - exact) < 1e-5


def test_gradients_flow_in_a_loop_under_pmap():
    # NumPyro's search for an initial point: value_and_grad inside a while loop, chains under pmap.
    backend = numpyro_backend()

    def last(rate):
        return solve_ode(decay(), {"k": rate, "y0": jnp.array([2.0]), "ts": jnp.asarray(TIMES)}, backend)[-1, 0]

    def search(rate):
        return jax.lax.while_loop(lambda s: s[0] < 1, lambda s: (s[0] + 1, jax.grad(last)(rate)), (0, 0.0))[1]

    gradient = jax.pmap(search)(jnp.array([0.7]))
    assert abs(float(gradient[0]) + TIMES[-1] * 2.0 * np.exp(-0.7 * TIMES[-1])) < 1e-5


def test_lotka_volterra_keeps_its_invariant_and_agrees_between_backends():
    # V = delta u - gamma log u + beta v - alpha log v is constant along every solution.
    theta, start = np.array([0.55, 0.028, 0.8, 0.024]), np.array([33.0, 6.0])
    ode = parse_ode(
        "z",
        {
            "ode": {"u": "(theta[0] - theta[1] * v) * u", "v": "(-theta[2] + theta[3] * u) * v"},
            "initial": "z_init",
            "times": "ts",
            "rtol": 1e-8,
            "atol": 1e-8,
            "max_steps": 10_000,
        },
    )
    ts = np.arange(1.0, 21.0)
    solutions = {}
    for name, make in BACKENDS.items():
        backend = make()
        env = {"theta": backend.asarray(theta), "z_init": backend.asarray(start), "ts": backend.asarray(ts)}
        solutions[name] = to_numpy(solve_ode(ode, env, backend))
    alpha, beta, gamma, delta = theta

    def invariant(u, v):
        return delta * u - gamma * np.log(u) + beta * v - alpha * np.log(v)

    for z in solutions.values():
        np.testing.assert_allclose(invariant(z[:, 0], z[:, 1]), invariant(*start), rtol=1e-5)
    np.testing.assert_allclose(solutions["pyro"], solutions["numpyro"], rtol=1e-5)


STIFF = {"ode": {"y": "-lam * (y - exp(-t)) - exp(-t)"}, "initial": 1, "times": "ts", "max_steps": 200}
# y' = -lam (y - exp(-t)) - exp(-t), y(0) = 1 has the solution exp(-t); with lam = 1e5 an explicit solver's
# steps must stay below about 3 / lam, so it needs some 3e5 steps to reach t = 10.


def test_a_stiff_problem_is_solved_by_kvaerno5_and_not_by_dopri5():
    backend = numpyro_backend()
    ts = np.linspace(0.5, 10.0, 5)
    env = {"lam": backend.asarray(1e5), "ts": backend.asarray(ts)}
    ys = solve_ode(parse_ode("s", {**STIFF, "solver": "kvaerno5"}), env, backend)
    np.testing.assert_allclose(np.asarray(ys)[:, 0], np.exp(-ts), rtol=1e-4, atol=1e-6)
    failed = r"variables\.s: the ODE solver 'dopri5' failed \(max_steps = 200 reached\).*'kvaerno5'"
    with pytest.raises(SpecError, match=failed):
        solve_ode(parse_ode("s", STIFF), env, backend, explain=True)
    assert np.isnan(np.asarray(solve_ode(parse_ode("s", STIFF), env, backend))).all()  # a sampler's initial point


def test_pyro_solves_stiff_problems_forward_only():
    backend = pyro_backend()
    ts = np.linspace(0.5, 10.0, 5)
    ode = parse_ode("s", {**STIFF, "solver": "kvaerno5"})
    ys = solve_ode(ode, {"lam": backend.asarray(1e5), "ts": backend.asarray(ts)}, backend)  # scipy's BDF
    np.testing.assert_allclose(to_numpy(ys)[:, 0], np.exp(-ts), rtol=1e-4, atol=1e-6)
    lam = torch.tensor(1e5, dtype=torch.float64, requires_grad=True)
    with pytest.raises(SpecError, match=r"variables\.s\.solver: 'kvaerno5' is stiff .* needs the NumPyro backend"):
        solve_ode(ode, {"lam": lam, "ts": backend.asarray(ts)}, backend)


# ------------------------------------------------------------------------------------------------------ failures


def test_a_failed_solve_is_nan_inside_inference_and_an_error_when_explained():
    ts = np.linspace(0.5, 10.0, 5)
    backend = numpyro_backend()
    ys = jax.jit(lambda lam: solve_ode(parse_ode("s", STIFF), {"lam": lam, "ts": jnp.asarray(ts)}, backend))(1e5)
    assert np.isnan(np.asarray(ys)).all()
    backend = pyro_backend()
    lam = torch.tensor(1e5, dtype=torch.float64, requires_grad=True)
    ys = solve_ode(parse_ode("s", STIFF), {"lam": lam, "ts": backend.asarray(ts)}, backend)
    ys.sum().backward()  # still a graph: a sampler sees a NaN density, not an exception
    assert torch.isnan(ys).all()
    with pytest.raises(SpecError, match=r"variables\.s: the ODE solver 'dopri5' failed \(max_steps = 200 reached\)"):
        solve_ode(parse_ode("s", STIFF), {"lam": lam.detach(), "ts": backend.asarray(ts)}, backend, explain=True)


@pytest.mark.parametrize("name", BACKENDS)
def test_bad_times_and_initial_values_are_spec_errors(name):
    backend = BACKENDS[name]()
    env = {"k": backend.asarray(0.7), "y0": backend.asarray([1.0]), "ts": backend.asarray([0.0, 1.0])}
    with pytest.raises(SpecError, match=r"variables\.y\.times: the times must be increasing and after t0 = 0\.0"):
        solve_ode(decay(), env, backend)
    env = {**env, "y0": backend.asarray([1.0, 2.0]), "ts": backend.asarray([1.0, 2.0])}
    with pytest.raises(SpecError, match=r"variables\.y\.initial: shape \(2,\), but the ODE has 1 states \(u\)"):
        solve_ode(decay(), env, backend)


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_runs_where_it_is_offered(solver):
    for name in ["numpyro", "pyro"] if SOLVERS[solver].torchdiffeq else ["numpyro"]:
        backend = BACKENDS[name]()
        env = {"k": backend.asarray(0.7), "y0": backend.asarray([2.0]), "ts": backend.asarray(TIMES)}
        ode = decay(solver=solver, rtol=1e-7, atol=1e-7, max_steps=100_000)  # low-order solvers: many steps
        ys = to_numpy(solve_ode(ode, env, backend))
        np.testing.assert_allclose(ys[:, 0], 2.0 * np.exp(-0.7 * TIMES), atol=1e-4, err_msg=f"{solver} on {name}")


@pytest.mark.parametrize(
    "path",
    [
        "examples/ode_decay.toml",
        "models/posteriordb/hudson_lynx_hare-lotka_volterra.toml",
        "models/posteriordb/one_comp_mm_elim_abs-one_comp_mm_elim_abs.toml",
    ],
)
def test_the_ode_specs_parse(path):
    path = REPO / path
    spec = parse_bayes_spec(tomllib.loads(path.read_text()), path.parent, str(path))
    assert sum(variable.ode is not None for variable in spec.variables.values()) == 1


def test_a_stiff_solver_on_pyro_is_refused_in_one_line_before_inference(tmp_path, capsys):
    from ppgen.cli import main

    spec = REPO / "models" / "posteriordb" / "one_comp_mm_elim_abs-one_comp_mm_elim_abs.toml"
    argv = ["run", str(spec), "--out", str(tmp_path / "run"), "--quiet", "--set", "inference.backend=pyro"]
    argv += ["--set", "inference.chain_method=sequential"]  # the spec runs its chains vectorized, on NumPyro
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "variables.C.solver: 'kvaerno5' runs on NumPyro only" in err and len(err.splitlines()) == 1
