"""Parallel MCMC chains (``chain_method``) on the conjugate models/normal_normal.toml: every way of running the
chains gives draws of the same shape, the same draws as one chain after another, and the exact posterior.

Model: mu ~ N(mu0, tau0^2), y_i ~ N(mu, sigma^2), so mu | y ~ N(m, s^2) (BDA3, section 2.5).
Tolerance: |posterior mean - m| < 4 MCSE (MCSE = s / sqrt(bulk ESS)) and |sd / s - 1| < 4 / sqrt(2 ESS); a
correct sampler fails either with probability below 1e-4.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ppgen.errors import SpecError
from ppgen.evaluate import inference_data
from ppgen.infer.mcmc import pyro_mcmc
from ppgen.infer.numpyro_sampler import numpyro_chain_method, numpyro_kernel, numpyro_mcmc
from ppgen.infer.posterior_settings import MCMCSettings
from ppgen.posterior import infer
from ppgen.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]
NORMAL = str(REPO / "models" / "normal_normal.toml")
Z = 4.0
NUMPYRO_METHODS = ("sequential", "vectorized", "parallel")
SHORT = ["inference.num_chains=2", "inference.num_warmup=150", "inference.num_samples=250"]


def exact_posterior(data: dict) -> tuple[float, float]:
    precision = 1 / data["tau0"] ** 2 + len(data["y"]) / data["sigma"] ** 2
    mean = (data["mu0"] / data["tau0"] ** 2 + data["y"].sum() / data["sigma"] ** 2) / precision
    return float(mean), float(precision**-0.5)


def assert_exact(draws: np.ndarray, data: dict) -> None:
    mean, sd = exact_posterior(data)
    ess = float(inference_data.ess(draws))
    assert abs(draws.mean() - mean) < Z * sd / math.sqrt(ess), (draws.mean(), mean, ess)
    assert abs(draws.std() / sd - 1) < Z / math.sqrt(2 * ess), (draws.std(), sd, ess)


# JAX grants extra CPU devices only before its first computation, which other tests in this process may have
# made: the NumPyro methods run in a fresh interpreter, sequential first (it must not use up the chance).
NUMPYRO_SCRIPT = """
import json, sys
import numpy as np
from ppgen.infer.numpyro_sampler import numpyro_chain_method
from ppgen.posterior import infer
from ppgen.spec.load import load_spec

loaded = load_spec(sys.argv[1], overrides=json.loads(sys.argv[2]))
model, spec = loaded.model, loaded.settings
arrays = {}
for method in json.loads(sys.argv[3]):
    table = spec.inference.model_copy(update={"chain_method": method})
    assert numpyro_chain_method(table.settings()) == method, method
    # parallel chains with a progress bar, as `ppgen run` samples by default
    draws = infer(model, spec.model_copy(update={"inference": table}), progress=method == "parallel")
    arrays[method] = draws.posterior["mu"]
    arrays.update({f"{method}.{name}": value for name, value in draws.sample_stats.items()})
arrays["auto"] = np.array(numpyro_chain_method(spec.settings()))
np.savez(sys.argv[4], **arrays)
"""


@pytest.fixture(scope="module")
def numpyro_draws(tmp_path_factory) -> dict[str, np.ndarray]:
    """Draws of each NumPyro chain method, from one fresh process; about 20 s on 2 busy cores (compiling). Key
    "stderr": what the process wrote there (the parallel run's progress bar)."""
    path = tmp_path_factory.mktemp("numpyro") / "draws.npz"
    # ppgen must ask for devices itself (no XLA_FLAGS); NumPyro hides its progress bar when CI is set.
    hidden = ("XLA_FLAGS", "CI", "PYTEST_XDIST_WORKER")
    env = {key: value for key, value in os.environ.items() if key not in hidden}
    arguments = [NORMAL, json.dumps(SHORT), json.dumps(NUMPYRO_METHODS), str(path)]
    done = subprocess.run([sys.executable, "-c", NUMPYRO_SCRIPT, *arguments], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(path) as arrays:
        return {**arrays, "stderr": done.stderr}


@pytest.mark.slow
@pytest.mark.parametrize("method", NUMPYRO_METHODS)
def test_numpyro_chain_methods_sample_the_exact_posterior(numpyro_draws, method):
    draws = numpyro_draws[method]
    assert draws.shape == (2, 250)
    assert_exact(draws, load_spec(NORMAL).model.data)


@pytest.mark.slow
def test_numpyro_chain_methods_give_the_same_draws(numpyro_draws):
    # Each chain gets its key from the same split and runs the same arithmetic (vmap and pmap batch it, XLA may
    # fuse it differently): the same draws and statistics to rounding.
    assert str(numpyro_draws["auto"]) == "parallel"  # devices were granted, so "auto" picks parallel chains
    for method in ("vectorized", "parallel"):
        for name in ("", ".acceptance_rate", ".step_size", ".n_steps", ".lp", ".diverging", ".tree_depth"):
            expected, actual = numpyro_draws[f"sequential{name}"], numpyro_draws[f"{method}{name}"]
            assert actual.shape == expected.shape
            np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12, err_msg=f"{method}{name}")


@pytest.mark.slow
def test_parallel_chains_show_a_progress_bar_in_float64(numpyro_draws):
    # NumPyro's bar returns Python ints from host callbacks, run on JAX's own threads, outside the float64 block
    # of ppgen.posterior.infer: unless the sampler makes x64 process-wide while the chains run, the ints come back
    # as int32 where the program expects int64, and the parallel run fails.
    assert "Running chain 1" in numpyro_draws["stderr"]


@pytest.mark.slow
def test_numpyro_mcmc_gives_numpyros_own_draws_and_statistics():
    # About 5 s (two compilations). numpyro_mcmc reads the step size from the last state instead of collecting it
    # at every draw; it is fixed after warmup, so it must equal what NumPyro collects draw by draw, and the draws
    # must be those of NumPyro's own MCMC with the same kernel and key. The gradient count (ESS per gradient in
    # bench/ess_per_gradient.py divides by it) must be the summed num_steps of NumPyro's warmup and draws.
    import jax
    from numpyro.infer import MCMC

    model = load_spec(NORMAL).model
    spec = MCMCSettings(num_warmup=60, num_samples=20, num_chains=1, seed=3)
    with jax.enable_x64(True):
        data = {"data": model.jax_data()}
        draws = numpyro_mcmc(model.numpyro_model, data, spec)
        mcmc = MCMC(numpyro_kernel(model.numpyro_model, spec), num_warmup=60, num_samples=20, progress_bar=False)
        mcmc.warmup(jax.random.PRNGKey(3), collect_warmup=True, extra_fields=("num_steps",), **data)
        warmup_gradients = int(mcmc.get_extra_fields()["num_steps"].sum())
        fields = ("adapt_state.step_size", "accept_prob", "num_steps")
        mcmc.run(mcmc.post_warmup_state.rng_key, extra_fields=fields, **data)
        sampling_gradients = int(mcmc.get_extra_fields()["num_steps"].sum())
    np.testing.assert_array_equal(draws.posterior["mu"], np.asarray(mcmc.get_samples(group_by_chain=True)["mu"]))
    fields = mcmc.get_extra_fields(group_by_chain=True)
    np.testing.assert_array_equal(draws.sample_stats["step_size"], np.asarray(fields["adapt_state.step_size"]))
    np.testing.assert_array_equal(draws.sample_stats["acceptance_rate"], np.asarray(fields["accept_prob"]))
    assert draws.sample_stats["step_size"].shape == (1, 20)
    assert draws.gradients == warmup_gradients + sampling_gradients and warmup_gradients > 0


def test_parallel_without_enough_devices_is_a_spec_error():
    import jax

    jax.numpy.zeros(1).block_until_ready()  # JAX has started: its device count is fixed
    chains = jax.local_device_count() + 1
    with pytest.raises(SpecError, match=r"chain_method = 'parallel' needs a JAX device per chain .*XLA_FLAGS"):
        numpyro_chain_method(MCMCSettings(num_chains=chains, chain_method="parallel"))
    assert numpyro_chain_method(MCMCSettings(num_chains=chains)) == "vectorized"  # "auto" falls back
    assert numpyro_chain_method(MCMCSettings(num_chains=1, chain_method="parallel")) == "sequential"


@pytest.mark.slow
def test_langevin_chains_in_worker_processes_match_sequential_chains(capsys):
    # Two spawned workers importing torch and Pyro: about 8 s on 2 busy cores. Chain c is seeded with seed + c
    # and builds its own kernel wherever it runs, so the draws and each step's LangevinInfo are equal.
    # (Pyro's NUTS in workers: tests/test_executors.py, through a Ray executor.)
    overrides = ["inference.method=mala", "inference.num_chains=2", "inference.num_warmup=100"]
    loaded = load_spec(NORMAL, overrides=[*overrides, "inference.num_samples=100"])
    model, spec = loaded.model, loaded.settings
    runs = {}
    for chain_method in ("sequential", "parallel"):
        table = spec.inference.model_copy(update={"chain_method": chain_method})
        runs[chain_method] = infer(model, spec.model_copy(update={"inference": table}), progress=True)
    assert "chains in workers: 100%" in capsys.readouterr().err  # a bar counts the workers' finished chains
    sequential, parallel = runs["sequential"], runs["parallel"]
    assert parallel.posterior["mu"].shape == (2, 100)
    assert parallel.sample_stats.keys() == sequential.sample_stats.keys() == {"acceptance_rate", "step_size", "lp"}
    np.testing.assert_array_equal(parallel.posterior["mu"], sequential.posterior["mu"])
    for name, value in sequential.sample_stats.items():
        np.testing.assert_array_equal(parallel.sample_stats[name], value, err_msg=name)
    assert not np.array_equal(parallel.posterior["mu"][0], parallel.posterior["mu"][1])  # chains seeded apart


def test_pyro_rejects_vectorized_chains():
    with pytest.raises(
        SpecError,
        match=r"inference.chain_method = 'vectorized' needs inference.backend = 'numpyro'",
    ):
        load_spec(NORMAL, overrides=["inference.backend=pyro", "inference.chain_method=vectorized"])


def test_parallel_pyro_chains_need_a_picklable_model():
    import torch

    def model(x):  # a local function cannot be sent to a worker process
        return x

    spec = MCMCSettings(backend="pyro", num_chains=2, chain_method="parallel")
    with pytest.raises(SpecError, match=r"chain_method = 'parallel' sends the model .* cannot be pickled"):
        pyro_mcmc(model, {"x": torch.zeros(1)}, spec)
