"""The mass matrix of NUTS/HMC (``inference.mass``): validated, dense when asked, "auto" dense on a strongly
correlated Gaussian and diagonal on an independent one, and right draws of the correlated Gaussian."""

import jax
import numpy as np
import pytest

from ppgen.errors import SpecError
from ppgen.evaluate.inference_data import ess
from ppgen.infer.bayes_data import float64
from ppgen.infer.mcmc import pyro_kernel
from ppgen.infer.methods import METHODS, numpyro_sampler
from ppgen.infer.numpyro_sampler import prefers_dense
from ppgen.infer.posterior_settings import MCMCSettings
from ppgen.spec.bayes_inference import BayesInferenceSpec
from ppgen.spec.load import load_spec

# x1, x2, x3 standard normal, each correlated rho with the one before (an AR(1) chain): corr(x1, x3) = rho^2.
GAUSSIAN = """
[model]
kind = "bayes"
name = "gaussian"

[data]
rho = {rho}
scale = {scale}

[variables]
x1 = "Normal(0, 1)"
x2 = "Normal(rho * x1, scale)"
x3 = "Normal(rho * x2, scale)"
"""
BUDGET = dict(num_chains=2, num_warmup=200, num_samples=500, chain_method="sequential")
NO_DATA = {"observed": {}}  # the compiled sampler's model arguments: the observed data (none here)


def _model(tmp_path, rho: float):
    path = tmp_path / f"gaussian-{rho}.toml"
    path.write_text(GAUSSIAN.format(rho=rho, scale=np.sqrt(1 - rho**2)))
    return load_spec(path).model


def _sampler(model, **settings):
    return numpyro_sampler(model, MCMCSettings(**{**BUDGET, **settings}))


def test_the_mass_setting_is_validated():
    assert BayesInferenceSpec().settings().mass == "auto"
    assert BayesInferenceSpec.model_validate({"inference": {"mass": "dense"}}).settings().mass == "dense"
    with pytest.raises(ValueError, match=r"inference(\.nuts)?\.mass"):
        BayesInferenceSpec.model_validate({"inference": {"mass": "full"}})


def test_a_bad_mass_is_a_one_line_spec_error_naming_it(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(GAUSSIAN.format(rho=0.5, scale=0.8))
    with pytest.raises(SpecError) as error:
        load_spec(path, overrides=["inference.mass=full"])
    assert "inference.mass" in str(error.value) and "\n" not in str(error.value)


def test_dense_is_used_when_asked(tmp_path):
    model = _model(tmp_path, 0.0)
    with float64():
        for mass, shape in (("dense", (3, 3)), ("diag", (3,))):
            sampler = _sampler(model, mass=mass)
            kernel = sampler.kernel("sequential", sampler.dense_mass(0, NO_DATA))
            state = kernel.init(jax.random.PRNGKey(0), 10, None, (), NO_DATA)
            (inverse_mass,) = state.adapt_state.inverse_mass_matrix.values()
            assert inverse_mass.shape == shape
    assert pyro_kernel(model.pyro_model, MCMCSettings(backend="pyro", mass="dense"))._adapter.dense_mass


def test_auto_picks_dense_for_a_correlated_gaussian_and_diag_for_an_independent_one(tmp_path):
    with float64():
        assert _sampler(_model(tmp_path, 0.99)).dense_mass(0, NO_DATA)
        assert not _sampler(_model(tmp_path, 0.0)).dense_mass(0, NO_DATA)


def test_prefers_dense_weighs_correlation_against_the_estimates_noise():
    correlated = np.linalg.inv([[1.0, 0.99], [0.99, 1.0]])  # Hessian of a Gaussian with correlation 0.99
    assert prefers_dense(correlated, window=500)
    assert not prefers_dense(np.diag([1.0, 100.0]), window=500)  # scales alone: diag takes them out
    # correlation 0.9 (kappa 19): a diagonal mass needs about sqrt(19) = 4.4 times dense's steps, not 10
    assert not prefers_dense(np.linalg.inv([[1.0, 0.9], [0.9, 1.0]]), window=500)
    assert not prefers_dense(correlated, window=7)  # too few draws to estimate a 2 x 2 covariance well
    assert prefers_dense(-correlated, window=500)  # couplings show away from a mode too
    assert not prefers_dense(np.full((2, 2), np.nan), window=500)


@pytest.mark.slow
def test_auto_draws_the_correlated_gaussian_right(tmp_path):
    # A few seconds: one compilation, 2 chains x (200 + 500) steps. Each coordinate is N(0, 1). With n_eff effective
    # draws the Monte Carlo standard error of the mean is sd / sqrt(n_eff), and that of the sd, for a Gaussian
    # (kurtosis 3), sd * sqrt((3 - 1) / (4 n_eff)) = sd / sqrt(2 n_eff). Each must lie within 4 of its standard
    # errors (a chance of 6e-5 each to fail by chance); n_eff is the bulk ESS of the draws.
    model = _model(tmp_path, 0.99)
    settings = MCMCSettings(**BUDGET, seed=1)
    draws = METHODS["nuts"].run(model, settings)
    for name in ("x1", "x2", "x3"):
        values = draws.posterior[name]
        n_eff = float(ess(values))
        assert n_eff > 200  # dense mass: near-independent draws
        assert abs(values.mean()) < 4 / np.sqrt(n_eff)
        assert abs(values.std() - 1) < 4 / np.sqrt(2 * n_eff)
    assert _sampler(model).dense_mass(settings.seed, NO_DATA)  # these draws came from a dense mass matrix
    assert draws.choices == {"mass": "dense"}  # and say so (metrics.json's "sampler", the command line's last line)
