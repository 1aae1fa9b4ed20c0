"""The registry of posterior inference methods (``ppgen.infer.methods``), their settings, the one compiled NumPyro
sampler, and autoguide fits that leave Pyro's global parameter store alone.

Exactness of each method against conjugate posteriors: tests/test_workflow.py; chain methods:
tests/test_parallel_chains.py; SBC: tests/test_calibration.py.
"""

import ast
import dataclasses
import typing
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from ppgen.infer import posterior_settings
from ppgen.infer.autoguides import fit_autoguide
from ppgen.infer.methods import METHODS, chain_method
from ppgen.infer.numpyro_sampler import NumpyroSampler
from ppgen.infer.posterior_settings import AutoguideSettings, MCMCSettings, VariationalSettings
from ppgen.spec.bayes_inference import BayesInferenceSpec, PosteriorInferenceSpec
from ppgen.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]
NORMAL = REPO / "models" / "normal_normal.toml"
ENGINES = ("autoguides", "bayes_data", "draws", "mcmc", "methods", "numpyro_sampler", "posterior_settings")


def _spec_methods() -> list[str]:
    members = typing.get_args(typing.get_args(PosteriorInferenceSpec)[0])
    return [typing.get_args(member)[1].tag for member in members]


def test_every_spec_method_has_one_registry_entry():
    assert sorted(METHODS) == sorted(_spec_methods())


@pytest.mark.parametrize("method", _spec_methods())
def test_each_inference_table_converts_into_its_engines_settings(method):
    spec = BayesInferenceSpec.model_validate({"inference": {"method": method, "seed": 3}})
    settings = spec.settings()
    assert dataclasses.is_dataclass(settings) and type(settings).__module__ == posterior_settings.__name__
    assert settings.method == method and settings.seed == 3
    hash(settings)  # frozen, so a compiled sampler can be kept per settings


def test_svi_settings_carry_the_guide_table():
    spec = BayesInferenceSpec.model_validate(
        {"inference": {"method": "svi"}, "guide": {"family": "low_rank", "rank": 2, "hidden": [8, 8]}}
    )
    assert spec.settings().guide == AutoguideSettings(family="low_rank", rank=2, hidden=(8, 8))


def test_the_engines_import_nothing_from_the_spec_layer_at_module_level():
    for name in ENGINES:
        tree = ast.parse((REPO / "ppgen" / "infer" / f"{name}.py").read_text())
        imported = [node.module for node in tree.body if isinstance(node, ast.ImportFrom)]
        imported += [alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names]
        assert not [module for module in imported if module.startswith("ppgen.spec")], name


@pytest.mark.slow
@pytest.mark.parametrize("method", _spec_methods())
def test_each_method_hands_back_draws_of_every_latent_by_chain_and_draw(method):
    # A tiny budget each (the NumPyro ones compile for a few seconds); exactness: tests/test_workflow.py.
    # SVI and Pathfinder split their 8 independent draws into 4 chains; the samplers run 2 chains of 8.
    budgets = {"svi": {"num_steps": 20}, "pathfinder": {"draws_per_path": 8, "max_iterations": 20}}
    budget = budgets.get(method, {"num_warmup": 10, "num_chains": 2})
    spec = BayesInferenceSpec.model_validate({"inference": {"method": method, "num_samples": 8, **budget}})
    model = load_spec(NORMAL).model
    draws = METHODS[method].run(model, spec.settings())
    shape = (4, 2) if method in budgets else (2, 8)
    assert {name: draws.posterior[name].shape[:2] for name in model.latent_names} == dict.fromkeys(
        model.latent_names, shape
    )  # (NumPyro adds the deterministic sites)
    assert all(np.isfinite(value).all() for value in draws.posterior.values()) and draws.seconds > 0
    assert all(value.shape == shape for value in draws.sample_stats.values())


@pytest.mark.slow
def test_numpyro_nuts_draws_carry_the_hamiltonian_for_e_bfmi():
    # The energy is the potential energy -lp plus a kinetic energy >= 0, at every draw.
    model = load_spec(NORMAL).model
    settings = MCMCSettings(num_warmup=10, num_samples=8, num_chains=2, chain_method="sequential")
    stats = METHODS["nuts"].run(model, settings).sample_stats
    assert stats["energy"].shape == stats["tree_depth"].shape == (2, 8)
    assert np.all(np.isfinite(stats["energy"])) and np.all(stats["energy"] >= -stats["lp"])


def test_pyro_chains_resolve_auto_to_sequential():
    settings = MCMCSettings(backend="pyro", num_chains=2)
    assert chain_method(settings) == "sequential"
    assert chain_method(dataclasses.replace(settings, chain_method="parallel")) == "parallel"
    assert chain_method(dataclasses.replace(settings, num_chains=1, chain_method="parallel")) == "sequential"


@pytest.mark.slow
def test_the_numpyro_sampler_is_compiled_once_for_many_data_sets(monkeypatch):
    # About 5 s (one compilation). SBC's replicates and `ppgen run` share this sampler; new observed data of the
    # same shape must reuse the compiled loop (one segment of it, run SEGMENTS times a chain), and its draws must
    # change with the data. The loop is counted by its traces: each compilation starts with one. (JAX's own count
    # of a jitted function's compiled entries, `_cache_size()`, read 0 late in a full test session although the
    # loop was traced and compiled once.)
    traces = []
    segment = NumpyroSampler._run_segment

    def counted_segment(self, *args, **kwargs):
        traces.append(args[2]["observed"]["y"].shape)
        return segment(self, *args, **kwargs)

    monkeypatch.setattr(NumpyroSampler, "_run_segment", counted_segment)
    model = load_spec(NORMAL).model
    settings = MCMCSettings(num_warmup=50, num_samples=20, num_chains=2, chain_method="sequential")
    runs = [METHODS["nuts"].run(model, settings, data={"y": np.full(10, value)}) for value in (0.0, 3.0)]
    assert traces == [(10,)]  # one trace for two data sets of two chains each
    assert runs[0].posterior["mu"].shape == (2, 20)
    assert runs[1].posterior["mu"].mean() > runs[0].posterior["mu"].mean() + 2  # posterior means 0 and 2.9


@pytest.mark.slow
@pytest.mark.parametrize("progress", [False, True])
def test_a_repeat_fit_with_vectorized_chains_gives_the_same_draws(progress):
    # NumPyro's init with batched keys wraps the kernel's step in one more vmap each time: a second fit in the same
    # process (a notebook, the README's Python block) once failed inside the vmapped step.
    model = load_spec(NORMAL).model
    settings = MCMCSettings(num_warmup=30, num_samples=10, num_chains=2, chain_method="vectorized", seed=3)
    first, second = (METHODS["nuts"].run(model, settings, progress=progress) for _ in range(2))
    np.testing.assert_array_equal(first.posterior["mu"], second.posterior["mu"])


def _normal_model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 2.0))
    with pyro.plate("obs", len(y)):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def test_fit_autoguide_leaves_the_global_parameter_store_alone():
    pyro.clear_param_store()
    pyro.param("caller", torch.tensor(1.5))
    settings = VariationalSettings(num_steps=20, num_samples=8)
    draws, losses = fit_autoguide(_normal_model, {"y": torch.ones(5)}, settings)
    store = pyro.get_param_store()
    assert list(store.keys()) == ["caller"] and store["caller"].item() == 1.5
    assert draws.posterior["mu"].shape == (4, 2) and len(losses) == 2
    pyro.clear_param_store()
