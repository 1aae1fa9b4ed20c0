"""NUTS effective samples per second on two models, in one run: ppgen's compiled declarative model (NumPyro
backend, ``ppgen.infer.methods.METHODS["nuts"]``), the same model hand-written and run with NumPyro's own API as a
NumPyro user would (``MCMC(NUTS(model)).run``), the hand-written model under Pyro's NUTS, and, when PyMC is
installed (the optional extra ``bench``: pip install 'pymc>=5.28'), the same model under PyMC's NUTS.

Models: eight schools, non-centred (models/eight_schools.toml) and a logistic regression with N = 5000,
D = 20 (simulated here with a fixed seed; spec written next to it in a temporary folder). ESS is the
smallest bulk ESS over all scalar parameters (numpyro.diagnostics), divided by the wall time of one call that
warms up, samples and hands back the draws as numpy arrays. ppgen and hand-written NumPyro start from the same
points (uniform in (-2, 2)) with the same keys, so their draws, and ESS, are the same: only their seconds differ.

Each NumPyro sampler runs once untimed, then ``--repeats`` times timed, the two in turns (median seconds): every
run traces its model again and loads the compiled sampler from JAX's persistent compilation cache, as a user's
next ``ppgen run`` does (``ppgen.infer.compile_cache``; PyTensor keeps a compile directory in the same way); the
untimed run puts it there, so neither side times compilation. A full garbage collection runs before every timed
run: this process holds torch, Pyro, JAX and PyMC, a collection of it takes about 0.3 s, and Python starts one
whenever enough objects have been made, which would otherwise charge whichever sampler happens to be running then.

PyMC runs once with the same chains, warmup (its "tune") and draws, a process per chain; its seconds are PyMC's
own ``sampling_time`` (tuning and drawing), and the column "compile s" is the rest of its wall time (building and
compiling the log-density and its gradient with PyTensor, starting the chain processes), so the ppgen / PyMC
ratio is given both ways. NumPyro runs its chains in parallel, one CPU device each, as ``ppgen run`` does. PyMC
initialises as it does by default (jitter+adapt_diag); all adapt a diagonal mass matrix towards acceptance 0.8.
Target: ppgen / hand-written >= 0.8.

    python bench/nuts.py [--samples 1000] [--warmup 1000] [--chains 2] [--pyro-samples 300] [--repeats 5]
"""

import argparse
import dataclasses
import functools
import gc
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import torch
from numpyro.diagnostics import effective_sample_size

from ppgen.infer.mcmc import pyro_mcmc
from ppgen.infer.methods import METHODS, numpyro_sampler
from ppgen.infer.numpyro_sampler import numpyro_chain_method, numpyro_mcmc, request_cpu_devices
from ppgen.infer.posterior_settings import MCMCSettings
from ppgen.models.bayes import load_bayes_model

REPO = Path(__file__).resolve().parents[1]

try:  # the optional third column
    import pymc
except ImportError:
    pymc = None


def eight_schools_numpyro(J, y, sigma):
    mu = numpyro.sample("mu", ndist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", ndist.HalfCauchy(5.0))
    with numpyro.plate("school", J):
        theta_raw = numpyro.sample("theta_raw", ndist.Normal(0.0, 1.0))
        numpyro.sample("y", ndist.Normal(mu + tau * theta_raw, sigma), obs=y)


def eight_schools_pyro(J, y, sigma):
    mu = pyro.sample("mu", pdist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", pdist.HalfCauchy(5.0))
    with pyro.plate("school", J):
        theta_raw = pyro.sample("theta_raw", pdist.Normal(0.0, 1.0))
        pyro.sample("y", pdist.Normal(mu + tau * theta_raw, sigma), obs=y)


def logistic_numpyro(X, y):
    alpha = numpyro.sample("alpha", ndist.Normal(0.0, 2.5))
    beta = numpyro.sample("beta", ndist.Normal(0.0, 2.5).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("obs", X.shape[0]):
        numpyro.sample("y", ndist.Bernoulli(logits=alpha + X @ beta), obs=y)


def logistic_pyro(X, y):
    alpha = pyro.sample("alpha", pdist.Normal(0.0, 2.5))
    beta = pyro.sample("beta", pdist.Normal(0.0, 2.5).expand([X.shape[1]]).to_event(1))
    with pyro.plate("obs", X.shape[0]):
        pyro.sample("y", pdist.Bernoulli(logits=alpha + X @ beta), obs=y)


def eight_schools_pymc(J, y, sigma):
    with pymc.Model() as model:
        mu = pymc.Normal("mu", 0.0, 5.0)
        tau = pymc.HalfCauchy("tau", 5.0)
        theta_raw = pymc.Normal("theta_raw", 0.0, 1.0, shape=J)
        pymc.Normal("y", mu + tau * theta_raw, sigma, observed=y)
    return model


def logistic_pymc(X, y):
    with pymc.Model() as model:
        alpha = pymc.Normal("alpha", 0.0, 2.5)
        beta = pymc.Normal("beta", 0.0, 2.5, shape=X.shape[1])
        pymc.Bernoulli("y", logit_p=alpha + X @ beta, observed=y)
    return model


def pymc_nuts(build, data: dict, spec: MCMCSettings) -> tuple[dict[str, np.ndarray], float, float]:
    """(draws [chain, draw, ...], seconds of tuning and sampling, seconds of everything else) of PyMC's NUTS."""
    started = time.perf_counter()
    with warnings.catch_warnings():
        # PyMC forks its chain processes; they run PyTensor code only, never the JAX this process has started.
        warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
        idata = pymc.sample(
            draws=spec.num_samples,
            tune=spec.num_warmup,
            chains=spec.num_chains,
            cores=spec.num_chains,
            target_accept=spec.target_accept_prob,
            random_seed=spec.seed,
            model=build(**data),
            progressbar=False,
            compute_convergence_checks=False,
        )
    total = time.perf_counter() - started
    sampling = float(idata.posterior.attrs["sampling_time"])
    return {name: idata.posterior[name].values for name in idata.posterior.data_vars}, sampling, total - sampling


LOGISTIC_SPEC = """\
[model]
name = "logistic_regression_bench"
data_file = "data.npz"

[plates]
obs = "N"

[variables]
alpha = "Normal(0, 2.5)"
beta = { dist = "Normal(0, 2.5)", shape = ["D"] }
y = { dist = "Bernoulli(logits=alpha + X @ beta)", plate = "obs", observed = "y" }
"""


def simulate_logistic(folder: Path, n: int = 5000, d: int = 20) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d))
    beta = rng.normal(scale=0.5, size=d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.3 + X @ beta)))).astype(np.int64)
    np.savez(folder / "data.npz", X=X, y=y, N=n, D=d)
    (folder / "logistic.toml").write_text(LOGISTIC_SPEC)
    return folder / "logistic.toml"


def _arguments(function, data: dict, convert) -> dict:
    """The hand-written model's arguments from the spec's data: sizes as ints, arrays converted."""
    names = function.__code__.co_varnames[: function.__code__.co_argcount]
    return {name: int(data[name]) if np.ndim(data[name]) == 0 else convert(data[name]) for name in names}


def min_ess_per_second(posterior: dict[str, np.ndarray], seconds: float) -> tuple[float, float]:
    """(smallest bulk ESS over every scalar parameter, that ESS per second); draws are [chain, draw, ...]."""
    smallest = min(
        float(np.min(effective_sample_size(np.asarray(value, dtype=np.float64).reshape(*value.shape[:2], -1))))
        for value in posterior.values()
    )
    return smallest, smallest / seconds


def hand_numpyro_mcmc(model, model_kwargs: dict, spec: MCMCSettings) -> dict[str, np.ndarray]:
    """Draws [chain, draw, ...] of NumPyro's NUTS as a user writes it: its defaults (uniform initialization in
    (-2, 2), diagonal mass matrix) and the spec's chains, warmup, draws, target acceptance and seed."""
    from numpyro.infer import MCMC, NUTS

    kernel = NUTS(model, target_accept_prob=spec.target_accept_prob, max_tree_depth=spec.max_tree_depth)
    mcmc = MCMC(
        kernel,
        num_warmup=spec.num_warmup,
        num_samples=spec.num_samples,
        num_chains=spec.num_chains,
        chain_method=numpyro_chain_method(spec),
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(spec.seed), **model_kwargs)
    return {name: np.asarray(value) for name, value in mcmc.get_samples(group_by_chain=True).items()}


def ppgen_numpyro_mcmc(model, spec: MCMCSettings) -> dict[str, np.ndarray]:
    """Draws [chain, draw, ...] of ppgen's NumPyro NUTS on a declarative model, as ``ppgen run`` samples it (the
    sampler this process kept is dropped first, so that each run traces its model, as a new process does)."""
    numpyro_sampler.cache_clear()
    return METHODS["nuts"].run(model, spec).posterior


def timed_runs(runs: dict[str, Callable], repeats: int) -> dict[str, tuple[dict[str, np.ndarray], float]]:
    """{name: (draws of its last run, median seconds of ``repeats`` timed runs)}: every run once untimed, then the
    timed runs in turns (so that a slow spell of the machine falls on all of them), each after a full garbage
    collection."""
    draws = {name: run() for name, run in runs.items()}
    seconds = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            gc.collect()
            started = time.perf_counter()
            draws[name] = run()
            seconds[name].append(time.perf_counter() - started)
    return {name: (draws[name], statistics.median(seconds[name])) for name in runs}


def report(name: str, sampler: str, posterior: dict, seconds: float, latent_names, rates: dict) -> float:
    """Print one row of the table; returns the sampler's ESS per second."""
    latent = {k: v for k, v in posterior.items() if k in latent_names}
    ess, rate = min_ess_per_second(latent, seconds)
    ratio = rate / rates.get("hand-written NumPyro", rate)
    print(f"{name:<22} {sampler:<22} {ess:>8.0f} {seconds:>8.2f} {rate:>8.1f} {ratio:>8.2f}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--pyro-samples", type=int, default=300, help="Pyro's NUTS is slow: fewer draws (and warmup)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each NumPyro sampler (median)")
    args = parser.parse_args()
    request_cpu_devices(args.chains)  # before JAX starts, as `ppgen run` does: chains in parallel, one CPU device each
    torch.set_num_threads(2)
    torch.set_default_dtype(torch.float64)  # the Pyro column runs in float64 too
    spec = MCMCSettings(num_warmup=args.warmup, num_samples=args.samples, num_chains=args.chains, seed=1)
    pyro_spec = dataclasses.replace(spec, num_warmup=args.pyro_samples, num_samples=args.pyro_samples)
    pymc_version = f"pymc {pymc.__version__}" if pymc else "pymc not installed (pip install 'pymc>=5.28')"
    print(
        f"NUTS, {args.chains} chains x {args.warmup} warmup + {args.samples} draws (Pyro: {args.pyro_samples} + "
        f"{args.pyro_samples}), jax {jax.__version__}, numpyro {numpyro.__version__}, pyro {pyro.__version__}, "
        f"{pymc_version}, {jax.devices()[0].platform}"
    )
    logging.getLogger("pymc").setLevel(logging.ERROR)  # its per-run notes ("Sequential sampling ...")
    # JAX's first compilation in a process pays one-off start-up costs: pay them before timing anything.
    numpyro_mcmc(
        eight_schools_numpyro,
        dict(J=2, y=jnp.zeros(2), sigma=jnp.ones(2)),
        dataclasses.replace(spec, num_warmup=10, num_samples=10, num_chains=1),
    )
    print(f"{'model':<22} {'sampler':<22} {'min ESS':>8} {'seconds':>8} {'ESS/s':>8} {'vs hand':>8} {'compile s':>9}")
    # Declarative models run in float64 (as Stan does); so do the hand-written ones, for a like-for-like ratio.
    with tempfile.TemporaryDirectory() as folder, jax.enable_x64(True):
        cases = {
            "eight schools (nc)": (
                REPO / "models" / "eight_schools.toml",
                eight_schools_numpyro,
                eight_schools_pyro,
                eight_schools_pymc,
            ),
            "logistic N=5000 D=20": (simulate_logistic(Path(folder)), logistic_numpyro, logistic_pyro, logistic_pymc),
        }
        for name, (spec_path, hand_numpyro, hand_pyro, hand_pymc) in cases.items():
            model = load_bayes_model(spec_path)
            hand_args = _arguments(hand_numpyro, model.data, jnp.asarray)
            torch_args = _arguments(hand_pyro, model.data, lambda v: torch.as_tensor(v, dtype=torch.float64))
            runs = {
                "hand-written NumPyro": functools.partial(hand_numpyro_mcmc, hand_numpyro, hand_args, spec),
                "ppgen (NumPyro)": functools.partial(ppgen_numpyro_mcmc, model, spec),
            }
            rates, draws = {}, {}
            for sampler, (draws[sampler], seconds) in timed_runs(runs, args.repeats).items():
                rates[sampler] = report(name, sampler, draws[sampler], seconds, model.latent_names, rates)
            ppgen_draws, hand_draws = draws["ppgen (NumPyro)"], draws["hand-written NumPyro"]
            if any(not np.array_equal(ppgen_draws[k], v) for k, v in hand_draws.items()):
                print(f"{name:<22} note: ppgen's draws differ from the hand-written model's")
            gc.collect()
            pyro_draws = pyro_mcmc(hand_pyro, torch_args, pyro_spec)
            report(name, "Pyro NUTS (hand)", pyro_draws.posterior, pyro_draws.seconds, model.latent_names, rates)
            if pymc is not None:
                pymc_args = _arguments(hand_pymc, model.data, np.asarray)
                gc.collect()
                posterior, seconds, compile_seconds = pymc_nuts(hand_pymc, pymc_args, spec)
                latent = {k: v for k, v in posterior.items() if k in model.latent_names}
                ess, rate = min_ess_per_second(latent, seconds)
                ratio = rate / rates["hand-written NumPyro"]
                figures = f"{ess:>8.0f} {seconds:>8.2f} {rate:>8.1f} {ratio:>8.2f} {compile_seconds:>9.1f}"
                print(f"{name:<22} {'PyMC NUTS':<22} {figures}")
                # NumPyro's seconds include tracing its model and loading the compiled sampler, PyMC's do not.
                ours, with_compile = rates["ppgen (NumPyro)"], ess / (seconds + compile_seconds)
                both = f"{ours / rate:.2f} ({ours / with_compile:.2f} with PyMC's compile time)"
                print(f"{name:<22} ppgen / PyMC ESS/s: {both}")


if __name__ == "__main__":
    main()
