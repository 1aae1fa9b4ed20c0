"""Missing values of observed data, imputed (``ppgen.models.missing``): the exact posterior of a conjugate model
with missing entries, on both backends; CSV empty cells and JSON nulls through ``ppgen run``; the checks over the
observed entries only; a formula's missing responses; and the places a NaN cannot be imputed, one line each."""

import json
import math

import numpy as np
import pytest
from test_cli import cli
from test_workflow import assert_matches

from ppgen.errors import SpecError
from ppgen.evaluate import inference_data
from ppgen.posterior import infer
from ppgen.spec.load import load_spec

# y_i ~ Normal(mu, 1), mu ~ Normal(0, 2), with y[1] and y[4] missing: the posterior of mu is that of the four
# observed values, N(m, s) with precision 1/4 + 4, and each missing y is N(m, sqrt(1 + s^2)) (BDA3, 2.5).
Y = [1.2, None, 0.4, 2.1, None, 1.5]
OBSERVED = np.array([y for y in Y if y is not None])
PRECISION = 1 / 2.0**2 + len(OBSERVED) / 1.0**2
M, S = OBSERVED.sum() / PRECISION, PRECISION**-0.5
MODEL = """
[model]
data_file = "{data}"

[plates]
obs = 6

[variables]
mu = "Normal(0, 2)"
y = {{ dist = "Normal(mu, 1)", plate = "obs", observed = "y" }}
"""


def spec_with(tmp_path, data_file: str, content: str):
    (tmp_path / data_file).write_text(content)
    spec = tmp_path / "spec.toml"
    spec.write_text(MODEL.format(data=data_file))
    return spec


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_imputation_on_a_conjugate_model_gives_the_exact_posterior(tmp_path, backend):
    spec = spec_with(tmp_path, "y.json", json.dumps({"y": Y}))  # JSON null is a missing value
    settings = ["inference.num_chains=2", "inference.num_warmup=500", "inference.num_samples=1000"]
    loaded = load_spec(spec, overrides=[*settings, f"inference.backend={backend}"])
    draws = infer(loaded.model, loaded.settings)
    assert draws.posterior["y_missing"].shape == (2, 1000, 2)
    assert_matches(draws.posterior["mu"], M, S)
    for j in range(2):
        assert_matches(draws.posterior["y_missing"][..., j], M, math.sqrt(1 + S**2))


def test_empty_csv_cells_are_imputed_and_the_checks_see_the_observed_entries_only(tmp_path):
    cells = "\n".join(f"{'' if y is None else y},{i}" for i, y in enumerate(Y))
    spec = spec_with(tmp_path, "y.csv", f"y,row\n{cells}\n")
    out = tmp_path / "run"
    settings = ["inference.num_chains=1", "inference.num_warmup=200", "inference.num_samples=200"]
    result = cli("run", spec, "--out", out, "--quiet", *[arg for key in settings for arg in ("--set", key)])
    assert result.code == 0, result.err
    assert "y_missing[1]" in result.out  # reported in the summary
    results = inference_data.load(out / "posterior.nc")
    assert inference_data.get_group(results, "posterior")["y_missing"].shape == (1, 200, 2)
    np.testing.assert_allclose(inference_data.get_group(results, "observed_data")["y"].values, OBSERVED)
    assert inference_data.get_group(results, "posterior_predictive")["y"].shape == (1, 200, 4)
    assert inference_data.get_group(results, "log_likelihood")["y"].shape == (1, 200, 4)


def test_a_formulas_missing_responses_are_imputed(tmp_path):
    from ppgen.models.bayes import bayes_model_from_tables

    tables = {
        "model": {"formula": "y ~ x"},
        "data": {"y": [1.0, float("nan"), 2.5, 3.1], "x": [0.0, 1.0, 2.0, 3.0]},
    }
    model = bayes_model_from_tables(tables, tmp_path, "spec.toml", backend="numpyro")
    assert "y_missing" in model.latent_names and model.spec.missing["y"].tolist() == [False, True, False, False]


@pytest.mark.parametrize(
    "data, variables, message",
    [
        ("y = [1, 2, nan]", 'y = { dist = "Poisson(3)", plate = "obs", observed = "y" }', "a Poisson variable's"),
        (
            "y = [1.0, 2.0, nan]",
            'y = { dist = "Normal(mu, 1)", plate = "obs", observed = "y" }\nm = { value = "mean(y) + mu" }',
            "'y' is also read by an expression",
        ),
        ("y = [1.0, 2.0, nan]", 'y = { dist = "Uniform(mu - 5, 9)", plate = "obs", observed = "y" }', "imputed in"),
        # found by tests/test_spec_fuzz.py (an observed K = nan): NumPy's nanmedian warned, and the start was NaN
        ("y = [nan, nan, nan]", 'y = { dist = "Normal(mu, 1)", plate = "obs", observed = "y" }', "nothing is observed"),
    ],
)
def test_a_nan_that_cannot_be_imputed_is_one_line_naming_the_entry(tmp_path, data, variables, message):
    spec = tmp_path / "spec.toml"
    spec.write_text(f'[data]\n{data}\n\n[plates]\nobs = 3\n\n[variables]\nmu = "Normal(0, 1)"\n{variables}\n')
    with pytest.raises(SpecError, match=r"variables\.y\.observed: y\[\d\] is missing; .*" + message):
        load_spec(spec)


def test_an_infinity_beside_missing_values_is_still_refused(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(
        '[data]\ny = [1.0, inf, nan]\n\n[plates]\nobs = 3\n\n[variables]\nmu = "Normal(0, 1)"\n'
        'y = { dist = "Normal(mu, 1)", plate = "obs", observed = "y" }\n'
    )
    with pytest.raises(SpecError, match=r"data\.y\[1\] is inf"):
        load_spec(spec)


def test_the_prior_predictive_check_compares_the_observed_entries_only(tmp_path):
    spec = spec_with(tmp_path, "y.json", json.dumps({"y": Y}))
    out = tmp_path / "prior"
    result = cli("run", spec, "--prior", "--out", out, "--quiet", "--set", "inference.num_samples=100")
    assert result.code == 0, result.err
    assert "4 of 4 data points" in result.out
    results = inference_data.load(out / "prior.nc")
    np.testing.assert_allclose(inference_data.get_group(results, "observed_data")["y"].values, OBSERVED)
