"""The README's walkthrough (examples/trials.toml), every command as a user types it, with small budgets: formula,
prior predictive check, fit, diagnostics, sensitivity, LOO comparison, predictions for new rows."""

import pandas as pd
import pytest
from test_cli import REPO, cli

SPEC = REPO / "examples" / "trials.toml"
NEW_PATIENTS = REPO / "examples" / "data" / "new_patients.csv"
BUDGET = ["inference.num_chains=2", "inference.num_warmup=300", "inference.num_samples=300", "evaluation.plots=false"]


def settings(*extra: str) -> list[str]:
    return [arg for key in (*BUDGET, *extra) for arg in ("--set", key)]


@pytest.mark.slow
def test_the_walkthrough_from_formula_to_predictions(tmp_path):
    shown = cli("show", SPEC)  # 1. the formula's variables
    assert shown.code == 0, shown.err
    assert "b_treatment = " in shown.out and 'r_clinic = { value = "z_clinic * sd_clinic__Intercept"' in shown.out

    prior = cli("run", SPEC, "--prior", "--out", tmp_path / "trials-prior", "--quiet", *settings())  # 2.
    assert prior.code == 0, prior.err
    assert (tmp_path / "trials-prior" / "prior.nc").is_file()

    fit = cli("run", SPEC, "--out", tmp_path / "trials", "--quiet", *settings())  # 3. fit
    assert fit.code == 0, fit.err
    summary = (tmp_path / "trials" / "summary.txt").read_text()  # 4. diagnostics, 5. sensitivity
    assert "r_hat" in summary and "ess_bulk" in summary and "PSIS-LOO" in summary
    assert "Power-scaling sensitivity" in summary

    formula = 'model.formula="recovered ~ age + (1 | clinic)"'
    simpler = cli("run", SPEC, "--out", tmp_path / "trials-age", "--quiet", *settings(formula))
    assert simpler.code == 0, simpler.err
    compared = cli("compare", tmp_path / "trials", tmp_path / "trials-age")  # 6. LOO
    assert compared.code == 0, compared.err
    assert "trials-age" in compared.out and "weight" in compared.out

    predicted = cli("predict", tmp_path / "trials", "--data", NEW_PATIENTS)  # 7. predictions
    assert predicted.code == 0, predicted.err
    assert "(clinic: 1)" in predicted.out  # the patient in a new clinic
    table = pd.read_csv(tmp_path / "trials" / "predictions-new_patients.csv")
    assert len(table) == 4 and table["recovered_mean"].between(0, 1).all()
    # The new clinic's effect is drawn from the population: the widest interval of the linear predictor.
    widths = table["mu_97%"] - table["mu_3%"]
    assert widths.idxmax() == 3
