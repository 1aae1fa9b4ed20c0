"""Pathfinder (``inference.method = "pathfinder"``, ``ppgen.infer.pathfinder``): its draws against an exact
posterior, a run through the command line, its Pareto-k warning, user mistakes, and NUTS started at its draws."""

import json
import math

import numpy as np
import pytest
from test_cli import REPO, cli
from test_workflow import Z, assert_matches, exact_normal_posterior

from ppgen.infer.bayes_data import float64
from ppgen.infer.methods import numpyro_sampler
from ppgen.infer.pathfinder import K_THRESHOLD, PathfinderDraws, warnings_of
from ppgen.infer.posterior_settings import PathfinderSettings
from ppgen.posterior import infer
from ppgen.spec.load import load_spec

NORMAL = REPO / "models" / "normal_normal.toml"
QUICK = ["inference.method=pathfinder", "inference.max_iterations=50"]


@pytest.mark.slow
def test_pathfinder_draws_the_exact_normal_posterior():
    """On a normal posterior Pathfinder is exact: L-BFGS's first curvature pair, (s, y) with y = s / sd^2, gives the
    inverse Hessian sd^2 exactly in one dimension, and the approximation N(theta + sd^2 grad log p(theta), sd^2) at
    any iterate theta is then the posterior. So every importance weight p / q is the same (Pareto k = -inf), and the
    draws are n = num_samples resampled with replacement from M = num_paths * draws_per_path exact draws: their mean
    errs by sd sqrt(1/n + 1/M) (resampling, then the M draws' own error), their sd by a relative
    sqrt((1/n + 1/M) / 2) (a normal sample's sd, with that effective size)."""
    loaded = load_spec(NORMAL, overrides=QUICK)
    settings = loaded.settings.settings()
    draws = infer(loaded.model, loaded.settings)
    mu = draws.posterior["mu"]
    assert mu.shape == (4, settings.num_samples // 4)  # [chain, draw]
    assert draws.choices == {"paths": "4 of 4", "Pareto k": "-inf"} and draws.warnings == ()
    mean, sd = exact_normal_posterior(loaded.model.data)
    spread = math.sqrt(1 / settings.num_samples + 1 / (settings.num_paths * settings.draws_per_path))
    assert abs(mu.mean() - mean) < Z * sd * spread, (mu.mean(), mean)
    assert abs(mu.std() / sd - 1) < Z * spread / math.sqrt(2), (mu.std(), sd)
    assert np.all(np.isfinite(draws.sample_stats["lp"]))


def test_a_pareto_k_above_the_threshold_and_failed_paths_are_warnings():
    settings = PathfinderSettings()
    found = PathfinderDraws({}, {}, np.zeros(1), 0.9, 3)
    lines = warnings_of(found, settings)
    assert len(lines) == 2 and "1 of 4 paths" in lines[0] and f"Pareto k 0.90 > {K_THRESHOLD}" in lines[1]
    assert warnings_of(PathfinderDraws({}, {}, np.zeros(1), 0.5, 4), settings) == ()


@pytest.mark.slow
def test_ppgen_run_with_pathfinder_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    tiny = [*QUICK, "inference.num_samples=200", "inference.draws_per_path=200", "evaluation.plots=false"]
    result = cli("run", NORMAL, "--out", out, *(item for key in tiny for item in ("--set", key)), "--quiet")
    assert result.code == 0, result.err
    assert (out / "posterior.nc").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "pathfinder" and metrics["sampler"]["Pareto k"] == "-inf"
    assert "pathfinder (4 of 4 paths) (-inf Pareto k)" in result.out


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["inference.method=pathfinder", "inference.num_paths=0"], "inference.num_paths"),
        (["inference.init_strategy=pathfinder", "inference.backend=pyro"], "inference.init_strategy"),
    ],
)
def test_a_bad_pathfinder_setting_is_one_line_and_exit_2(overrides, key, tmp_path):
    result = cli("run", NORMAL, "--out", tmp_path / "run", *(item for o in overrides for item in ("--set", o)))
    assert result.code == 2 and key in result.err and len(result.err.strip().splitlines()) == 1, result.err
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_nuts_starts_its_chains_at_pathfinder_draws():
    """The chains start at distinct Pathfinder draws: finite, and within 5 posterior sds of the mean (a draw of the
    exact normal posterior lies beyond with probability 6e-7); then NUTS samples from there."""
    budget = ["inference.num_chains=2", "inference.num_warmup=200", "inference.num_samples=300"]
    loaded = load_spec(NORMAL, overrides=[*budget, "inference.init_strategy=pathfinder"])
    model, settings = loaded.model, loaded.settings.settings()
    mean, sd = exact_normal_posterior(model.data)
    with float64():
        sampler = numpyro_sampler(model, settings)
        starts = sampler._starts(settings.seed, {"observed": {"y": model.jax_data()["y"]}})
    mu = np.asarray(starts["mu"])
    assert mu.shape == (2,) and np.all(np.isfinite(mu)) and mu[0] != mu[1]
    assert np.all(np.abs(mu - mean) < 5 * sd), mu
    draws = infer(model, loaded.settings).posterior["mu"]
    assert draws.shape == (2, 300) and np.all(np.isfinite(draws))
    assert_matches(draws, mean, sd)


@pytest.mark.slow
def test_a_high_pareto_k_is_a_warning_of_the_run(tmp_path):
    """Eight schools' funnel (tau near 0) is what a normal approximation misses: Pareto k 0.78 with seed 0."""
    out = tmp_path / "run"
    tiny = [*QUICK, "evaluation.plots=false", "evaluation.loo=false"]
    result = cli("run", REPO / "models" / "eight_schools.toml", "--out", out, *(i for k in tiny for i in ("--set", k)))
    assert result.code == 0, result.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert float(metrics["sampler"]["Pareto k"]) > K_THRESHOLD
    assert any(line.startswith("pathfinder: Pareto k") for line in metrics["warnings"])
    assert "pathfinder: Pareto k" in (out / "summary.txt").read_text()
