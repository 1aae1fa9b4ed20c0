"""Simulation-based calibration of an inference method on a declarative model (``ppgen sbc``).

Each replicate draws the latent variables and the observed data from the model's prior predictive,
fits the posterior with the ``[inference]`` method given the simulated data, and ranks the true values
among the posterior draws (``ppgen.evaluate.sbc``). Replicates run in this process, in a local process pool or
as Ray tasks (``ppgen.executors``): each worker compiles the spec itself, so only the spec's path and settings
cross process boundaries (on a Ray cluster the spec and its data files must be at that path on every node).
Replicates are the unit of parallelism: each fit runs its chains one after another.

NumPyro's NUTS and HMC are compiled once per process and reused for every replicate (``_NumpyroSampler``):
``numpyro.infer.MCMC.run`` recompiles its sampling loop on every call (NumPyro 0.22, even with
``jit_model_args=True``), seconds a fit, which would dominate SBC's hundreds of small fits.
"""

import functools
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ppgen.errors import SpecError
from ppgen.evaluate.sbc import SBCResult, run_sbc
from ppgen.files import write_text_atomic

__all__ = ["run_calibration", "simulate_from_spec", "fit_from_spec"]


@functools.lru_cache(maxsize=4)
def _workflow(path: str, inference: str | None, overrides: tuple[str, ...]):
    from ppgen.workflow import load_workflow

    return load_workflow(path, inference=inference, overrides=overrides)[:2]


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

    model, _ = _workflow(path, inference, overrides)
    with jax.enable_x64(True):
        draw = model.prior_predictive(1, seed)
    parameters = {name: np.array(draw[name][0]) for name in model.latent_names}
    data = {key: np.array(draw[name][0], dtype=model.data[key].dtype) for name, key in model.observed.items()}
    return parameters, data


def fit_from_spec(data: dict, seed: int, *, path: str, inference: str | None, overrides: tuple[str, ...]):
    """Posterior draws {latent: [draws, ...]} (chains concatenated) given simulated ``data``."""
    from ppgen.workflow import infer

    model, workflow = _workflow(path, inference, overrides)
    spec = workflow.inference
    if spec.method in ("nuts", "hmc") and spec.backend == "numpyro":
        return _numpyro_sampler(path, inference, overrides)(data, seed)
    # Pyro seeds chain c with seed + c, which numpy needs below 2^32. Chains run here, not in worker processes
    # of their own: replicates already keep the cores busy (and the draws are the same).
    update = {"seed": seed % 2**31, "chain_method": "sequential"}
    workflow = workflow.model_copy(update={"inference": spec.model_copy(update=update)})
    draws = infer(model, workflow, data=data)
    return {name: draws.posterior[name].reshape(-1, *draws.posterior[name].shape[2:]) for name in model.latent_names}


class _NumpyroSampler:
    """NumPyro NUTS or HMC, as ``ppgen.infer.mcmc.numpyro_mcmc`` runs it, for many data sets of one shape:
    the model takes the observed data as a traced argument, and warm-up plus sampling is one jitted scan,
    compiled on the first call. Chains run one after another, keys ``jax.random.split(PRNGKey(seed), C)``
    (one chain: the key itself), as ``MCMC`` draws them."""

    def __init__(self, model, spec):
        import jax

        from ppgen.infer.mcmc import numpyro_kernel

        self.model, self.spec = model, spec
        with jax.enable_x64(True):
            self.fixed = model.jax_data(observed=False)
        self.kernel = numpyro_kernel(self._conditioned, spec)
        self._chain = jax.jit(self._run_chain)

    def _conditioned(self, observed: dict) -> None:
        self.model.numpyro_model({**self.fixed, **observed})

    def _run_chain(self, state, observed: dict) -> dict:
        """[num_samples, ...] constrained draws of each latent after num_warmup steps from ``state``."""
        import jax

        def step(state, _):
            state = self.kernel.sample(state, (observed,), {})
            return state, state.z

        _, positions = jax.lax.scan(step, state, None, length=self.spec.num_warmup + self.spec.num_samples)
        kept = jax.tree.map(lambda value: value[self.spec.num_warmup :], positions)
        return jax.vmap(self.kernel.postprocess_fn((observed,), {}))(kept)

    def __call__(self, data: dict, seed: int) -> dict[str, np.ndarray]:
        import jax

        with jax.enable_x64(True):
            observed = {key: jax.numpy.asarray(value) for key, value in data.items()}
            key = jax.random.PRNGKey(seed)
            keys = jax.random.split(key, self.spec.num_chains) if self.spec.num_chains > 1 else [key]
            chains = []
            for chain_key in keys:
                state = self.kernel.init(chain_key, self.spec.num_warmup, None, (observed,), {})
                chains.append(self._chain(state, observed))
        return {name: np.concatenate([np.asarray(chain[name]) for chain in chains]) for name in self.model.latent_names}


@functools.lru_cache(maxsize=4)
def _numpyro_sampler(path: str, inference: str | None, overrides: tuple[str, ...]) -> _NumpyroSampler:
    model, workflow = _workflow(path, inference, overrides)
    return _NumpyroSampler(model, workflow.inference)


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
    progress: bool = True,
    executor: str = "process",
    ray_address: str | None = None,
) -> SBCResult:
    """Run SBC and write ``sbc.json`` and ``sbc.png`` (rank histograms) to ``out``; returns the result.

    num_draws: L posterior draws ranked per replicate, spread evenly over the method's draws (thinning:
    stride = all draws // L, so set num_samples * num_chains to a multiple of L, stride about 1 / ESS per draw).
    executor, workers, ray_address: "process" runs replicates in this process (workers None or 1) or in
    ``workers`` spawned processes; "ray" runs them as tasks of the Ray cluster at ``ray_address``, else of a
    local Ray instance of ``workers`` CPUs (None: all cores). Each worker compiles the spec once. The ranks are
    the same however replicates are spread.
    """
    from ppgen.evaluate.sbc_plots import plot_rank_histograms
    from ppgen.executors import make_executor

    settings = dict(path=str(path), inference=None if inference is None else str(inference), overrides=tuple(overrides))
    model, _ = _workflow(**settings)  # spec mistakes surface here, once, before any worker starts
    _check_simulable(model)
    jobs = (functools.partial(simulate_from_spec, **settings), functools.partial(fit_from_spec, **settings))
    if executor == "process" and ray_address is None and (workers or 1) == 1:
        result = run_sbc(*jobs, replicates, num_draws, seed, progress=progress)
    else:
        with make_executor(executor, workers, address=ray_address) as pool:
            result = run_sbc(*jobs, replicates, num_draws, seed, executor=pool, progress=progress)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "sbc.json", json.dumps(result.to_json(), indent=2, default=_plain) + "\n")
    plot_rank_histograms(result, out / "sbc.png")
    return result


def _plain(value):
    return value.tolist() if isinstance(value, np.ndarray) else float(value)
