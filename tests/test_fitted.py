"""A finished run as an object (``ppgen.load``) and its predictions for new rows (``ppgen predict``): at the training
rows they reproduce the stored posterior predictive; a new group level draws its effects from the population; a
category the model never saw, a folder that is no Bayesian run, and a missing file are one line each."""

import math

import numpy as np
import pandas as pd
import pytest
from test_cli import REPO, cli

import ppgen
from ppgen.errors import DataError, PpgenError
from ppgen.evaluate import inference_data

REACTION = REPO / "examples" / "reaction_formula.toml"
LOGISTIC = REPO / "models" / "logistic_regression.toml"
Z = 4.5  # per row, over up to 180 rows: a false alarm has probability < 180 * 7e-6 = 0.1%
TINY = ["inference.num_chains=2", "inference.num_warmup=200", "inference.num_samples=300", "evaluation.plots=false"]


def fitted_run(tmp_path_factory, spec, *settings):
    out = tmp_path_factory.mktemp("run") / "run"
    result = cli("run", spec, "--out", out, "--quiet", *[arg for key in (*TINY, *settings) for arg in ("--set", key)])
    assert result.code == 0, result.err
    return out


@pytest.fixture(scope="module")
def reaction(tmp_path_factory):
    # The example's formula with a categorical common predictor added (group: a or b).
    formula = 'model.formula="reaction ~ 1 + days + group + (1 + days | subject)"'
    return fitted_run(tmp_path_factory, REACTION, formula)


def posterior_predictive_means(run, name):
    results = inference_data.load(run / "posterior.nc")
    return inference_data.get_group(results, "posterior_predictive")[name].mean(("chain", "draw")).values


def assert_reproduces_posterior_predictive(run, predictions, name, noise_sd):
    # The same posterior draws make both: each draw's two predictions differ by two independent noise draws, so
    # the difference of their means over S draws has sd sqrt(2 E[noise^2] / S).
    draws = predictions.sizes["chain"] * predictions.sizes["draw"]
    stored = posterior_predictive_means(run, name)
    difference = predictions[name].mean(("chain", "draw")).values - stored
    assert np.all(np.abs(difference) < Z * noise_sd * math.sqrt(2 / draws)), np.abs(difference).max()


@pytest.mark.slow
def test_predictions_at_the_training_rows_reproduce_the_posterior_predictive(reaction):
    fitted = ppgen.load(reaction)
    rows = pd.read_csv(REPO / "examples" / "data" / "reaction.csv")
    predictions = fitted.predict(rows.drop(columns="reaction"))
    posterior = inference_data.get_group(fitted.inference_data, "posterior")
    sigma = float(np.sqrt((posterior["sigma"].values ** 2).mean()))
    assert_reproduces_posterior_predictive(reaction, predictions, "reaction", sigma)
    assert predictions.attrs["unseen_levels"] == "subject: 0"
    assert {"b_Intercept", "b_days", "sigma"} <= set(fitted.summary().index)


@pytest.mark.slow
def test_a_new_subject_draws_its_effects_from_the_population(reaction):
    fitted = ppgen.load(reaction)
    rows = pd.DataFrame({"days": [5, 5], "group": ["a", "a"], "subject": ["s01", "someone new"]})
    predictions = fitted.predict(rows)
    assert predictions.attrs["unseen_levels"] == "subject: 1"
    posterior = inference_data.get_group(fitted.inference_data, "posterior")
    population = (posterior["b_Intercept"] + 5 * posterior["b_days"]).values.ravel()
    new = predictions["mu"].values[..., 1].ravel()
    # mu of the new subject = the population's line + that draw's effects for a standard normal z, zero-mean: their
    # mean is within Z standard errors of the line's mean, and their spread wider than a seen subject's.
    assert abs(new.mean() - population.mean()) < Z * (new - population).std() / math.sqrt(len(new))
    assert new.std() > 2 * predictions["mu"].values[..., 0].std()


@pytest.mark.slow
def test_a_category_the_model_never_saw_is_one_line_naming_the_column_and_level(reaction):
    rows = pd.DataFrame({"days": [1], "group": ["c"], "subject": ["s01"]})
    with pytest.raises(DataError, match=r"new data: The levels \(c\) in 'group' are not present"):
        ppgen.load(reaction).predict(rows)


@pytest.mark.slow
def test_ppgen_predict_writes_netcdf_and_a_csv_of_intervals(reaction, tmp_path):
    new = tmp_path / "new.csv"
    new.write_text("days,group,subject\n0,a,s01\n9,b,s02\n")
    result = cli("predict", reaction, "--data", new, "--out", tmp_path / "p.nc")
    assert result.code == 0, result.err
    assert "predictions for 2 rows" in result.out
    table = pd.read_csv(tmp_path / "p.csv")
    assert list(table["subject"]) == ["s01", "s02"]
    assert (table["reaction_3%"] < table["reaction_mean"]).all() and (
        table["reaction_mean"] < table["reaction_97%"]
    ).all()
    import xarray as xr

    draws = xr.open_dataset(tmp_path / "p.nc", group="predictions")
    assert draws["reaction"].dims == ("chain", "draw", "row") and draws.sizes["row"] == 2
    again = cli("predict", reaction, "--data", new, "--out", tmp_path / "p.nc")
    assert (
        again.code != 0
        and again.err.strip()
        == f"ppgen: error: {tmp_path / 'p.nc'} exists: pass --force to replace it, or --out elsewhere"
    )
    assert cli("predict", reaction, "--data", new, "--out", tmp_path / "p.nc", "--force").code == 0


@pytest.mark.slow
def test_ppgen_predict_without_out_never_replaces_earlier_predictions(reaction, tmp_path):
    new = tmp_path / "new.csv"
    new.write_text("days,group,subject\n0,a,s01\n")
    outputs = [cli("predict", reaction, "--data", new, "--seed", seed) for seed in (0, 1)]
    assert all(result.code == 0 for result in outputs), outputs[0].err
    assert (reaction / "predictions-new.nc").is_file() and (reaction / "predictions-new-2.nc").is_file()
    assert (reaction / "predictions-new-2.csv").is_file()


@pytest.mark.slow
def test_a_variables_spec_predicts_through_its_covariates(tmp_path_factory):
    run = fitted_run(tmp_path_factory, LOGISTIC)
    rows = pd.read_csv(REPO / "models" / "data" / "logistic_regression.csv").drop(columns="y")
    predictions = ppgen.load(run).predict(rows)
    assert predictions["y"].shape[-1] == len(rows)
    assert_reproduces_posterior_predictive(run, predictions, "y", 0.5)  # a Bernoulli's sd is at most 1/2


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", REPO / "models", "--data", "x.csv"], "no spec.toml: not a run folder"),
        (["predict", REPO, "--data", "x.csv"], "no spec.toml: not a run folder"),
    ],
)
def test_predict_on_something_that_is_no_run_is_one_line(args, message):
    result = cli(*args)
    assert result.code == 2 and message in result.err and "Traceback" not in result.err


def test_a_spec_without_covariates_says_how_to_mark_them(tmp_path_factory):
    run = fitted_run(tmp_path_factory, REPO / "models" / "normal_normal.toml")
    with pytest.raises(PpgenError, match=r"add `covariates = \[...\]`"):
        ppgen.load(run).predict({"x": [1.0]})


@pytest.mark.slow
@pytest.mark.parametrize(
    ("csv", "message"),
    [
        ("days,group,subject\n0,a,\n", "column 'subject' has no value in rows [0]"),
        ("days,group\n0,a\n", "no column 'subject', which the formula reads"),
        ("days,group,subject\n0,c,s01\n", "The levels (c) in 'group' are not present"),
    ],
)
def test_a_mistake_in_the_new_rows_names_their_file(reaction, tmp_path, csv, message):
    new = tmp_path / "new.csv"
    new.write_text(csv)
    result = cli("predict", reaction, "--data", new)
    assert result.code != 0 and result.err.startswith(f"ppgen: error: {new}: ") and message in result.err
    assert len(result.err.strip().splitlines()) == 1
