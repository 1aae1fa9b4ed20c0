"""Constrained parameters (ppgen.models.constraints, ppgen.models.zero_sum): the potential energy at one
unconstrained point agrees between Pyro and NumPyro and with the hand-computed -log density - log|det J|;
parameter-dependent bounds; names; a short NUTS run against exact answers.

Both backends compute in float64 (jax in x64 mode), so the agreement tolerances are rounding only: 1e-10
relative is many orders of magnitude above float64 rounding of these few-term sums.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from numpyro.infer.util import potential_energy
from pyro.infer.mcmc.util import initialize_model
from scipy import stats

from ppgen.errors import SpecError
from ppgen.models.backends import numpyro_backend, pyro_backend
from ppgen.models.constraints import constrained_site
from ppgen.models.initialization import pyro_init_to_uniform
from ppgen.models.zero_sum import ZeroSumTransform, zero_sum
from ppgen.spec.constraints import CONSTRAINTS, check_constraint, raw_site_name

RTOL = 1e-10


def _normal(backend):
    return backend.distributions["Normal"](loc=0.3, scale=1.5)


def _site_model(backend, constraint, event_shape, density=_normal, lower=None, upper=None, plate_size=None):
    """A model of one constrained site, in a plate of ``plate_size`` (batch dim -1) when given."""

    def model():
        batch_shape = () if plate_size is None else (plate_size,)
        distribution = None if density is None else density(backend)
        if plate_size is None:
            return constrained_site(backend, "x", distribution, constraint, lower, upper, batch_shape, event_shape)
        with backend.effects.plate("p", plate_size, dim=-1):
            return constrained_site(backend, "x", distribution, constraint, lower, upper, batch_shape, event_shape)

    return model


def _numpyro_potential(model, params: dict) -> float:
    with jax.enable_x64(True):
        return float(potential_energy(model, (), {}, {k: jnp.asarray(v) for k, v in params.items()}))


def _pyro_potential(model, params: dict, max_plate_nesting: int = 1) -> float:
    _, potential_fn, _, _ = initialize_model(
        model, init_strategy=pyro_init_to_uniform, max_plate_nesting=max_plate_nesting
    )
    return float(potential_fn({k: torch.as_tensor(v, dtype=torch.float64) for k, v in params.items()}))


def _both(make_model, params: dict) -> tuple[float, float]:
    """The potential energies of NumPyro's and Pyro's version of a model at one unconstrained point."""
    with jax.enable_x64(True):
        numpyro_value = _numpyro_potential(make_model(numpyro_backend()), params)
    return numpyro_value, _pyro_potential(make_model(pyro_backend()), params)


def _log_normal(x):
    return stats.norm(0.3, 1.5).logpdf(x).sum()


# (constraint, event shape, unconstrained size)
CASES = [
    ("ordered", (3,), (3,)),
    ("positive_ordered", (3,), (3,)),
    ("simplex", (4,), (3,)),
    ("cholesky_corr", (3, 3), (3,)),
    ("sum_to_zero", (4,), (3,)),
]


def test_cases_cover_every_constraint():
    assert sorted(c for c, _, _ in CASES) == sorted(CONSTRAINTS)


@pytest.mark.parametrize("plate_size", [None, 2])
@pytest.mark.parametrize("constraint, event_shape, free_shape", CASES)
def test_potential_energy_agrees_between_backends(constraint, event_shape, free_shape, plate_size):
    batch = () if plate_size is None else (plate_size,)
    z = np.random.default_rng(0).normal(size=(*batch, *free_shape))
    for density in (_normal, None) if constraint != "sum_to_zero" else (_normal,):  # flat sum-to-zero is improper
        model = functools.partial(_site_model, constraint=constraint, event_shape=event_shape, density=density)
        numpyro_value, pyro_value = _both(functools.partial(model, plate_size=plate_size), {"x": z})
        assert pyro_value == pytest.approx(numpyro_value, rel=RTOL)


def _ordered(z):
    return np.cumsum(np.concatenate([z[:1], np.exp(z[1:])]))


def _stick_breaking(z):
    """The simplex point of z [K - 1] and log|det J| (each x_i = remaining_i * s_i, s_i = sigmoid(z_i - log(K-1-i)))."""
    k = len(z) + 1
    remaining, x, log_det = 1.0, [], 0.0
    for i, zi in enumerate(z):
        s = 1 / (1 + math.exp(-(zi - math.log(k - 1 - i))))
        x.append(remaining * s)
        log_det += math.log(remaining) + math.log(s) + math.log(1 - s)
        remaining *= 1 - s
    return np.array([*x, remaining]), log_det


def _corr_cholesky_log_det(z):
    """log|det J| of z [3] -> the free entries L10, L20, L21 of a 3 x 3 correlation Cholesky factor: the
    canonical partial correlations tanh(z) fill the rows in order, L_ij = tanh(z_ij) sqrt(1 - sum_k<j L_ik^2)."""
    log_det = np.log1p(-(np.tanh(z) ** 2)).sum()
    return log_det + 0.5 * np.log(1 - np.tanh(z[1]) ** 2)  # only L21 has a non-unit factor: sqrt(1 - L20^2)


def _zero_sum(z):
    """PyMC's and NumPyro's sum-to-zero vector of z [K - 1]: z - sum(z) / (sqrt(K) + K), then -sum(z) / sqrt(K)."""
    k, total = len(z) + 1, z.sum()
    return np.append(z - total / (math.sqrt(k) + k), -total / math.sqrt(k))


def _hand_potential(constraint, z):
    """-log density - log|det J| of the models of test_potential_energy_by_hand, from the maths alone."""
    if constraint == "ordered":
        return -_log_normal(_ordered(z)) - z[1:].sum()
    if constraint == "positive_ordered":
        y = _ordered(z)
        return -_log_normal(np.exp(y)) - z[1:].sum() - y.sum()
    if constraint == "simplex":
        return -_stick_breaking(z)[1]
    if constraint == "cholesky_corr":
        return -_corr_cholesky_log_det(z)
    if constraint == "sum_to_zero":  # an isometry onto the subspace: log|det J| = 0
        return -_log_normal(_zero_sum(z))
    raise AssertionError(constraint)


@pytest.mark.parametrize("constraint, event_shape, free_shape", CASES)
def test_potential_energy_by_hand(constraint, event_shape, free_shape):
    z = np.random.default_rng(1).normal(size=free_shape)
    density = _normal if constraint in ("ordered", "positive_ordered", "sum_to_zero") else None
    numpyro_value, pyro_value = _both(lambda b: _site_model(b, constraint, event_shape, density), {"x": z})
    expected = _hand_potential(constraint, z)
    assert numpyro_value == pytest.approx(expected, rel=RTOL)
    assert pyro_value == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize(
    "lower, upper, log_det",
    [
        (-1.0, 2.0, lambda z: math.log(3.0) - math.log1p(math.exp(-z)) - math.log1p(math.exp(z))),
        (-1.0, None, lambda z: z),
        (None, 2.0, lambda z: z),
    ],
)
def test_fixed_bounds_by_hand(lower, upper, log_det):
    z = 0.7
    x = {
        (True, True): lambda: lower + (upper - lower) / (1 + math.exp(-z)),
        (True, False): lambda: lower + math.exp(z),
        (False, True): lambda: upper - math.exp(z),
    }[(lower is not None, upper is not None)]()
    numpyro_value, pyro_value = _both(lambda b: _site_model(b, None, (), _normal, lower, upper), {"x": np.array(z)})
    expected = -_log_normal(x) - log_det(z)
    assert numpyro_value == pytest.approx(expected, rel=RTOL)
    assert pyro_value == pytest.approx(expected, rel=RTOL)


def _dependent_model(backend, dependent_bounds=True):
    """a ~ Normal(0, 1); x ~ Normal(0.3, 1.5) restricted to (a, a + 2), a bound that moves with a."""

    def model():
        a = backend.effects.sample("a", backend.distributions["Normal"](loc=0.0, scale=1.0))
        return constrained_site(
            backend, "x", _normal(backend), None, a, a + 2.0, (), (), dependent_bounds=dependent_bounds
        )

    return model


@pytest.mark.parametrize("a", [-0.4, 1.3])  # two points: a transform fixed at the prototype's bounds would fail one
def test_dependent_bounds(a):
    z = -0.8
    params = {"a": np.array(a), raw_site_name("x"): np.array(z)}
    numpyro_value, pyro_value = _both(_dependent_model, params)
    s = 1 / (1 + math.exp(-z))
    x = a + 2.0 * s
    expected = -stats.norm.logpdf(a) - _log_normal(x) - math.log(2.0) - math.log(s * (1 - s))
    assert numpyro_value == pytest.approx(expected, rel=RTOL)
    assert pyro_value == pytest.approx(expected, rel=RTOL)
    # NumPyro's HMC re-derives each transform at every step, so there the plain site gives the same energy
    direct = {"a": params["a"], "x": params[raw_site_name("x")]}
    with jax.enable_x64(True):
        direct_value = _numpyro_potential(_dependent_model(numpyro_backend(), False), direct)
        gradient = jax.grad(lambda p: potential_energy(_dependent_model(numpyro_backend()), (), {}, p))(
            {k: jnp.asarray(v) for k, v in params.items()}
        )
    assert direct_value == pytest.approx(expected, rel=RTOL)
    assert all(np.isfinite(np.asarray(g)) for g in gradient.values())


def test_spec_model_agrees_between_backends():
    from pathlib import Path

    from ppgen.models.bayes import bayes_model_from_tables

    variables = {
        "mu": {"dist": "Normal(0, 5)", "constraint": "ordered", "shape": ["K"]},
        "w": {"constraint": "simplex", "shape": ["K"]},
        "sigma": {"dist": "Cauchy(0, 2)", "lower": "0"},
        "y": {"dist": "Normal(dot(w, mu), sigma)", "plate": "obs", "observed": "y"},
    }
    tables = {"data": {"K": 3, "N": 4, "y": [-1.0, 0.2, 0.4, 2.5]}, "plates": {"obs": "N"}, "variables": variables}
    model = bayes_model_from_tables(tables, Path("."), "mixture")
    rng = np.random.default_rng(3)
    params = {"mu": rng.normal(size=3), "w": rng.normal(size=2), "sigma": np.array(0.3)}
    with jax.enable_x64(True):
        numpyro_value = _numpyro_potential(model.numpyro_model, params)
    pyro_value = _pyro_potential(model.pyro_model, params, model.max_plate_nesting)
    assert pyro_value == pytest.approx(numpyro_value, rel=RTOL)


def test_dependent_bounds_record_the_value():
    from numpyro.handlers import seed, substitute, trace

    with jax.enable_x64(True):
        model = substitute(_dependent_model(numpyro_backend()), {"a": 0.5, raw_site_name("x"): 0.25})
        sites = trace(seed(model, 0)).get_trace()
    assert sites["x"]["type"] == "deterministic"
    assert float(sites["x"]["value"]) == pytest.approx(0.5 + 2.0 * 0.25, rel=RTOL)


def test_observed_site_scores_its_value():
    from numpyro.infer.util import log_density

    y = np.array([0.5, 2.0])
    with jax.enable_x64(True):
        backend = numpyro_backend()

        def model():
            return constrained_site(backend, "y", _normal(backend), None, 0.0, None, (2,), (), obs=jnp.asarray(y))

        value, _ = log_density(model, (), {}, {})
    assert float(value) == pytest.approx(_log_normal(y), rel=RTOL)


def test_zero_sum_transform_is_numpyros_isometry():
    from numpyro.distributions.transforms import ZeroSumTransform as NumPyroZeroSum
    from torch.distributions import biject_to

    z = torch.as_tensor(np.random.default_rng(2).normal(size=(2, 4)))
    transform = biject_to(zero_sum)
    assert isinstance(transform, ZeroSumTransform)
    y = transform(z)
    with jax.enable_x64(True):
        np.testing.assert_allclose(y.numpy(), np.asarray(NumPyroZeroSum()(jnp.asarray(z.numpy()))), rtol=1e-12)
    assert bool(zero_sum.check(y).all())
    torch.testing.assert_close(transform.inv(y), z, rtol=1e-12, atol=1e-12)
    # orthonormal columns: the volume on the subspace is the volume of R^(K-1), so log|det J| = 0 exactly
    jacobian = torch.autograd.functional.jacobian(transform, z[0])  # [5, 4]
    torch.testing.assert_close(jacobian.T @ jacobian, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(transform.log_abs_det_jacobian(z, y), torch.zeros(2, dtype=torch.float64))
    assert transform.inverse_shape(transform.forward_shape((2, 4))) == (2, 4)


def test_unknown_constraint_suggests_a_name():
    hint = r"unknown constraint 'orderd' \(did you mean 'ordered'\?\); known: ordered, positive_ordered"
    with pytest.raises(SpecError, match=rf"^variables\.mu\.constraint: {hint}"):
        check_constraint("mu", "orderd", bounded=False)


def test_constraint_with_bounds_is_refused():
    with pytest.raises(SpecError, match=r"^variables\.mu\.constraint: 'ordered' cannot be combined"):
        check_constraint("mu", "ordered", bounded=True)


@pytest.mark.parametrize("constraint, event_shape", [("simplex", ()), ("simplex", (1,)), ("cholesky_corr", (3, 2))])
def test_wrong_event_shape_is_a_spec_error(constraint, event_shape):
    with pytest.raises(SpecError, match=rf"^variables\.x\.shape: constraint '{constraint}' is "):
        _site_model(pyro_backend(), constraint, event_shape, None)()


def test_density_of_the_wrong_shape_is_a_spec_error():
    backend = pyro_backend()

    def density(b):
        return b.distributions["Normal"](loc=torch.zeros(5, dtype=torch.float64), scale=1.0)

    from pyro import poutine

    model = poutine.condition(_site_model(backend, "ordered", (3,), density), {"x": torch.arange(3.0)})
    with pytest.raises(SpecError, match=r"^variables\.x\.dist: batch and event shape \(5,\) do not fit"):
        model()


def _nuts_draws(model, num_samples=4000, seed=0):
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(model), num_warmup=500, num_samples=num_samples, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(seed))
    return np.asarray(mcmc.get_samples()["x"])


def _within_4_mcse(draws, truth):
    """|mean - truth| < 4 MCSE, with the MCSE from the draws' effective sample size (per column)."""
    from numpyro.diagnostics import effective_sample_size

    draws = draws.reshape(len(draws), -1)
    ess = effective_sample_size(draws[None])
    mcse = draws.std(0) / np.sqrt(ess)
    assert np.all(np.abs(draws.mean(0) - truth) < 4 * mcse), (draws.mean(0), truth, mcse)


@pytest.mark.slow
def test_nuts_flat_simplex_is_dirichlet_one():
    with jax.enable_x64(True):
        draws = _nuts_draws(_site_model(numpyro_backend(), "simplex", (3,), None))
    _within_4_mcse(draws, np.full(3, 1 / 3))  # Dirichlet(1, 1, 1): mean 1/3 each


@pytest.mark.slow
def test_nuts_ordered_normals_are_order_statistics():
    def standard_normal(b):
        return b.distributions["Normal"](loc=0.0, scale=1.0)

    with jax.enable_x64(True):
        draws = _nuts_draws(_site_model(numpyro_backend(), "ordered", (2,), standard_normal))
    _within_4_mcse(draws, np.array([-1, 1]) / math.sqrt(math.pi))  # E[min, max of 2 iid N(0, 1)] = -+1/sqrt(pi)


@pytest.mark.slow
def test_nuts_flat_between_moving_bounds():
    # a ~ N(0, 1) and x flat on (a, a + 2): the flat density integrates to 2 whatever a is, so a stays N(0, 1)
    # and x - a ~ Uniform(0, 2): E[x] = 1.
    def model(backend):
        def run():
            a = backend.effects.sample("a", backend.distributions["Normal"](loc=0.0, scale=1.0))
            return constrained_site(backend, "x", None, None, a, a + 2.0, (), (), dependent_bounds=True)

        return run

    with jax.enable_x64(True):
        draws = _nuts_draws(model(numpyro_backend()))
    _within_4_mcse(draws, np.array(1.0))
