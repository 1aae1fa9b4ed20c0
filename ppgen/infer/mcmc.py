"""Hamiltonian Monte Carlo (NUTS or static HMC) with the NumPyro backend (compiled with JAX, the default for
declarative models) or the Pyro backend (any Pyro model, on the CPU or CUDA); draws come back as numpy
arrays [chain, draw, ...] with per-draw sampler statistics named as ArviZ names them.

Chains (``chain_method``): NumPyro runs them one after another, vectorized in one program, or in parallel on
one JAX device each (``numpyro_chain_method``: on the CPU, ppgen asks JAX for a device per core before JAX
starts). Pyro runs them one after another or in worker processes, one per chain (``pyro_mcmc``); chain c is
seeded with seed + c either way, so both give the same draws.

NUTS: Hoffman & Gelman 2014, arXiv 1111.4246; HMC: Neal 2011, arXiv 1206.1901.
"""

import contextlib
import functools
import os
import pickle
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, as_completed
from dataclasses import dataclass, field

import numpy as np

from ppgen.errors import SpecError
from ppgen.infer.compile_cache import enable_compilation_cache
from ppgen.spec.workflow import MCMCSpec

__all__ = [
    "Draws",
    "numpyro_chain_method",
    "numpyro_kernel",
    "numpyro_mcmc",
    "pyro_kernel",
    "pyro_mcmc",
    "pyro_init_strategy",
    "request_cpu_devices",
    "stack_chains",
]


@dataclass(frozen=True)
class Draws:
    """Posterior draws and what the sampler says about them.

    posterior: site name -> [chain, draw, ...] constrained values.
    sample_stats: ArviZ names (``diverging``, ``acceptance_rate``, ``step_size``, ``tree_depth``, ``lp``, ...)
        -> [chain, draw].
    seconds: wall time of warmup and sampling.
    """

    posterior: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0


def numpyro_mcmc(model: Callable, model_kwargs: Mapping, spec: MCMCSpec, progress: bool = False) -> Draws:
    """Run NumPyro's NUTS or HMC on ``model(**model_kwargs)``, chains as ``numpyro_chain_method`` says; the
    compiled sampler is kept in JAX's persistent cache (``ppgen.infer.compile_cache``) for later runs."""
    import jax
    from numpyro.infer import MCMC

    enable_compilation_cache()

    mcmc = MCMC(
        numpyro_kernel(model, spec),
        num_warmup=spec.num_warmup,
        num_samples=spec.num_samples,
        num_chains=spec.num_chains,
        chain_method=numpyro_chain_method(spec),
        progress_bar=progress,
    )
    started = time.perf_counter()
    # The step size is fixed once warmup ends: it is read from the last state rather than collected every draw.
    extra = ("diverging", "accept_prob", "num_steps", "potential_energy")
    with _x64_in_host_callbacks() if progress else contextlib.nullcontext():
        mcmc.run(jax.random.PRNGKey(spec.seed), extra_fields=extra, **model_kwargs)
        posterior, fields, step_size = jax.device_get(  # one transfer, which waits for the chains
            (
                mcmc.get_samples(group_by_chain=True),
                mcmc.get_extra_fields(group_by_chain=True),
                mcmc.last_state.adapt_state.step_size,
            )
        )
    seconds = time.perf_counter() - started
    stats = {
        "diverging": fields["diverging"].astype(bool),
        "acceptance_rate": fields["accept_prob"],
        "step_size": np.repeat(np.reshape(step_size, (spec.num_chains, 1)), spec.num_samples, axis=1),
        "n_steps": fields["num_steps"],
        "lp": -fields["potential_energy"],
    }
    if spec.method == "nuts":
        stats["tree_depth"] = np.floor(np.log2(fields["num_steps"])).astype(np.int64) + 1
    return Draws(posterior, stats, seconds)


@contextlib.contextmanager
def _x64_in_host_callbacks():
    """Let JAX's own threads see this thread's x64 setting while the chains run.

    NumPyro's progress bar returns Python ints from host callbacks, and JAX converts them on the thread that
    runs the callback. A caller's ``jax.enable_x64`` block holds in its own thread only, so with parallel
    chains the ints become int32 where the program wants int64, and the run fails. While the chains run, the
    process-wide flag is set to this thread's value; afterwards it is put back.
    """
    import jax

    wanted = bool(jax.config.jax_enable_x64)
    seen = []  # a fresh thread sees the process-wide flag, not this thread's enable_x64 block
    reader = threading.Thread(target=lambda: seen.append(bool(jax.config.jax_enable_x64)))
    reader.start()
    reader.join()
    if seen[0] == wanted:
        yield
        return
    jax.config.update("jax_enable_x64", wanted)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", seen[0])


def numpyro_chain_method(spec: MCMCSpec) -> str:
    """How NumPyro runs the chains: "sequential", "vectorized" or "parallel" (``jax.pmap``, a device each).

    Whatever the method, JAX is first asked for a CPU device per core (``request_cpu_devices``), which it grants
    only before its first computation, so that a later run in this process can still have parallel chains.
    "auto" is "parallel" when JAX has a device per chain, else "vectorized"; one chain is "sequential". An
    explicit "parallel" without enough devices is a SpecError rather than NumPyro's fall-back to sequential.
    """
    devices = request_cpu_devices(spec.num_chains)
    if spec.num_chains == 1:
        return "sequential"
    if spec.chain_method in ("sequential", "vectorized"):
        return spec.chain_method
    if devices >= spec.num_chains:
        return "parallel"
    if spec.chain_method == "auto":
        return "vectorized"
    raise SpecError(
        f"inference.chain_method = 'parallel' needs a JAX device per chain ({spec.num_chains}), but JAX started with"
        f" {devices} before ppgen could ask for more: set XLA_FLAGS=--xla_force_host_platform_device_count="
        f"{spec.num_chains} before starting Python, or use chain_method = 'auto' or 'vectorized'"
    )


def request_cpu_devices(count: int) -> int:
    """Ask JAX for max(count, CPU cores) CPU devices, which it grants only before its backend starts (its first
    computation), and return how many devices it has (``jax.local_device_count()``, starting it).

    A device count in the XLA_FLAGS environment variable (``numpyro.set_host_device_count``) is left as it is.
    """
    import jax

    wanted = max(count, os.cpu_count() or 1)
    forced = re.search(r"--xla_force_host_platform_device_count=\S+", os.environ.get("XLA_FLAGS", ""))
    granted = getattr(jax.config, "jax_num_cpu_devices", None)
    if not forced and granted is None:  # an older JAX, without that option, reads XLA_FLAGS when it starts
        from numpyro.util import set_host_device_count

        set_host_device_count(wanted)
    elif not forced and granted < wanted:
        try:
            jax.config.update("jax_num_cpu_devices", wanted)
        except RuntimeError:  # JAX has started: it keeps the devices it has
            pass
    return jax.local_device_count()


def numpyro_kernel(model: Callable, spec: MCMCSpec):
    """NumPyro's NUTS or HMC for ``model`` with the settings of an ``[inference]`` table."""
    from numpyro.infer import HMC, NUTS

    settings = dict(
        target_accept_prob=spec.target_accept,
        dense_mass=spec.dense_mass,
        init_strategy=_numpyro_init(spec.init_strategy),
    )
    if spec.method == "nuts":
        return NUTS(model, max_tree_depth=spec.max_tree_depth, **settings)
    # trajectory_length=None, or NumPyro fixes the step size to 2 pi / num_steps instead of adapting it
    return HMC(model, num_steps=spec.num_steps, trajectory_length=None, **settings)


def pyro_kernel(
    model: Callable, spec: MCMCSpec, init_strategy: Callable | None = None, max_plate_nesting: int | None = None
):
    """Pyro's NUTS or HMC for ``model`` with the settings of an ``[inference]`` table (``init_strategy``
    overrides the table's)."""
    from pyro.infer import HMC, NUTS

    settings = dict(
        target_accept_prob=spec.target_accept,
        full_mass=spec.dense_mass,
        init_strategy=init_strategy or pyro_init_strategy(spec.init_strategy),
        max_plate_nesting=max_plate_nesting,
    )
    if spec.method == "nuts":
        return NUTS(model, max_tree_depth=spec.max_tree_depth, **settings)
    return HMC(model, num_steps=spec.num_steps, **settings)


def pyro_mcmc(
    model: Callable,
    model_kwargs: Mapping,
    spec: MCMCSpec,
    kernel: Callable | None = None,
    progress: bool = False,
    init_strategy: Callable | None = None,
    max_plate_nesting: int | None = None,
    executor: Executor | None = None,
) -> Draws:
    """Run Pyro's NUTS or HMC (or the MCMCKernel that ``kernel(model)`` builds) on ``model(**model_kwargs)``,
    chain c seeded with ``spec.seed + c`` and given a kernel of its own.

    Chains run one after another in this process, unless ``spec.chain_method`` is "parallel" (a pool of
    spawned processes, one per chain up to the CPU cores) or an ``executor`` is given (e.g.
    ``ppgen.executors.make_executor("ray")``, left open): each worker runs one chain exactly as this process
    would, so the draws and statistics are the same, and ``model``, ``kernel`` and ``model_kwargs`` must
    pickle. "auto" is "sequential", since each worker takes seconds to import torch and Pyro.

    Per-draw statistics come from a hook after every step: a Langevin kernel's ``last_info``, or for HMC the
    step size, with acceptance and divergences from Pyro's diagnostics. ``init_strategy`` (default: the spec's)
    and ``max_plate_nesting`` go to HMC/NUTS; models with improper priors need both, since Pyro cannot trace
    them by sampling. ``progress`` shows each chain's bar when they run in this process, and a bar counting
    finished chains when they run in workers.
    """
    import torch

    method = getattr(spec, "chain_method", "sequential")
    if method == "vectorized":
        raise SpecError(
            "inference.chain_method = 'vectorized' needs inference.backend = 'numpyro'; Pyro runs chains"
            " 'sequential' or 'parallel'"
        )
    run_chain = functools.partial(
        _pyro_chain, model, model_kwargs, spec, kernel, init_strategy, max_plate_nesting, torch.get_default_dtype()
    )
    started = time.perf_counter()
    if executor is not None:
        results = _chains_in(executor, run_chain, spec.num_chains, progress)
    elif method == "parallel" and spec.num_chains > 1:
        from ppgen.executors import make_executor

        _check_picklable(model, kernel, init_strategy)
        with make_executor("process", min(spec.num_chains, os.cpu_count() or 1)) as pool:
            results = _chains_in(pool, run_chain, spec.num_chains, progress)
    else:
        results = [run_chain(chain, progress) for chain in range(spec.num_chains)]
    seconds = time.perf_counter() - started
    return Draws(stack_chains([draws for draws, _ in results]), stack_chains([stats for _, stats in results]), seconds)


def _chains_in(executor: Executor, run_chain: Callable, num_chains: int, progress: bool) -> list:
    """The chains' results in chain order; ``progress`` counts finished chains on a bar (workers show none)."""
    from tqdm.auto import tqdm

    futures = [executor.submit(run_chain, chain) for chain in range(num_chains)]
    try:
        with tqdm(total=num_chains, unit="chain", desc="chains in workers", disable=not progress) as bar:
            for future in as_completed(futures):
                future.result()  # the first failure stops the wait
                bar.update()
        return [future.result() for future in futures]
    finally:
        for future in futures:
            future.cancel()


def _check_picklable(*objects) -> None:
    try:
        pickle.dumps(objects)
    except (pickle.PicklingError, TypeError, AttributeError) as error:
        raise SpecError(
            "inference.chain_method = 'parallel' sends the model and kernel to worker processes, but they cannot"
            f" be pickled ({error}): define them at module level, or use chain_method = 'sequential'"
        ) from None


def _pyro_chain(
    model: Callable,
    model_kwargs: Mapping,
    spec: MCMCSpec,
    kernel: Callable | None,
    init_strategy: Callable | None,
    max_plate_nesting: int | None,
    dtype,
    chain: int,
    progress: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One chain of ``pyro_mcmc``: ({site: [draw, ...]}, {statistic: [draw]}), in whichever process runs it
    (``dtype``: torch's default dtype in the caller's process)."""
    import pyro
    import torch
    from pyro.infer import MCMC

    torch.set_default_dtype(dtype)  # a spawned worker starts with float32
    pyro.set_rng_seed((spec.seed + chain) % 2**32)
    if kernel is not None:
        sampler = kernel(model)
    else:
        sampler = pyro_kernel(model, spec, init_strategy, max_plate_nesting)
    infos: list = []

    def record(kernel, params, stage, index):
        if stage.startswith("Sample"):  # Langevin kernels describe each step; HMC only its step size
            infos.append(getattr(kernel, "last_info", None) or float(getattr(kernel, "step_size", np.nan)))

    mcmc = MCMC(
        sampler,
        num_samples=spec.num_samples,
        warmup_steps=spec.num_warmup,
        disable_progbar=not progress,
        hook_fn=record,
    )
    mcmc.run(**model_kwargs)
    draws = {name: value.detach().cpu().numpy() for name, value in mcmc.get_samples().items()}
    diagnostics = mcmc.diagnostics() if spec.num_samples >= 4 else {}  # Pyro's R-hat needs 4 draws
    return draws, _step_stats(infos, diagnostics, spec.num_samples)


def _step_stats(infos: list, diagnostics: dict, num_samples: int) -> dict[str, np.ndarray]:
    """Per-draw statistics of one Pyro chain, from the hook's records and ``MCMC.diagnostics()``."""
    if infos and not isinstance(infos[0], float):  # LangevinInfo tuples
        from ppgen.infer.langevin_kernels import stack_infos

        stats = stack_infos(infos)
        return {key: stats[key] for key in ("acceptance_rate", "step_size", "lp")}
    diverging = np.zeros(num_samples, dtype=bool)
    diverging[np.asarray(diagnostics.get("divergences", {}).get("chain 0", []), dtype=np.int64)] = True
    acceptance = float(diagnostics.get("acceptance rate", {}).get("chain 0", np.nan))
    return {
        "diverging": diverging,
        "acceptance_rate": np.full(num_samples, acceptance),  # Pyro reports the chain's mean only
        "step_size": np.asarray(infos, dtype=np.float64),
    }


def stack_chains(chains: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """[{name: [draw, ...]}] per chain -> {name: [chain, draw, ...]}."""
    return {name: np.stack([chain[name] for chain in chains]) for name in chains[0]}


def _numpyro_init(name: str):
    from numpyro.infer import init_to_median, init_to_sample, init_to_uniform

    return {"median": init_to_median, "uniform": init_to_uniform, "sample": init_to_sample}[name]


def pyro_init_strategy(name: str):
    """Pyro's initialization strategy of an ``init_strategy`` key: "median", "uniform" or "sample"."""
    from pyro.infer.autoguide.initialization import init_to_median, init_to_sample, init_to_uniform

    return {"median": init_to_median, "uniform": init_to_uniform, "sample": init_to_sample}[name]
