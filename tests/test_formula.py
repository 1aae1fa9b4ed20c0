"""Formula models (``ppgen.spec.formula``): what a formula expands to, its log density against a hand-written one
(contrasts, centring, correlated group effects, each family's link), its posterior against posteriordb's
reference, and the mistakes a user makes, each one line."""

import numpy as np
import pandas as pd
import pytest
from test_cli import REPO, cli
from test_posteriordb import assert_matches_reference, posteriordb  # noqa: F401 (a fixture)

from ppgen.errors import DataError, SpecError
from ppgen.evaluate import inference_data
from ppgen.evaluate.reference import load_reference
from ppgen.infer.bayes_data import float64
from ppgen.models.bayes import bayes_model_from_tables
from ppgen.spec.formula import expand_formula

REACTION = REPO / "examples" / "reaction_formula.toml"
KIDIQ = REPO / "models" / "kidiq_formula.toml"


def frame(seed: int = 0, n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(2.0, 1.5, n),
            "w": rng.normal(size=n),
            "c": rng.choice(["p", "q", "r"], n),
            "g": rng.choice(["g1", "g2", "g3", "g4"], n),
            "y": rng.normal(5.0, 2.0, n),
            "k": rng.integers(0, 2, n),
            "count": rng.poisson(3.0, n),
            "trials": np.full(n, 10),
            "hits": rng.binomial(10, 0.3, n),
            "positive": rng.gamma(2.0, 1.5, n),
            "share": rng.beta(2.0, 3.0, n),
        }
    )


def tables(data: pd.DataFrame, formula: str, family: str = "gaussian", **model) -> dict:
    columns = {name: data[name].tolist() for name in data.columns}
    return {"model": {"formula": formula, "family": family, **model}, "data": columns}


def model_of(spec_tables: dict):
    return bayes_model_from_tables(spec_tables, REPO, "spec.toml", backend="numpyro")


def log_density(model, point: dict) -> float:
    from numpyro.infer.util import log_density as numpyro_log_density

    with float64():
        value, _ = numpyro_log_density(model.numpyro_model, (model.jax_data(),), {}, point)
    return float(value)


def test_a_mixed_model_expands_to_brms_named_variables():
    import tomllib

    spec = tomllib.loads(REACTION.read_text())
    expanded = expand_formula(spec, REACTION.parent, str(REACTION))
    assert list(expanded["variables"]) == [
        "b_days", "Intercept", "b_Intercept", "sd_subject__Intercept", "sd_subject__days", "L_subject",
        "z_subject", "r_subject", "sigma", "reaction",
    ]  # fmt: skip
    assert expanded["plates"] == {"obs": "N", "subject": "N_subject"}
    assert expanded["data"]["N_subject"] == 18 and expanded["data"]["group_subject"].max() == 17
    assert expanded["variables"]["b_days"] == "Normal(0, 20)"  # the spec's prior, by term name
    # Default priors scaled to the data: 2.5 sd(y) for the intercept, HalfStudentT(4, sd(y)) for sigma.
    sd_y = np.std(pd.read_csv(REACTION.parent / "data" / "reaction.csv")["reaction"])
    assert expanded["variables"]["Intercept"].endswith(f", {2.5 * sd_y:.6g})")
    assert expanded["variables"]["sigma"] == f"HalfStudentT(4, {sd_y:.6g})"


def test_a_formula_with_contrasts_an_interaction_and_correlated_group_effects_has_the_hand_written_density():
    # y ~ 1 + x * w + c + (1 + x | g): treatment contrasts for c (q and r against p), predictors centred on their
    # means under the sampled Intercept, r = z (diag(sd) L)^T. Written here with numpyro's distributions alone.
    import numpyro.distributions as dist

    data = frame()
    priors = {"Intercept": "Normal(0, 10)", "x": "Normal(0, 2)", "w": "Normal(0, 3)", "x:w": "Normal(0, 4)"}
    priors |= {"c": "Normal(0, 5)", "1|g": "HalfNormal(2)", "x|g": "HalfNormal(1)", "sigma": "HalfNormal(3)"}
    model = model_of(tables(data, "y ~ 1 + x * w + c + (1 + x | g)", priors=priors))
    rng = np.random.default_rng(1)
    point = {
        "Intercept": 4.2, "b_x": 0.3, "b_w": -0.2, "b_x_w": 0.1, "b_c": np.array([0.5, -0.7]),
        "sd_g__Intercept": 1.3, "sd_g__x": 0.4, "L_g": np.linalg.cholesky(np.array([[1.0, 0.35], [0.35, 1.0]])),
        "z_g": rng.normal(size=(4, 2)), "sigma": 1.7,
    }  # fmt: skip
    columns = pd.DataFrame({"x": data.x, "w": data.w, "x:w": data.x * data.w})
    columns[["c[q]", "c[r]"]] = pd.get_dummies(data.c)[["q", "r"]].astype(float).to_numpy()
    centred = (columns - columns.mean()).to_numpy()
    slopes = np.array([point["b_x"], point["b_w"], point["b_x_w"], *point["b_c"]])
    levels = pd.Categorical(data.g).codes
    effects = point["z_g"] @ (np.diag([point["sd_g__Intercept"], point["sd_g__x"]]) @ point["L_g"]).T
    mu = point["Intercept"] + centred @ slopes + effects[levels, 0] + effects[levels, 1] * data.x.to_numpy()
    with float64():  # numpyro's distributions compute in JAX's float32 otherwise
        expected = _grouped_log_joint(dist, point, slopes, mu, data.y.to_numpy())
    assert log_density(model, point) == pytest.approx(expected, abs=1e-8)


def _grouped_log_joint(dist, point: dict, slopes, mu, y) -> float:
    return float(
        dist.Normal(0, 10).log_prob(point["Intercept"])
        + sum(dist.Normal(0, s).log_prob(b) for s, b in zip([2, 3, 4, 5, 5], slopes))
        + dist.HalfNormal(2).log_prob(point["sd_g__Intercept"])
        + dist.HalfNormal(1).log_prob(point["sd_g__x"])
        + dist.LKJCholesky(2, 2.0).log_prob(point["L_g"])
        + dist.Normal(0, 1).log_prob(point["z_g"]).sum()
        + dist.HalfNormal(3).log_prob(point["sigma"])
        + dist.Normal(mu, point["sigma"]).log_prob(y).sum()
    )


FAMILIES = {  # family: (response, its auxiliary parameter and value, the hand-written likelihood of eta)
    "student_t": ("y", {"sigma": 1.5, "nu": 4.0}, lambda d, eta, p: d.StudentT(p["nu"], eta, p["sigma"])),
    "bernoulli": ("k", {}, lambda d, eta, p: d.Bernoulli(logits=eta)),
    "binomial": ("hits", {}, lambda d, eta, p: d.Binomial(10, logits=eta)),
    "poisson": ("count", {}, lambda d, eta, p: d.Poisson(np.exp(eta))),
    "negative_binomial": (
        "count",
        {"alpha": 2.5},
        lambda d, eta, p: d.NegativeBinomial2(np.exp(eta), p["alpha"]),
    ),  # fmt: skip
    "gamma": ("positive", {"alpha": 3.0}, lambda d, eta, p: d.Gamma(p["alpha"], p["alpha"] / np.exp(eta))),
    "beta": (
        "share",
        {"kappa": 6.0},
        lambda d, eta, p: d.BetaProportion(1 / (1 + np.exp(-eta)), p["kappa"]),
    ),  # fmt: skip
}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_links_the_linear_predictor_as_documented(family):
    # Against numpyro's own mean parameterizations (NegativeBinomial2: mean and concentration; BetaProportion:
    # mean and precision), so the link and the parameterization are both checked.
    import numpyro.distributions as dist

    response, auxiliary, likelihood = FAMILIES[family]
    data = frame(seed=2)
    priors = {"Intercept": "Normal(0, 1)", "x": "Normal(0, 1)", **{name: "HalfNormal(2)" for name in auxiliary}}
    extra = {"trials": "trials"} if family == "binomial" else {}
    model = model_of(tables(data, f"{response} ~ x", family, priors=priors, **extra))
    point = {"Intercept": 0.2, "b_x": -0.3, **auxiliary}
    eta = point["Intercept"] + point["b_x"] * (data.x - data.x.mean()).to_numpy()
    with float64():
        expected = float(
            dist.Normal(0, 1).log_prob(0.2)
            + dist.Normal(0, 1).log_prob(-0.3)
            + sum(dist.HalfNormal(2).log_prob(value) for value in auxiliary.values())
            + likelihood(dist, eta, point).log_prob(data[response].to_numpy()).sum()
        )
    assert log_density(model, point) == pytest.approx(expected, rel=1e-9)


@pytest.mark.slow
def test_the_kidiq_formula_with_the_stan_programs_priors_matches_posteriordbs_reference(posteriordb, tmp_path):  # noqa: F811
    from ppgen.runner import run
    from ppgen.spec.load import load_spec

    overrides = ["inference.num_chains=2", "inference.num_samples=1000", "evaluation.plots=false"]
    run(load_spec(KIDIQ, overrides=overrides), tmp_path / "run", progress=False)
    posterior = inference_data.get_group(inference_data.load(tmp_path / "run" / "posterior.nc"), "posterior")
    beta = np.stack([posterior[name] for name in ("b_Intercept", "b_mom_hs", "b_mom_iq")], axis=-1)
    named = posterior.assign(beta=(("chain", "draw", "beta_dim_0"), beta))[["beta", "sigma"]]
    assert_matches_reference(named, load_reference(posteriordb / "kidiq-kidscore_momhsiq"))


@pytest.mark.parametrize(
    "formula, model, error, message",
    [
        ("y ~ x + nope", {}, SpecError, "model.formula: no column 'nope'"),
        ("y ~ x +", {}, SpecError, "model.formula = 'y ~ x +': "),
        ("y x", {}, SpecError, "model.formula: expected 'response ~ terms'"),
        ("y ~ x", {"family": "gaussain"}, SpecError, "model.family: 'gaussain' is not one of"),
        ("y ~ x", {"priors": {"xx": "Normal(0, 1)"}}, SpecError, "model.priors.xx: no such term (did you mean"),
        ("hits ~ x", {"family": "binomial"}, SpecError, "model.trials: the binomial family, and only it"),
    ],
)
def test_a_formula_mistake_is_one_line_naming_the_key(formula, model, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace("+", r"\+")):
        model_of(tables(frame(), formula, **model))


def test_a_missing_value_in_a_column_the_formula_reads_names_the_column_and_rows():
    data = frame()
    data.loc[[3, 7], "x"] = np.nan
    with pytest.raises(DataError, match=r"column 'x' has missing values \(rows 3, 7\)"):
        model_of(tables(data, "y ~ x"))


def test_the_mixed_model_example_runs_through_the_command_line(tmp_path):
    out = tmp_path / "run"
    settings = ["inference.num_chains=1", "inference.num_warmup=100", "inference.num_samples=100"]
    result = cli("run", REACTION, "--out", out, "--quiet", *[a for s in settings for a in ("--set", s)])
    assert result.code == 0, result.err
    posterior = inference_data.get_group(inference_data.load(out / "posterior.nc"), "posterior")
    assert posterior["r_subject"].shape == (1, 100, 18, 2) and "b_Intercept" in posterior


def test_ppgen_show_prints_the_variables_a_formula_expands_to_one_a_line():
    result = cli("show", REACTION)
    assert result.code == 0, result.err
    assert "#   N_subject = 18" in result.out and 'subject = "N_subject"' in result.out
    assert 'z_subject = { dist = "Normal(0, 1)", plate = "subject", shape = [2] }' in result.out
    assert 'reaction = { dist = "Normal(Intercept + X_days * b_days + sum(r_subject[group_subject] * Z_subject, 1)' in (
        result.out
    )
