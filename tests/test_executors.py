"""Executors (``ppgen.executors``), a local process pool and Ray tasks, each checked against the same contract:
jobs give the results (and raise the errors) they give in this process, so SBC ranks and Pyro chains do not
depend on where they run. Ray runs as a local instance of 2 CPUs, started once for the module."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from ppgen.cli import main
from ppgen.errors import PpgenError, SpecError
from ppgen.executors import make_executor
from ppgen.infer.mcmc import pyro_mcmc
from ppgen.spec.load import load_spec

SPEC = str(Path(__file__).resolve().parents[1] / "models" / "normal_normal.toml")

# ULA, one chain of 40 warm-up steps and 19 draws: quick Pyro fits; whether SBC passes does not matter here.
ULA = ["inference.method=ula", "inference.num_chains=1", "inference.num_warmup=40", "inference.num_samples=19"]
SBC_ARGUMENTS = ["--replicates", "4", "--draws", "19", "--seed", "2", *[w for s in ULA for w in ("--set", s)]]


@pytest.fixture(scope="module")
def ray_pool():
    """A RayExecutor that starts (and finally stops) a local Ray instance of 2 CPUs: about 5 s."""
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'ppgen[ray]'")
    with make_executor("ray", 2) as pool:
        yield pool


@pytest.fixture(scope="module", params=["process", "ray"])
def executor(request):
    """(kind, an open executor of that kind with 2 workers)."""
    if request.param == "ray":
        yield "ray", request.getfixturevalue("ray_pool")
        return
    with make_executor("process", 2) as pool:
        yield "process", pool


@pytest.mark.slow
def test_jobs_return_their_results_and_raise_their_own_errors(executor):
    _, pool = executor
    assert list(pool.map(math.factorial, range(6))) == [1, 1, 2, 6, 24, 120]
    with pytest.raises(ValueError, match="not defined for negative values"):  # the job's error, not a wrapper
        pool.submit(math.factorial, -1).result()


@pytest.fixture(scope="module")
def sbc_in_process(tmp_path_factory) -> list[int]:
    """Ranks of a small SBC run in this process."""
    out = tmp_path_factory.mktemp("sbc-here")
    assert main(["sbc", SPEC, *SBC_ARGUMENTS, "--out", str(out)]) in (0, 1)
    return json.loads((out / "sbc.json").read_text())["ranks"]["mu"]


@pytest.mark.slow
def test_sbc_ranks_on_ray_match_those_in_this_process(ray_pool, sbc_in_process, tmp_path):
    # Replicate r's seeds come from SeedSequence(seed).spawn, whichever worker fits it (a process pool:
    # tests/test_calibration.py). Ray's workers import torch, JAX and Pyro: about 15 s. `ppgen sbc` finds the
    # instance that ray_pool started and uses it.
    out = tmp_path / "sbc"
    assert main(["sbc", SPEC, *SBC_ARGUMENTS, "--executor", "ray", "--workers", "2", "--out", str(out)]) in (0, 1)
    assert json.loads((out / "sbc.json").read_text())["ranks"]["mu"] == sbc_in_process


@pytest.mark.slow
def test_pyro_nuts_chains_as_ray_tasks_match_sequential_chains(ray_pool):
    # Chain c is seeded with seed + c and builds its own kernel wherever it runs: the same draws and statistics.
    overrides = ["inference.backend=pyro", "inference.num_chains=2", "inference.num_warmup=50"]
    loaded = load_spec(SPEC, overrides=[*overrides, "inference.num_samples=50"])
    model = loaded.model
    arguments = (model.pyro_model, {"data": model.torch_data()}, loaded.settings.settings())
    sequential = pyro_mcmc(*arguments, max_plate_nesting=model.max_plate_nesting)
    on_ray = pyro_mcmc(*arguments, max_plate_nesting=model.max_plate_nesting, executor=ray_pool)
    assert on_ray.posterior["mu"].shape == (2, 50)
    np.testing.assert_array_equal(on_ray.posterior["mu"], sequential.posterior["mu"])
    assert on_ray.sample_stats.keys() == sequential.sample_stats.keys() == {"diverging", "acceptance_rate", "step_size"}
    for name, value in sequential.sample_stats.items():
        np.testing.assert_array_equal(on_ray.sample_stats[name], value, err_msg=name)


@pytest.mark.parametrize(
    "kind, workers, address, message",
    [
        ("thread", None, None, "--executor must be one of process, ray, got 'thread'"),
        ("process", 0, None, "--workers must be a whole number >= 1, got 0"),
        ("process", 2, "auto", "--ray-address applies to --executor ray"),
        ("ray", 2, "auto", "--workers sets the CPUs of a local Ray instance"),
    ],
)
def test_bad_settings_are_spec_errors(kind, workers, address, message):
    with pytest.raises(SpecError, match=message):
        make_executor(kind, workers, address=address)


def test_missing_ray_names_the_flag_and_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(PpgenError, match=r"--executor ray needs Ray: pip install 'ppgen\[ray\]'"):
        make_executor("ray")


def test_cli_refuses_a_ray_address_for_a_process_pool(tmp_path, capsys):
    status = main(["sbc", SPEC, "--ray-address", "auto", "--out", str(tmp_path / "sbc")])
    assert status == 2
    assert "--ray-address applies to --executor ray" in capsys.readouterr().err
