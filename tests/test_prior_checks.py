"""``ppgen run SPEC --prior``: a prior predictive check against the data, without sampling the posterior.

models/normal_normal.toml has mu ~ N(0, 2^2) and y_i ~ N(mu, 1) for 10 points, so the mean of a prior replicate
is N(0, 4 + 1/10) and every p-value of the mean is known exactly.
"""

import json
import math

import numpy as np
from scipy import stats
from test_cli import PNG_MAGIC, REPO, cli

from ppgen.evaluate import inference_data

NORMAL = REPO / "models" / "normal_normal.toml"


def test_a_prior_predictive_check_writes_its_run_folder(tmp_path):
    out = tmp_path / "prior"
    result = cli("run", NORMAL, "--prior", "--out", out, "--quiet", "--set", "inference.num_samples=2000")
    assert result.code == 0, result.err
    assert "Prior predictive p-values" in result.out and "prior predictive: 2000 draws" in result.out
    assert not (out / "posterior.nc").exists()  # nothing was fitted
    results = inference_data.load(out / "prior.nc")
    assert set(inference_data.groups(results)) == {"prior", "prior_predictive", "observed_data"}
    mu = inference_data.get_group(results, "prior")["mu"].values
    y_rep = inference_data.get_group(results, "prior_predictive")["y"].values
    assert mu.shape == (1, 2000) and y_rep.shape == (1, 2000, 10)
    assert abs(mu.mean()) < 4 * 2 / math.sqrt(2000)  # the prior N(0, 2^2): 4 standard errors
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "prior" and metrics["num_draws"] == 2000
    # P(mean(y_rep) > mean(y)) with mean(y_rep) ~ N(0, 4.1): the estimate is a mean of 2000 indicators.
    y = inference_data.get_group(results, "observed_data")["y"].values
    exact = stats.norm.sf(y.mean(), 0.0, math.sqrt(4.1))
    p_value = metrics["prior_predictive"]["y"]["mean"]["p_value"]
    assert abs(p_value - exact) < 4 * math.sqrt(exact * (1 - exact) / 2000)
    # y_i - mu ~ N(0, 1) against a prior predictive sd of sqrt(5): every point is inside its 90% interval
    assert metrics["coverage"]["y"] == {"prob": 0.9, "covered": 10, "num_data": 10, "share": 1.0}
    assert "y: 10 of 10 data points (100%) in their central 90% prior predictive interval" in result.out
    assert (out / "prior_ppc.png").read_bytes().startswith(PNG_MAGIC)


def test_a_prior_far_from_the_data_warns(tmp_path):
    # mu ~ N(50, 1): every replicate's mean is near 50 against the data's 1.3, so P(mean(y_rep) > mean(y)) ~ 1.
    out = tmp_path / "prior"
    sets = ["data.mu0=50", "data.tau0=1", "inference.num_samples=500", "evaluation.plots=false"]
    result = cli("run", NORMAL, "--prior", "--out", out, "--quiet", *[a for s in sets for a in ("--set", s)])
    assert result.code == 0, result.err
    warnings = json.loads((out / "metrics.json").read_text())["warnings"]
    assert any(line.startswith("y: prior predictive p-value of mean is 1.000") for line in warnings)
    assert "y: 0 of 10 data points (0%)" in result.out


def test_prior_is_refused_for_generative_specs_and_improper_priors(tmp_path):
    result = cli("run", REPO / "models" / "vae.toml", "--prior", "--out", tmp_path / "vae")
    assert result.code == 2 and "--prior:" in result.err and len(result.err.strip().splitlines()) == 1
    spec = tmp_path / "flat.toml"
    spec.write_text('[data]\ny = 0.5\n\n[variables]\nmu = "Flat()"\ny = { dist = "Normal(mu, 1)", observed = "y" }\n')
    result = cli("run", spec, "--prior", "--out", tmp_path / "flat")
    assert result.code == 2 and "variables.mu has an improper flat prior" in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_prior_predictive_counts_get_bars(tmp_path):
    """The count plot of the posterior predictive check draws the prior predictive too."""
    from ppgen.evaluate import check_plots

    rng = np.random.default_rng(5)
    y, rate = rng.poisson(3.0, size=40), rng.gamma(3.0, size=(1, 300))
    results = inference_data.build_inference_data(
        None,
        prior={"rate": rate},
        prior_predictive={"y": rng.poisson(rate[..., None], size=(1, 300, 40))},
        observed_data={"y": y},
    )
    (written,) = check_plots.plot_checks(results, tmp_path)
    assert written.name == "prior_ppc.png" and written.read_bytes().startswith(PNG_MAGIC)
