"""The model language's own rules: factor terms, names that never capture each other, the posterior predictive
with the data in place, and what a time plate cannot do (time plates themselves: tests/test_time_plates.py)."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from numpyro.infer import Predictive
from numpyro.infer.util import log_density
from pyro import poutine
from scipy import stats

from ppgen.errors import SpecError
from ppgen.models.bayes import bayes_model_from_tables
from ppgen.spec.subsample import subsample_plan


def model_from(variables: dict, data: dict | None = None, plates: dict | None = None):
    return bayes_model_from_tables(
        {"data": data or {}, "plates": plates or {}, "variables": variables}, Path("."), "test.toml"
    )


def both_log_densities(model, params: dict) -> tuple[float, float]:
    values = {k: torch.as_tensor(np.asarray(v, dtype=np.float64)) for k, v in params.items()}
    conditioned = poutine.condition(model.pyro_model, values)
    pyro_value = poutine.trace(conditioned).get_trace().log_prob_sum().item()
    with jax.enable_x64(True):
        numpyro_value = float(
            log_density(model.numpyro_model, (model.jax_data(),), {}, {k: jnp.asarray(v) for k, v in params.items()})[0]
        )
    return pyro_value, numpyro_value


def test_a_factor_adds_its_sum_to_the_log_density_on_both_backends():
    """Stan's `target += normal_lpdf(x | 0, 2)` on a flat x, in a plate: the log density is the factor's sum."""
    model = model_from(
        {"x": {"dist": "Flat()", "plate": "obs"}, "prior": {"factor": "-0.5 * (x / 2) ** 2 - log(2)", "plate": "obs"}},
        data={"N": 3},
        plates={"obs": "N"},
    )
    x = np.array([0.3, -1.2, 2.5])
    expected = float(np.sum(-0.5 * (x / 2) ** 2 - np.log(2)))
    assert both_log_densities(model, {"x": x}) == pytest.approx((expected, expected), rel=1e-12)
    assert model.factor_names == ["prior"]
    with pytest.raises(SpecError, match="variables.prior: .* cannot be simulated|prior draws"):
        model.prior_predictive(3, seed=0)


def test_a_factor_has_no_value_to_read():
    with pytest.raises(SpecError, match="variables.y.dist: 'f' is a factor, a log-density term with no value"):
        model_from({"x": "Normal(0, 1)", "f": {"factor": "-x ** 2"}, "y": "Normal(f, 1)"})


def test_an_observed_variable_may_share_its_datas_name_and_then_the_name_means_the_data():
    """y observes data y and m reads y: m is computed from the data (transformed data), not from the variable."""
    model = model_from(
        {"mu": "Normal(0, 1)", "y": {"dist": "Normal(mu, 1)", "observed": "y"}, "m": {"value": "2 * y"}},
        data={"y": 1.5},
    )
    assert model.spec.transformed_data_names == ("m",)
    assert model.observed == {"y": "y"}
    expected = stats.norm.logpdf(0.2) + stats.norm.logpdf(1.5, 0.2)
    assert both_log_densities(model, {"mu": 0.2}) == pytest.approx((expected, expected), rel=1e-12)


@pytest.mark.parametrize(
    "variables, message",
    [
        ({"y": "Normal(0, 1)"}, "variables.y: 'y' names both a data key and a variable"),
        ({"x": "Normal(0, 1)", "y": {"value": "x + 1"}}, "observes it \\(observed = 'y'\\): otherwise rename"),
    ],
)
def test_a_clash_of_names_names_both_and_the_fix(variables, message):
    with pytest.raises(SpecError, match=message):
        model_from(variables, data={"y": 1.0})


def test_the_most_likely_values_of_a_discrete_variable_have_a_name_of_their_own():
    with pytest.raises(SpecError, match="variables.z_map: the name is taken by the most likely values of the discrete"):
        model_from({"z": "Bernoulli(0.5)", "z_map": "Normal(0, 1)"})


def test_a_step_may_not_be_named_like_data_or_a_variable():
    with pytest.raises(SpecError, match="plates.time.step: 'T' is also a data key; give the step a name of its own"):
        model_from(
            {"x": {"dist": "Normal(0, 1)", "plate": "time"}}, data={"T": 3}, plates={"time": {"size": "T", "step": "T"}}
        )
    with pytest.raises(SpecError, match="plates.time.sise: unknown key; did you mean 'size'"):
        model_from({"x": "Normal(0, 1)"}, data={"T": 3}, plates={"time": {"sise": "T", "step": "t"}})


def test_the_posterior_predictive_resamples_observed_variables_with_the_data_in_place():
    """An AR(1) likelihood reads the data: with predict=True each y[t] is drawn around phi * y_obs[t - 1], one
    step ahead from the observed history (the sample mean over 4000 draws is within 4 standard errors)."""
    y = np.array([0.5, 1.0, -0.4, 0.8, 0.1])
    model = model_from(
        {
            "phi": "Normal(0, 1)",
            "y_next": {"dist": "Normal(phi * y[t], 0.1)", "plate": "time", "observed": "y_later"},
            "y_later": {"value": "y[1:]"},
        },
        data={"y": y, "T": 4},
        plates={"time": {"size": "T", "step": "t"}},
    )
    with jax.enable_x64(True):
        predictive = Predictive(
            model.numpyro_model, posterior_samples={"phi": jnp.full(4000, 0.7)}, return_sites=["y_next"]
        )
        draws = np.asarray(predictive(jax.random.PRNGKey(0), model.jax_data(), predict=True)["y_next"])
    assert draws.shape == (4000, 4)
    np.testing.assert_allclose(draws.mean(0), 0.7 * y[:-1], atol=4 * 0.1 / np.sqrt(4000))


def test_a_time_plate_cannot_be_minibatched():
    model = model_from(
        {"mu": "Normal(0, 1)", "y": {"dist": "Normal(mu, 1)", "plate": "time", "observed": "y"}},
        data={"y": [1.0, 2.0], "T": 2},
        plates={"time": {"size": "T", "step": "t"}},
    )
    with pytest.raises(SpecError, match="plates.time: cannot subsample a time plate"):
        subsample_plan(model.spec, "time", 1)


def test_a_latent_count_cannot_be_summed_out():
    with pytest.raises(SpecError, match="variables.n.dist: a latent Poisson variable has infinitely many values"):
        model_from({"n": "Poisson(3)"})
