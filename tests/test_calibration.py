"""Simulation-based calibration of ppgen's samplers on a declarative conjugate model, through
``run_calibration`` and ``ppgen sbc`` (models/normal_normal.toml).

Model: mu ~ N(0, 2^2), y_i ~ N(mu, 1), i = 1..10, so mu | y ~ N(m, s^2) with s^2 = 1 / (1/4 + 10) for every
y (Gelman et al., BDA3, section 2.5); one scalar is ranked.
Size: a sampler of the exact posterior, thinned to nearly independent draws, gives uniform ranks, and the
check (chi-square and KS at Bonferroni level alpha / 2 each, alpha = 0.01) then fails with probability at
most 0.01 whatever the seed.
Power (chi-square alone, exact rank-bin probabilities as in tests/test_sbc.py; KS only adds to it):
- NUTS, R = 200 replicates of L = 99 draws (20 bins): misses a posterior sd twice too large with probability
  1.5e-6, a mean off by one sd with 1e-26, a mean off by half an sd with 0.009.
- MALA, R = 80, L = 9 (5 bins): misses a mean off by one sd with 1.4e-5, and MALA with its Metropolis
  correction dropped (ULA at MALA's adapted step h ~ 1.8 s^2: sd 3.2 times too large) with 0.006.
- ULA with h = 1.8 s^2 (deliberately wrong): computed in ``test_ula_with_a_large_step_fails``.
"""

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from ppgen.calibration import fit_from_spec, run_calibration, simulate_from_spec
from ppgen.cli import main
from ppgen.errors import SpecError
from ppgen.evaluate.sbc import default_num_bins
from ppgen.posterior import infer
from ppgen.samplers.langevin import ula_gaussian_stationary_covariance
from ppgen.spec.load import load_spec

SPEC = str(Path(__file__).resolve().parents[1] / "models" / "normal_normal.toml")
ALPHA = 0.01  # run_sbc's default family-wise level

# NUTS: two chains of 100 warm-up steps and 99 draws, L = 99 of the 198 at stride 2 (NUTS draws of a 1-D
# Gaussian are about independent already). The CLI ranks 99 draws: it shares these settings and the sampler.
NUTS_REPLICATES, NUTS_DRAWS = 200, 99
NUTS = ("inference.num_chains=2", "inference.num_warmup=100", f"inference.num_samples={NUTS_DRAWS}")

# ULA with h = 1.8 s^2, about the step MALA adapts to here: its stationary variance is 10 s^2 (sd 3.2 times too
# large), so the ranks pile up in the middle. One chain, 40 warm-up steps (the distance to the posterior
# shrinks by |1 - h / s^2|^40 = 0.8^40 ~ 1e-4), then L = 19 consecutive draws, as the power computation in
# test_ula_with_a_large_step_fails assumes.
ULA_REPLICATES, ULA_DRAWS, ULA_STEP = 100, 19, 1.8  # ULA_STEP: h / s^2


def _posterior_variance() -> float:
    """s^2 = 1 / (1 / tau0^2 + N / sigma^2), from the spec's data."""
    data = load_spec(SPEC).model.data
    return 1.0 / (1.0 / float(data["tau0"]) ** 2 + int(data["N"]) / float(data["sigma"]) ** 2)


def _ula_settings() -> list[str]:
    step = ULA_STEP * _posterior_variance()
    return [
        "inference.method=ula",
        "inference.num_chains=1",
        "inference.num_warmup=40",
        f"inference.num_samples={ULA_DRAWS}",
        f"inference.step_size={step!r}",
    ]


@pytest.fixture(scope="module")
def nuts_run(tmp_path_factory):
    """(result, out folder) of NUTS SBC; about 15 s after a few seconds of compiling."""
    out = tmp_path_factory.mktemp("nuts-sbc")
    result = run_calibration(
        SPEC, out, overrides=NUTS, replicates=NUTS_REPLICATES, num_draws=NUTS_DRAWS, seed=0, progress=False
    )
    return result, out


@pytest.fixture(scope="module")
def ula_run(tmp_path_factory):
    """The SBC result of ULA with a large step; about 15 s (Pyro steps cost milliseconds)."""
    out = tmp_path_factory.mktemp("ula-sbc")
    return run_calibration(
        SPEC, out, overrides=_ula_settings(), replicates=ULA_REPLICATES, num_draws=ULA_DRAWS, seed=2, progress=False
    )


def _png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_nuts_passes(nuts_run):
    result, out = nuts_run
    assert list(result.ranks) == ["mu"] and result.num_replicates == NUTS_REPLICATES and result.num_bins == 20
    assert result.passed, result.uniformity
    summary = json.loads((out / "sbc.json").read_text())
    assert summary["passed"] and summary["ranks"]["mu"] == result.ranks["mu"].tolist()
    assert _png(out / "sbc.png")


@pytest.mark.slow
def test_numpyro_sampler_draws_what_infer_draws():
    # SBC runs its replicates' chains one after another, in the sampler compiled for the first replicate; given the
    # same data and seed its draws must be those of ppgen.posterior.infer (two chains: the key split).
    settings = dict(path=SPEC, inference=None, overrides=NUTS)
    _, data = simulate_from_spec(11, **settings)
    draws = fit_from_spec(data, 5, **settings)
    loaded = load_spec(SPEC, overrides=settings["overrides"])
    spec = loaded.settings.model_copy(update={"inference": loaded.settings.inference.model_copy(update={"seed": 5})})
    expected = infer(loaded.model, spec, data=data).posterior["mu"]
    assert draws["mu"].shape == (2 * NUTS_DRAWS,)
    np.testing.assert_allclose(draws["mu"], expected.reshape(-1), rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_mala_passes(tmp_path):
    # One chain, 50 warm-up steps adapting the step size, then L = 9 draws at stride 3: MALA at its 0.574
    # acceptance repeats a draw about 43% of the time, so draws 3 apart are repeats with chance 0.43^3 = 0.08.
    # About 15 s (Pyro steps cost milliseconds).
    overrides = [
        "inference.method=mala",
        "inference.num_chains=1",
        "inference.num_warmup=50",
        "inference.num_samples=27",
    ]
    result = run_calibration(SPEC, tmp_path, overrides=overrides, replicates=80, num_draws=9, seed=1, progress=False)
    assert result.num_bins == 5
    assert result.passed, result.uniformity


def _ula_rank_probabilities(u: float, num_draws: int, num_chains: int = 200_000) -> np.ndarray:
    """[L + 1] P(rank = r) of the true value among L consecutive ULA draws at h = u s^2 on N(m, s^2).

    In units of s from m a ULA step is x' = (1 - u) x + sqrt(2 u) xi (ula_gaussian_stationary_covariance),
    started here from its stationary law N(0, f), f = 1 / (1 - u / 2); the true value is N(0, 1). Consecutive
    draws are correlated (1 - u < 0: alternately), so the ranks are not binomial: Monte Carlo over num_chains
    chains, so that a probability (or a sum of them) has standard error at most sqrt(0.25 / num_chains).
    """
    rng = np.random.default_rng(0)
    position = rng.normal(0.0, (1.0 / (1.0 - u / 2)) ** 0.5, num_chains)
    truth = rng.normal(size=num_chains)
    below = np.zeros(num_chains, dtype=np.int64)
    for _ in range(num_draws):
        position = (1.0 - u) * position + (2.0 * u) ** 0.5 * rng.normal(size=num_chains)
        below += position < truth
    return np.bincount(below, minlength=num_draws + 1) / num_chains


@pytest.mark.slow
def test_ula_with_a_large_step_fails(ula_run):
    variance = _posterior_variance()
    stationary = ula_gaussian_stationary_covariance(
        torch.tensor([[variance]], dtype=torch.float64), ULA_STEP * variance
    )
    assert float(stationary) / variance == pytest.approx(10.0)  # 1 / (1 - h / (2 s^2))

    # The chance that the chi-square test alone misses this sampler, from the noncentrality of the rank-bin
    # probabilities, each moved 4 Monte Carlo standard errors towards uniform (a lower bound: about 100).
    bins = default_num_bins(ULA_REPLICATES, ULA_DRAWS)
    edges = np.arange(bins + 1) * (ULA_DRAWS + 1) // bins
    expected = np.diff(edges) / (ULA_DRAWS + 1)
    num_chains = 200_000
    probabilities = np.add.reduceat(_ula_rank_probabilities(ULA_STEP, ULA_DRAWS, num_chains), edges[:-1])
    deviations = np.clip(np.abs(probabilities - expected) - 4 * (0.25 / num_chains) ** 0.5, 0.0, None)
    noncentrality = ULA_REPLICATES * (deviations**2 / expected).sum()
    assert stats.ncx2.cdf(stats.chi2.isf(ALPHA / 2, bins - 1), bins - 1, noncentrality) < 1e-6

    assert ula_run.num_bins == bins
    assert not ula_run.passed
    assert ula_run.uniformity["mu"].chi_square_p_value < ALPHA / 2
    ranks = ula_run.ranks["mu"]
    middle = (ranks >= ULA_DRAWS // 4) & (ranks <= ULA_DRAWS - ULA_DRAWS // 4)
    assert middle.mean() > 0.75  # a hump: the true value sits inside draws that are too spread out


@pytest.mark.slow
def test_cli_writes_the_histogram_and_the_summary(nuts_run, tmp_path, capsys):
    # Same settings and seed as nuts_run: replicate r has the same seeds whatever the number of replicates.
    out = tmp_path / "sbc"
    arguments = ["sbc", SPEC, "--replicates", "20", "--seed", "0", "--out", str(out)]
    status = main([*arguments, *[word for setting in NUTS for word in ("--set", setting)]])
    assert status == 0
    assert "SBC passed" in capsys.readouterr().out
    summary = json.loads((out / "sbc.json").read_text())
    assert summary["num_replicates"] == 20 and summary["num_draws"] == NUTS_DRAWS
    assert summary["ranks"]["mu"] == nuts_run[0].ranks["mu"][:20].tolist()
    assert _png(out / "sbc.png")


@pytest.mark.slow
def test_worker_processes_give_the_same_ranks(ula_run, tmp_path):
    # Two spawned workers, each importing ppgen (torch, jax, pyro): about 15 s. Replicate r has the same
    # seeds however replicates are spread over workers.
    result = run_calibration(
        SPEC, tmp_path, overrides=_ula_settings(), replicates=4, num_draws=ULA_DRAWS, workers=2, seed=2, progress=False
    )
    assert result.ranks["mu"].tolist() == ula_run.ranks["mu"][:4].tolist()


def _write_spec(path: Path, variables: str) -> Path:
    path.write_text(f'[model]\nkind = "bayes"\nname = "m"\n\n[data]\nN = 3\ny = [0.5, 1.0, 2.0]\n\n{variables}')
    return path


@pytest.mark.parametrize(
    "variables, message",
    [
        (
            '[plates]\nobs = "N"\n\n[variables]\nmu = "Normal(0, 1)"\nlog_y = { value = "log(y)", plate = "obs" }\n'
            'z = { dist = "Normal(mu, 1)", plate = "obs", observed = "log_y" }\n',
            r"variables\.z\.observed: .*'log_y' is computed",
        ),
        (
            '[plates]\nobs = "N"\n\n[variables]\nmu = "Flat()"\n'
            'y = { dist = "Normal(mu, 1)", plate = "obs", observed = "y" }\n',
            r"variables\.mu has an improper flat prior",
        ),
    ],
    ids=["computed-observation", "improper-prior"],
)
def test_models_that_cannot_be_simulated_are_refused(tmp_path, variables, message):
    spec = _write_spec(tmp_path / "model.toml", variables)
    with pytest.raises(SpecError, match=message):
        run_calibration(spec, tmp_path / "out", replicates=2, num_draws=3, progress=False)
    assert not (tmp_path / "out").exists()


def test_simulated_data_match_the_model_data():
    # float64 and writable, as the model's own data (torch warns on read-only numpy arrays).
    parameters, data = simulate_from_spec(3, path=SPEC, inference=None, overrides=())
    assert set(parameters) == {"mu"} and parameters["mu"].shape == () and set(data) == {"y"}
    assert data["y"].shape == (10,) and data["y"].dtype == np.float64 and data["y"].flags.writeable
    assert math.isfinite(float(parameters["mu"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.as_tensor(data["y"])
