"""Remembered choices (ppgen.infer.remembered): a choice is made once per key and read back by later calls and
processes; a damaged file means deciding again; the mass = "auto" decision of NUTS is remembered under the model's
fingerprint, its data and the settings it depends on, and made afresh when any of them changes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ppgen.infer import numpyro_sampler, remembered
from ppgen.infer.bayes_data import float64
from ppgen.infer.methods import numpyro_sampler as sampler_of
from ppgen.infer.posterior_settings import MCMCSettings
from ppgen.spec.load import load_spec

CORRELATED = """
[model]
kind = "bayes"
name = "correlated"

[data]
rho = {rho}

[variables]
x1 = "Normal(0, 1)"
x2 = "Normal(rho * x1, sqrt(1 - rho ** 2))"
"""
SETTINGS = MCMCSettings(num_chains=1, num_warmup=200, num_samples=10, chain_method="sequential")
NO_DATA = {"observed": {}}


@pytest.fixture
def store(tmp_path, monkeypatch):
    """The folder remembered choices go to in this test."""
    monkeypatch.setattr(remembered, "enable_compilation_cache", lambda: str(tmp_path))
    return tmp_path


def _counting(value):
    calls = []

    def decide():
        calls.append(1)
        return value

    return decide, calls


def test_a_choice_is_made_once_per_key(store):
    decide, calls = _counting(True)
    assert remembered.remembered(("a", "b"), decide) is True
    assert remembered.remembered(("a", "b"), decide) is True
    assert len(calls) == 1
    assert remembered.remembered(("a", "c"), decide) is True and len(calls) == 2  # another key decides again
    assert len(json.loads((store / remembered.CHOICES_FILE).read_text())) == 2


def test_a_damaged_file_means_deciding_again(store):
    (store / remembered.CHOICES_FILE).write_text("{not json")
    decide, calls = _counting(False)
    assert remembered.remembered(("a",), decide) is False and len(calls) == 1
    assert list(json.loads((store / remembered.CHOICES_FILE).read_text()).values()) == [False]


def test_with_the_cache_off_nothing_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setattr(remembered, "enable_compilation_cache", lambda: None)
    decide, calls = _counting(True)
    remembered.remembered(("a",), decide)
    remembered.remembered(("a",), decide)
    assert len(calls) == 2 and not list(tmp_path.iterdir())


def test_the_data_digest_sees_values_dtypes_and_shapes():
    digest = remembered.data_digest
    base = digest({"y": np.arange(4.0)})
    assert base == digest({"y": np.arange(4.0)})
    assert base != digest({"y": np.arange(4.0) + 1e-12})
    assert base != digest({"y": np.arange(4)})
    assert base != digest({"y": np.arange(4.0).reshape(2, 2)})
    assert base != digest({"z": np.arange(4.0)})
    assert digest({"observed": {"y": np.ones(2)}}) != digest({"observed": {"y": np.zeros(2)}})


def _model(tmp_path, rho: float, name: str = "spec.toml"):
    path = tmp_path / name
    path.write_text(CORRELATED.format(rho=rho))
    return load_spec(path, overrides=["inference.backend=numpyro"]).model


def test_the_fingerprint_is_the_tables_and_the_data(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    same = _model(tmp_path / "a", 0.99).fingerprint
    assert same == _model(tmp_path / "b", 0.99).fingerprint  # the same spec in another folder
    assert same != _model(tmp_path / "a", 0.5).fingerprint


def _dense(model, seed: int = 0, **settings) -> bool:
    sampler = sampler_of.__wrapped__(model, MCMCSettings(**{**SETTINGS.__dict__, **settings}))
    with float64():
        return sampler.dense_mass(seed, NO_DATA)


def test_nuts_remembers_its_mass_choice_across_samplers(store, tmp_path, monkeypatch):
    model = _model(tmp_path, 0.999)  # kappa = 2e3: dense
    assert _dense(model) is True
    decisions = []
    original = numpyro_sampler.NumpyroSampler._prefers_dense
    monkeypatch.setattr(
        numpyro_sampler.NumpyroSampler, "_prefers_dense", lambda *a: decisions.append(1) or original(*a)
    )
    assert _dense(model) is True and decisions == []  # a fresh sampler (as in a new process) reads it back
    assert _dense(model, seed=1) is True and len(decisions) == 1  # another start point: decided again
    assert _dense(model, num_warmup=300) is True and len(decisions) == 2  # another warmup window
    assert _dense(model, num_samples=99) is True and len(decisions) == 2  # the draws do not matter
    assert _dense(_model(tmp_path, 0.1, "other.toml")) is False and len(decisions) == 3  # another model


def test_a_second_ppgen_run_reads_the_choice_back(tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(CORRELATED.format(rho=0.999))
    cache = tmp_path / "cache"
    environment = {**os.environ, "PPGEN_JAX_CACHE": str(cache)}
    for out in ("first", "second"):
        command = [sys.executable, "-m", "ppgen", "run", spec, "--out", tmp_path / out, "--quiet"]
        budget = [
            "--set",
            "inference.num_chains=1",
            "--set",
            "inference.num_samples=20",
            "--set",
            "evaluation.plots=false",
        ]
        subprocess.run([*map(str, command), *budget], env=environment, check=True, capture_output=True)
        assert json.loads((tmp_path / out / "metrics.json").read_text())["sampler"]["mass"] == "dense"
    assert list(json.loads((cache / remembered.CHOICES_FILE).read_text()).values()) == [True]
