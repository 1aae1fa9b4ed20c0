"""The Bayesian workflow on declarative models: every inference method against exact conjugate posteriors,
the run folder it writes (ArviZ results, summary, checks, plots), ``ppgen compare``, and user mistakes."""

import json
import math
import subprocess
import sys
import tomllib

import numpy as np
import pytest
from spec_files import BAYES_INFERENCE_SPECS
from test_cli import PNG_MAGIC, REPO, cli

from ppgen.errors import PpgenError, SpecError
from ppgen.evaluate import inference_data
from ppgen.posterior import infer, results_of
from ppgen.runner import run
from ppgen.spec.load import load_spec

NORMAL, BETA = REPO / "models" / "normal_normal.toml", REPO / "models" / "beta_binomial.toml"
EIGHT_SCHOOLS = REPO / "models" / "eight_schools.toml"
Z = 4.0  # |error| < 4 standard errors: a false alarm has probability < 1e-4 per check


def exact_normal_posterior(data: dict) -> tuple[float, float]:
    """mu ~ N(mu0, tau0), y_i ~ N(mu, sigma): the posterior is normal (BDA3, section 2.5)."""
    precision = 1 / data["tau0"] ** 2 + len(data["y"]) / data["sigma"] ** 2
    mean = (data["mu0"] / data["tau0"] ** 2 + data["y"].sum() / data["sigma"] ** 2) / precision
    return float(mean), float(precision**-0.5)


def assert_matches(draws: np.ndarray, mean: float, sd: float, sd_slack: float = 0.0) -> None:
    """Mean within Z MCSE (MCSE = sd / sqrt(bulk ESS)); sd within Z relative standard errors 1 / sqrt(2 ESS) of
    a normal sample's sd, plus ``sd_slack`` (a method's known bias)."""
    ess = float(inference_data.ess(draws))
    assert abs(draws.mean() - mean) < Z * sd / math.sqrt(ess), (draws.mean(), mean, ess)
    assert abs(draws.std() / sd - 1) < Z / math.sqrt(2 * ess) + sd_slack, (draws.std(), sd, ess)


SHORT = ["inference.num_warmup=300", "inference.num_samples=500", "inference.num_chains=2"]
METHODS = {
    "nuts-numpyro": SHORT,
    "nuts-pyro": [*SHORT, "inference.backend=pyro"],
    "hmc-numpyro": [*SHORT, "inference.method=hmc", "inference.num_steps=8"],
    "mala": [*SHORT, "inference.method=mala"],
    # ULA's variance s becomes s / (1 - h / (2 s)): with s = 0.097 and h = 0.002, 1% too large.
    "ula": [*SHORT, "inference.method=ula", "inference.step_size=0.002", "inference.num_samples=3000"],
    # A diagonal Gaussian guide holds this Gaussian posterior exactly; 3000 Adam steps get within 1% of its sd.
    "svi": ["inference.method=svi", "inference.num_steps=3000", "inference.num_samples=2000"],
}
SLACK = {"ula": 0.02, "svi": 0.02}


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_each_method_samples_the_exact_normal_posterior(method):
    loaded = load_spec(NORMAL, overrides=METHODS[method])
    model = loaded.model
    draws = infer(model, loaded.settings)
    assert draws.posterior["mu"].ndim == 2  # [chain, draw]
    assert_matches(draws.posterior["mu"], *exact_normal_posterior(model.data), sd_slack=SLACK.get(method, 0.0))


@pytest.mark.slow
def test_nuts_samples_a_constrained_beta_posterior():
    """p | k ~ Beta(alpha0 + sum k, beta0 + sum (n - k)) (BDA3, section 2.4): the sampler works on logit(p)."""
    loaded = load_spec(BETA, overrides=SHORT)
    model = loaded.model
    data = model.data
    a, b = data["alpha0"] + data["k"].sum(), data["beta0"] + (data["n"] - data["k"]).sum()
    mean, sd = a / (a + b), math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    draws = infer(model, loaded.settings).posterior["p"]
    assert ((draws > 0) & (draws < 1)).all()
    # The Beta(21, 28) posterior is close to normal, so the sd check's normal-theory error applies.
    assert_matches(draws, mean, sd)


@pytest.mark.slow
def test_a_run_folder_holds_results_checks_and_plots(tmp_path):
    metrics = run(load_spec(NORMAL, overrides=SHORT), tmp_path / "run", progress=False)
    results = inference_data.load(tmp_path / "run" / "posterior.nc")
    assert {"posterior", "sample_stats", "observed_data", "posterior_predictive", "log_likelihood"} <= set(
        inference_data.groups(results)
    )
    y = inference_data.get_group(results, "observed_data")["y"].values
    np.testing.assert_array_equal(y, np.asarray(load_spec(NORMAL).model.data["y"]))
    # dimensions named after the plates, and the rest of the data in constant_data, for ArviZ's labelled plots
    for group in ("observed_data", "posterior_predictive", "log_likelihood"):
        assert inference_data.get_group(results, group)["y"].dims[-1] == "obs"
    assert {"N", "mu0", "tau0", "sigma"} <= set(inference_data.get_group(results, "constant_data").data_vars)
    replicated = inference_data.get_group(results, "posterior_predictive")["y"]
    assert replicated.shape == (2, 500, len(y))
    assert {"diverging", "acceptance_rate", "step_size", "lp"} <= set(inference_data.get_group(results, "sample_stats"))
    # The model is right for its data: no posterior predictive statistic is extreme.
    assert all(0.0 < check["p_value"] < 1.0 for check in metrics["ppc"]["y"].values())
    assert metrics["loo"]["pareto_k"]["very_bad"] == 0 and metrics["loo"]["elpd_loo"] < 0
    assert "mu" in (tmp_path / "run" / "summary.txt").read_text()
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["method"] == "nuts" and "mu" in saved["summary"]
    # the right model for its data: LOO-PIT uniform; a prior of sd 2 against 10 points of sd 1: no sensitive prior
    assert saved["loo_pit"]["p_value"] > 0.01 and saved["loo_pit"]["num_data"] == len(y)
    assert saved["sensitivity"]["mu"]["prior"] < 0.05 < saved["sensitivity"]["mu"]["likelihood"]
    assert not any(line.startswith(("sensitivity:", "y: LOO-PIT")) for line in saved["warnings"])
    assert list(inference_data.get_group(results, "log_prior").data_vars) == ["mu"]
    for plot in ("rank.png", "ppc.png", "pareto_k.png", "loo_pit.png"):
        assert (tmp_path / "run" / plot).read_bytes().startswith(PNG_MAGIC)


def test_ppgen_run_prints_the_summary_and_draws_the_figures_in_a_background_process(tmp_path):
    budget = ["inference.num_warmup=50", "inference.num_samples=50", "inference.num_chains=1"]
    result = cli("run", NORMAL, "--out", tmp_path / "run", "--quiet", *[a for s in budget for a in ("--set", s)])
    assert result.code == 0 and "plots are being drawn in the background" in result.out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["plots"] == "background" and metrics["sampler"] == {"mass": "diag"}  # one parameter: diag
    assert "nuts (diag mass):" in result.out
    # this file's conftest waits for the plot process, which must have exited with status 0
    for plot in ("trace.png", "ppc.png", "pareto_k.png"):  # one chain: no rank plot, which compares chains
        assert (tmp_path / "run" / plot).read_bytes().startswith(PNG_MAGIC)


def test_a_numpyro_run_imports_neither_torch_nor_pyro_nor_scikit_learn(tmp_path):
    """What a NumPyro run does not need, it does not import (torch and Pyro cost 1.3 s of start-up): the run
    through the command line, in a fresh process, then the modules it loaded. (matplotlib still comes in with
    ArviZ 0.x, whose package imports its plotting module; ppgen's own figures are drawn in a background process.)"""
    script = f"""
import sys
from ppgen.cli import main
from ppgen.evaluate import check_plots
check_plots.plot_in_background = lambda folder, name: check_plots.subprocess.Popen(["true"])  # not drawn here
code = main(["run", {str(EIGHT_SCHOOLS)!r}, "--out", {str(tmp_path / "run")!r}, "--quiet",
             "--set", "inference.num_warmup=20", "--set", "inference.num_samples=20"])
print(code, sorted({{"torch", "pyro", "sklearn"}} & set(sys.modules)))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.stdout.strip().splitlines()[-1] == "0 []", result.stderr[-3000:]


@pytest.mark.slow
def test_deterministic_variables_are_in_the_posterior():
    loaded = load_spec(REPO / "models" / "eight_schools.toml", overrides=SHORT)
    model = loaded.model
    draws = infer(model, loaded.settings)
    posterior = inference_data.get_group(results_of(model, draws), "posterior")
    theta = posterior["theta"].values
    expected = draws.posterior["mu"][..., None] + draws.posterior["tau"][..., None] * draws.posterior["theta_raw"]
    np.testing.assert_allclose(theta, expected, rtol=1e-6)


@pytest.mark.slow
def test_compare_ranks_the_right_model_first(tmp_path):
    """The same data under the right noise scale and under one ten times too small: LOO must prefer the first."""
    runs = []
    for name, sigma in (("right", 1.0), ("wrong", 0.1)):
        overrides = sum((["--set", s] for s in [*SHORT, f"data.sigma={sigma}"]), [])
        assert cli("run", NORMAL, "--out", tmp_path / name, "--quiet", *overrides).code == 0
        runs.append(tmp_path / name)
    result = cli("compare", *runs)
    assert result.code == 0
    header, right, wrong = result.out.splitlines()[:3]
    assert right.split()[0] == "right" and header.split()[6] == "weight"
    assert float(right.split()[7]) > 0.9  # stacking puts (almost) all weight on the right model
    assert "weight: stacking weights" in result.out


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["inference.method=gibbs"], "inference.method: 'gibbs' is not known; expected one of 'nuts', 'hmc'"),
        (["inference.num_chains=0"], "inference.num_chains: input should be greater than 0"),
        (["inference.step_size=0.1"], "inference.step_size: unknown key"),
        # the key took NumPyro's name, target_accept_prob; the old one is named with the new one
        (["inference.target_accept=0.9"], "inference.target_accept: unknown key (did you mean 'target_accept_prob'?)"),
        (["guide.family=iaf", "inference.method=mala"], "[guide] applies to inference.method = 'svi'"),
    ],
)
def test_inference_mistakes_name_the_key(overrides, message):
    with pytest.raises(SpecError, match=None) as error:
        load_spec(NORMAL, overrides=overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_generative_table_in_a_bayesian_spec_is_named(tmp_path):
    spec = tmp_path / "model.toml"
    spec.write_text(NORMAL.read_text() + "\n[sampling]\nsampler = 'pc'\n")
    result = cli("run", spec, "--out", tmp_path / "run")
    assert result.code == 2 and "[sampling] is not a table of a declarative model spec" in result.err
    assert not (tmp_path / "run").exists()


def test_compare_needs_bayesian_runs(tmp_path):
    result = cli("compare", tmp_path, tmp_path / "other")
    assert result.code == 2 and "no posterior.nc" in result.err


@pytest.mark.parametrize("inference", BAYES_INFERENCE_SPECS, ids=lambda path: path.name)
def test_the_inference_specs_are_valid(inference):
    spec = load_spec(NORMAL, inference=inference)
    written = tomllib.loads(inference.read_text())["inference"]
    assert spec.settings.inference.model_dump(include=set(written)) == written  # every key reaches the spec as written


def test_the_device_key_is_read_and_checked():
    loaded = load_spec(NORMAL, overrides=["inference.backend=pyro", "inference.device=auto"])
    assert loaded.settings.inference.device == "auto"
    with pytest.raises(SpecError, match="inference.device: 'gpu' is not allowed"):
        load_spec(NORMAL, overrides=["inference.device=gpu"])


@pytest.mark.slow
@pytest.mark.parametrize("step", ["results_of", "plot_checks"])
def test_a_failure_after_sampling_leaves_the_draws_on_disk(step, tmp_path, monkeypatch):
    # Whatever fails after sampling (here a bug planted in the results step, or in the plots, the last step), the
    # draws are written first, and the error says in one line what failed and where the draws are.
    def planted(*args, **kwargs):
        raise ValueError("a planted bug\nwith a second line")

    if step == "results_of":
        monkeypatch.setattr("ppgen.bayesian_run.results_of", planted)
    else:
        monkeypatch.setattr("ppgen.evaluate.check_plots.plot_checks", planted)
    out = tmp_path / "run"
    budget = ("inference.num_chains=1", "inference.num_warmup=30", "inference.num_samples=30")
    spec = REPO / "models" / "posteriordb" / "arK-arK.toml"
    if step == "results_of":  # through the command line
        result = run_with(spec, out, *budget)
        assert result.code == 2
        error = result.err
    else:  # ppgen.run from Python, which draws the plots itself (the command line has a background process draw them)
        with pytest.raises(PpgenError) as raised:
            run(load_spec(spec, overrides=list(budget)), out, progress=False)
        error = f"ppgen: error: {raised.value}\n"
    assert "ValueError: a planted bug (the posterior draws" in error and "second line" not in error
    assert error.endswith(
        f"(the posterior draws are saved in {out / 'posterior.nc'}; the checks after sampling did not run)\n"
    )
    posterior = inference_data.get_group(inference_data.load(out / "posterior.nc"), "posterior")
    assert posterior["alpha"].shape == (1, 30) and np.isfinite(posterior["alpha"].values).all()


@pytest.mark.slow
def run_with(spec, out, *settings):
    """``ppgen run SPEC --out OUT --quiet`` with each of ``settings`` as a ``--set``."""
    return cli("run", spec, "--out", out, "--quiet", *[arg for key in settings for arg in ("--set", key)])


def tiny(chains: int, warmup: int, samples: int) -> tuple[str, ...]:
    """The settings of a short run."""
    return (f"inference.num_chains={chains}", f"inference.num_warmup={warmup}", f"inference.num_samples={samples}")


def test_a_plate_less_likelihood_runs_end_to_end(tmp_path):
    # One multivariate-normal observation: its log-likelihood has one term per draw, which once crashed the
    # Pareto-k plot after the results were written. LOO has nothing to leave out, and says so.
    spec = tmp_path / "mvn.toml"
    spec.write_text(
        '[data]\ny = [0.5, -0.2, 1.1]\n\n[variables]\nmu = { dist = "Normal(0, 1)", shape = [3] }\n'
        'y = { dist = "MultivariateNormal(mu, eye(3))", observed = "y" }\n'
    )
    out = tmp_path / "run"
    result = run_with(spec, out, *tiny(2, 100, 100))
    assert result.code == 0, result.err
    assert {"trace.png", "rank.png", "ppc.png"} <= {path.name for path in out.iterdir()}
    assert not (out / "pareto_k.png").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert "loo" not in metrics and any(line.startswith("loo: skipped") for line in metrics["warnings"])


@pytest.mark.slow
def test_a_run_whose_trees_saturate_says_so(tmp_path):
    # A depth limit of 1 leaves every NUTS transition at the limit: the summary must name it and the fix.
    out = tmp_path / "run"
    result = run_with(NORMAL, out, *tiny(1, 50, 50), "inference.max_tree_depth=1")
    assert result.code == 0, result.err
    assert "hit the maximum tree depth 1" in (out / "summary.txt").read_text()
    assert "inference.max_tree_depth" in (out / "summary.txt").read_text()


def test_the_mass_key_through_the_command_line(tmp_path):
    # A user's `--set inference.mass=dense` reaches the sampler, and says so; a bad value is one line, exit 2.
    budget = ["inference.num_warmup=50", "inference.num_samples=50", "inference.num_chains=1", "evaluation.plots=false"]
    sets = [arg for key in [*budget, "inference.mass=dense"] for arg in ("--set", key)]
    result = cli("run", EIGHT_SCHOOLS, "--out", tmp_path / "run", "--quiet", *sets)
    assert result.code == 0 and "nuts (dense mass):" in result.out
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["sampler"] == {"mass": "dense"}
    bad = cli("run", EIGHT_SCHOOLS, "--out", tmp_path / "bad", "--set", "inference.mass=full")
    assert bad.code == 2 and "inference.mass" in bad.err and len(bad.err.strip().splitlines()) == 1


def test_a_density_without_data_runs_end_to_end(tmp_path):
    # A model with no observed variable (a prior, a target density such as a funnel) once failed after sampling
    # with "results have no 'observed_data' group": there is nothing to check the draws against, so no PPC or LOO.
    spec = tmp_path / "prior.toml"
    spec.write_text('[variables]\nx = "Normal(1, 2)"\n')
    out = tmp_path / "run"
    result = run_with(spec, out, *tiny(2, 200, 500), "evaluation.plots=false")
    assert result.code == 0, result.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["ppc"] == {} and "loo" not in metrics and metrics["warnings"] == []
    # 1000 draws of N(1, 2): the mean's Monte Carlo sd is about 2 / sqrt(ESS ~ 400) = 0.1; 0.5 is 5 sd.
    assert abs(metrics["summary"]["x"]["mean"] - 1.0) < 0.5


def test_one_chain_says_r_hat_was_not_computed(tmp_path):
    # R-hat compares chains: with one, ArviZ gives NaN, which once read "R-hat is undefined: constant draws".
    out = tmp_path / "run"
    result = run_with(NORMAL, out, *tiny(1, 100, 200), "evaluation.plots=false")
    assert result.code == 0, result.err
    warnings = json.loads((out / "metrics.json").read_text())["warnings"]
    assert "R-hat: not computed, it compares 2 or more chains (inference.num_chains = 1)" in warnings
    assert not any("R-hat is undefined" in line for line in warnings)
    assert "Shape validation failed" not in result.err + result.out
