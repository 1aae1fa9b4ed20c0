"""Hierarchical loc-scale variables sampled non-centred (``ppgen.models.reparam``): which ones, the exact change of
variables, and a run through ``ppgen run`` that reports it and stores the variables as the spec names them."""

import math
from pathlib import Path

import numpy as np
import pytest
from test_cli import REPO, cli

from ppgen.errors import SpecError
from ppgen.evaluate import inference_data
from ppgen.infer.bayes_data import float64
from ppgen.models.bayes import bayes_model_from_tables
from ppgen.models.reparam import DECENTERED_SUFFIX, noncentered, noncentered_names
from ppgen.spec.bayes import parse_bayes_spec

CENTRED = REPO / "models" / "posteriordb" / "eight_schools-eight_schools_centered.toml"


def tables(**theta) -> dict:
    """The eight schools, centred, with ``theta``'s entry extended by ``theta``."""
    return {
        "data": {"J": 3, "y": [28.0, 8.0, -3.0], "sigma": [15.0, 10.0, 16.0]},
        "plates": {"school": "J"},
        "variables": {
            "mu": "Normal(0, 5)",
            "tau": "HalfCauchy(5)",
            "theta": {"dist": "Normal(mu, tau)", "plate": "school", **theta},
            "y": {"dist": "Normal(theta, sigma)", "plate": "school", "observed": "y"},
        },
    }


def names_of(spec_tables: dict) -> tuple[str, ...]:
    return noncentered_names(parse_bayes_spec(spec_tables, Path("."), "spec.toml"))


def test_a_latent_normal_with_a_parameter_as_scale_is_non_centred_unless_the_spec_says_so():
    assert names_of(tables()) == ("theta",)
    assert names_of(tables(centered=True)) == ()
    fixed_scale = tables()
    fixed_scale["variables"]["theta"]["dist"] = "Normal(mu, 2)"
    assert names_of(fixed_scale) == ()  # a fixed scale is no funnel: sampled as written
    fixed_scale["variables"]["theta"]["centered"] = False
    assert names_of(fixed_scale) == ("theta",)
    student = tables()
    student["variables"]["theta"]["dist"] = "StudentT(3, mu, tau)"
    assert names_of(student) == ("theta",)


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"centered": "no"}, "variables.theta.centered: expected true or false, not 'no'"),
        ({"centered": True, "lower": 0}, "variables.theta.centered: applies to a latent Normal, StudentT, Cauchy"),
        ({"centered": False, "dist": "Gamma(2, tau)"}, "variables.theta.centered: applies to a latent Normal"),
    ],
)
def test_a_misplaced_centered_key_is_one_line_naming_it(entry, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        names_of(tables(**entry))


def test_the_non_centred_model_is_the_same_posterior_with_the_jacobian_of_theta_equal_mu_plus_tau_z():
    # log p(mu, tau, z, y) = log p(mu, tau, theta = mu + tau z, y) + J log tau: the density of z is the density of
    # theta times |d theta / d z| = tau per school. Exact, at an arbitrary point.
    from numpyro.handlers import substitute, trace
    from numpyro.infer.util import log_density

    spec_tables = tables()
    model = bayes_model_from_tables(spec_tables, Path("."), "spec.toml", backend="numpyro")
    with float64():
        data = model.jax_data()
        mu, tau, z = 1.3, 2.7, np.array([0.4, -1.1, 0.9])
        sampled = noncentered(model.numpyro_model, model.spec)
        noncentred, _ = log_density(sampled, (data,), {}, {"mu": mu, "tau": tau, "theta" + DECENTERED_SUFFIX: z})
        theta = mu + tau * z
        centred, _ = log_density(model.numpyro_model, (data,), {}, {"mu": mu, "tau": tau, "theta": theta})
        sites = trace(substitute(sampled, {"mu": mu, "tau": tau, "theta" + DECENTERED_SUFFIX: z})).get_trace(data)
    assert sites["theta"]["type"] == "deterministic"
    np.testing.assert_allclose(np.asarray(sites["theta"]["value"]), theta, rtol=1e-12)
    assert float(noncentred) == pytest.approx(float(centred) + 3 * math.log(tau), abs=1e-10)


def test_ppgen_run_samples_the_centred_eight_schools_non_centred_and_stores_theta(tmp_path):
    out = tmp_path / "run"
    result = cli(
        "run", CENTRED, "--out", out, "--set", "inference.num_chains=1", "--set", "inference.num_warmup=200",
        "--set", "inference.num_samples=200", "--set", "evaluation.plots=false",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "(theta non-centred)" in result.out
    posterior = inference_data.get_group(inference_data.load(out / "posterior.nc"), "posterior")
    assert {"mu", "tau", "theta"} <= set(posterior.data_vars)
    assert "theta" + DECENTERED_SUFFIX not in posterior.data_vars
    assert posterior["theta"].shape == (1, 200, 8)


def test_centered_true_through_the_command_line_samples_theta_as_written(tmp_path):
    out = tmp_path / "run"
    result = cli(
        "run", CENTRED, "--out", out, "--set", "variables.theta.centered=true", "--set", "inference.num_chains=1",
        "--set", "inference.num_warmup=100", "--set", "inference.num_samples=100", "--set", "evaluation.plots=false",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "(theta non-centred)" not in result.out  # sampled as written: the centred funnel, which diverges
    posterior = inference_data.get_group(inference_data.load(out / "posterior.nc"), "posterior")
    assert posterior["theta"].shape == (1, 100, 8)
