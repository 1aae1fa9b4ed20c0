"""Simulation-based calibration of an inference method on a declarative model (``ppgen sbc``).

Each replicate draws the latent variables and the observed data from the model's prior predictive,
fits the posterior with the ``[inference]`` method given the simulated data, and ranks the true values
among the posterior draws (``ppgen.evaluate.sbc``). Replicates run in this process, in a local process pool or
as Ray tasks (``ppgen.executors``): each worker compiles the spec itself, so only the spec's path and settings
cross process boundaries (on a Ray cluster the spec and its data files must be at that path on every node).
Replicates are the unit of parallelism: each fit runs its chains one after another.

Each fit is the ``[inference]`` method of ``ppgen.infer.methods``, as ``ppgen run`` runs it; NumPyro's NUTS and
HMC are compiled once per process and reused for every replicate (``ppgen.infer.numpyro_sampler``).
"""

import dataclasses
import functools
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ppgen.errors import SpecError
from ppgen.evaluate.sbc import SBCResult, run_sbc
from ppgen.run_folder import SBC_FILE, RunFolder
from ppgen.spec.bayes_run import dump_bayes_spec

__all__ = ["run_calibration", "simulate_from_spec", "fit_from_spec"]


@functools.lru_cache(maxsize=4)
def _loaded(path: str, inference: str | None, overrides: tuple[str, ...]):
    """The ``BayesRunSpec`` of a Bayesian spec file, loaded once per process."""
    from ppgen.spec.bayes_run import BayesRunSpec
    from ppgen.spec.load import load_spec

    spec = load_spec(path, inference=inference, overrides=overrides)
    if not isinstance(spec, BayesRunSpec):
        raise SpecError(f"{path}: SBC needs a declarative Bayesian model spec (one with [variables])")
    return spec


def _check_simulable(model) -> None:
    """SpecError unless every likelihood term observes a data key, which a simulation can replace (a value
    computed from the data, such as log(earn), would be recomputed from the real data in the fit)."""
    model.check_proper()  # improper priors and prior density terms cannot be simulated
    for name, key in model.observed.items():
        if key not in model.data:
            raise SpecError(
                f"variables.{name}.observed: SBC simulates the data the likelihood observes, but {key!r} is"
                " computed from the data; observe a data key instead"
            )


def simulate_from_spec(seed: int, *, path: str, inference: str | None, overrides: tuple[str, ...]):
    """(true latent values, data with simulated observations) from one prior predictive draw, in float64
    (and int64), as the model's own data; writable numpy arrays."""
    import jax

    model = _loaded(path, inference, overrides).model
    with jax.enable_x64(True):
        draw = model.prior_predictive(1, seed)
    parameters = {name: np.array(draw[name][0]) for name in model.latent_names}
    data = {key: np.array(draw[name][0], dtype=model.data[key].dtype) for name, key in model.observed.items()}
    return parameters, data


def fit_from_spec(data: dict, seed: int, *, path: str, inference: str | None, overrides: tuple[str, ...]):
    """Posterior draws {latent: [draws, ...]} (chains concatenated) given simulated ``data``; discrete latent
    variables are drawn given each continuous draw (``ppgen.infer.discrete``), so SBC ranks them too."""
    from ppgen.infer.methods import METHODS

    spec = _loaded(path, inference, overrides)
    model, spec = spec.model, spec.settings
    # Pyro seeds chain c with seed + c, which numpy needs below 2^32. Chains run one after another here, not in
    # processes or devices of their own: replicates already keep the cores busy (and the draws are the same).
    settings = dataclasses.replace(spec.settings(), seed=seed % 2**31, chain_method="sequential")
    draws = METHODS[settings.method].run(model, settings, data=data)
    flat = draws.flat([name for name in model.latent_names if name not in model.discrete_names])
    if model.discrete_names:  # summed out by the sampler: drawn from p(z | theta, y) for each draw of theta
        from ppgen.infer.discrete import discrete_draws

        flat.update(discrete_draws(model, flat, data, seed % 2**31, temperature=1))
    return flat


def run_calibration(
    path: str | Path,
    out: str | Path,
    *,
    inference: str | Path | None = None,
    overrides: Iterable[str] = (),
    replicates: int = 100,
    num_draws: int = 99,
    workers: int | None = None,
    seed: int = 0,
    progress: bool | None = None,
    executor: str = "process",
    ray_address: str | None = None,
) -> SBCResult:
    """Run SBC and write ``spec.toml`` (the resolved spec), ``sbc.json`` and ``sbc.png`` (rank histograms) to the run
    folder ``out``; returns the result.

    num_draws: L posterior draws ranked per replicate, spread evenly over the method's draws (thinning:
    stride = all draws // L, so set num_samples * num_chains to a multiple of L, stride about 1 / ESS per draw).
    executor, workers, ray_address: "process" runs replicates in this process (workers None or 1) or in
    ``workers`` spawned processes; "ray" runs them as tasks of the Ray cluster at ``ray_address``, else of a
    local Ray instance of ``workers`` CPUs (None: all cores). Each worker compiles the spec once. The ranks are
    the same however replicates are spread. progress: a bar counting replicates (None: on a terminal, and
    ``ppgen.progress`` lines otherwise).
    """
    from ppgen.evaluate.sbc_plots import plot_rank_histograms
    from ppgen.executors import make_executor

    settings = dict(path=str(path), inference=None if inference is None else str(inference), overrides=tuple(overrides))
    spec = _loaded(**settings)  # spec mistakes surface here, once, before any worker starts
    _check_simulable(spec.model)
    folder = RunFolder(out)
    folder.start(resumable=False)
    folder.write_spec(dump_bayes_spec(spec, folder.path))
    jobs = (functools.partial(simulate_from_spec, **settings), functools.partial(fit_from_spec, **settings))
    if executor == "process" and ray_address is None and (workers or 1) == 1:
        result = run_sbc(*jobs, replicates, num_draws, seed, progress=progress)
    else:
        with make_executor(executor, workers, address=ray_address) as pool:
            result = run_sbc(*jobs, replicates, num_draws, seed, executor=pool, progress=progress)
    folder.write_json(SBC_FILE, result.to_json())
    plot_rank_histograms(result, folder / "sbc.png")
    return result
