"""``ppgen evaluate RUN --samples N``: sample-based figures of a tiny VAE run, filed in its metrics.json."""

import json
import shutil
from pathlib import Path

import pytest
from test_cli import TINY, VAE, cli, metrics_of

from ppgen.cli import main

SAMPLES = 64


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("samples") / "run"
    assert cli("run", VAE, "--out", folder, *TINY).code == 0
    return folder


@pytest.fixture
def run_folder(tiny_run, tmp_path) -> Path:
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def test_evaluate_samples_prints_the_block_and_records_it(run_folder):
    before = metrics_of(run_folder)
    result = cli("evaluate", run_folder, "--samples", SAMPLES)
    assert (result.code, result.err) == (0, "")
    test = metrics_of(run_folder)["test"]
    figures = test["samples"]
    assert figures["num_samples"] == figures["num_reference"] == SAMPLES and figures["seed"] == 0
    assert figures["samples_binarized"]  # the VAE draws Bernoulli means; the digits are binarized
    assert (
        figures["features_cache"] == "trained" and "FID-like, not comparable with Inception FID" in figures["features"]
    )
    assert test["samples_estimates"] == {f"N={SAMPLES}, M={SAMPLES}, seed=0": figures}
    lines = result.out.splitlines()
    assert (
        lines[0]
        == f"  samples: {SAMPLES} model samples, drawn as Bernoulli(sample) vs {SAMPLES} test examples (seed 0)"
    )
    assert lines[1].startswith(f"    MMD^2 {figures['mmd2']:.4g} (p = {figures['mmd2_p_value']:.3g},")
    assert lines[2].startswith(f"    classifier two-sample test: accuracy {figures['c2st_accuracy']:.3f}")
    assert lines[3] == f"    features: {figures['features']}"
    assert lines[4].startswith(f"    FID-like {figures['fid_like']:.4g} +- ")
    assert lines[5].startswith(f"    precision {figures['precision']:.3f} +- ")
    assert lines[-1].endswith("beside every earlier estimate (test.samples_estimates)")
    assert "ELBO" not in result.out  # --samples alone re-evaluates no likelihood
    assert {key: value for key, value in test.items() if not key.startswith("samples")} == before["test"]


def test_a_second_evaluation_reuses_the_features_and_keeps_both(run_folder):
    first = cli("evaluate", run_folder, "--samples", 32, "--seed", 1)
    assert first.code == 0
    result = cli("evaluate", run_folder, "--samples", 16, "--num-samples", 2)
    assert result.code == 0  # stderr warns that K = 2 importance samples are few
    test = metrics_of(run_folder)["test"]
    assert sorted(test["samples_estimates"]) == ["N=16, M=16, seed=0", "N=32, M=32, seed=1"]
    assert test["samples"] == test["samples_estimates"]["N=32, M=32, seed=1"]  # the larger one stays the headline
    assert test["samples_estimates"]["N=16, M=16, seed=0"]["features_cache"] == "loaded"
    assert "NLL" in result.out and "  samples: 16 model samples" in result.out
    assert "K=2" in json.dumps(test["nll_estimates"])


@pytest.mark.parametrize("value", ["0", "-3", "many"])
def test_a_bad_samples_count_is_argparses_one_line_error(run_folder, value, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", str(run_folder), "--samples", value])
    assert stop.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error == f"ppgen evaluate: error: argument --samples: expected a positive whole number, got {value!r}"


def test_too_few_samples_is_one_line(run_folder):
    result = cli("evaluate", run_folder, "--samples", 3)
    assert result.code == 2 and result.out == ""
    assert result.err.count("\n") == 1 and result.err.startswith("ppgen: error: --samples 3: the sample-based figures")
