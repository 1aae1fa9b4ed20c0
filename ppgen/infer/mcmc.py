"""Pyro's NUTS or HMC, or any Pyro ``MCMCKernel`` (the Langevin kernels), on any Pyro model, on the CPU or CUDA;
draws come back as numpy arrays [chain, draw, ...] with per-draw sampler statistics named as ArviZ names them.

Chains run one after another in this process, or in worker processes, one per chain (``pyro_mcmc``); chain c is
seeded with seed + c either way, so both give the same draws. A Ctrl-C stops a chain at its next step and
``SamplingInterrupted`` carries the draws of the complete chains and of the one stopped. (NumPyro's compiled NUTS
and HMC: ``ppgen.infer.numpyro_sampler``.)

NUTS: Hoffman & Gelman 2014, arXiv 1111.4246; HMC: Neal 2011, arXiv 1206.1901.
"""

import functools
import os
import pickle
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, as_completed

import numpy as np

from ppgen.errors import SpecError
from ppgen.infer.draws import (
    Draws,
    interruption,
    interrupts_held,
    join_chains,
    remember_interrupts,
    stop_on_interrupt,
)
from ppgen.infer.posterior_settings import LangevinSettings, MCMCSettings, SGLDSettings
from ppgen.models.initialization import pyro_init_strategy
from ppgen.progress import ProgressLog, progress_mode, reporter

__all__ = ["pyro_kernel", "pyro_mcmc"]

ChainSettings = MCMCSettings | LangevinSettings | SGLDSettings  # what pyro_mcmc reads: chains, budget, seed


def pyro_kernel(
    model: Callable, settings: MCMCSettings, init_strategy: Callable | None = None, max_plate_nesting: int | None = None
):
    """Pyro's NUTS or HMC for ``model`` with ``settings`` (``init_strategy`` overrides theirs)."""
    from pyro.infer import HMC, NUTS

    options = dict(
        target_accept_prob=settings.target_accept_prob,
        full_mass=settings.mass == "dense",  # "auto" is diag here
        init_strategy=init_strategy or pyro_init_strategy(settings.init_strategy),
        max_plate_nesting=max_plate_nesting,
    )
    if settings.method == "nuts":
        return NUTS(model, max_tree_depth=settings.max_tree_depth, **options)
    return HMC(model, num_steps=settings.num_steps, **options)


def pyro_mcmc(
    model: Callable,
    model_kwargs: Mapping,
    settings: ChainSettings,
    kernel: Callable | None = None,
    progress: bool | None = False,
    init_strategy: Callable | None = None,
    max_plate_nesting: int | None = None,
    executor: Executor | None = None,
) -> Draws:
    """Run Pyro's NUTS or HMC (or the MCMCKernel that ``kernel(model)`` builds) on ``model(**model_kwargs)``,
    chain c seeded with ``settings.seed + c`` and given a kernel of its own.

    Chains run one after another in this process, unless ``settings.chain_method`` is "parallel" (a pool of
    spawned processes, one per chain up to the CPU cores) or an ``executor`` is given (e.g.
    ``ppgen.executors.make_executor("ray")``, left open): each worker runs one chain exactly as this process
    would, so the draws and statistics are the same, and ``model``, ``kernel`` and ``model_kwargs`` must
    pickle. "auto" is "sequential", since each worker takes seconds to import torch and Pyro.

    Per-draw statistics come from a hook after every step: a Langevin kernel's ``last_info``, or for HMC the
    step size, with acceptance and divergences from Pyro's diagnostics. ``init_strategy`` (default: the settings')
    and ``max_plate_nesting`` go to HMC/NUTS; models with improper priors need both, since Pyro cannot trace
    them by sampling. ``progress`` shows each chain's bar when they run in this process, and a bar counting
    finished chains when they run in workers (None: bars on a terminal, ``ppgen.progress`` lines otherwise).
    """
    import torch

    method = settings.chain_method
    if method == "vectorized":
        raise SpecError(
            "inference.chain_method = 'vectorized' needs inference.backend = 'numpyro'; Pyro runs chains"
            " 'sequential' or 'parallel'"
        )
    run_chain = functools.partial(
        _pyro_chain, model, model_kwargs, settings, kernel, init_strategy, max_plate_nesting, torch.get_default_dtype()
    )
    started = time.perf_counter()
    with stop_on_interrupt() as stop:  # chains in workers stop on their own Ctrl-C (a terminal's reaches them all)
        if executor is not None:
            results = _chains_in(executor, run_chain, settings.num_chains, progress, stop)
        elif method == "parallel" and settings.num_chains > 1:
            from ppgen.executors import make_executor

            _check_picklable(model, kernel, init_strategy)
            workers = min(settings.num_chains, os.cpu_count() or 1)
            with make_executor("process", workers, initializer=remember_interrupts) as pool:
                results = _chains_in(pool, run_chain, settings.num_chains, progress, stop)
        else:
            results = []
            for chain in range(settings.num_chains):
                results.append(run_chain(chain, progress, stop))
                if stop.is_set():
                    break
    seconds = time.perf_counter() - started
    mass = getattr(settings, "mass", None)  # HMC's; Langevin kernels have none
    choices = {} if mass is None else {"mass": "dense" if mass == "dense" else "diag"}
    chains = [Draws(_first_axis(draws), _first_axis(stats), seconds, choices) for draws, stats, _ in results]
    done = [steps for _, _, steps in results]
    if done == [settings.num_warmup + settings.num_samples] * settings.num_chains:
        return join_chains(chains, seconds)
    raise interruption(chains, done, settings.num_warmup, settings.num_samples, settings.num_chains, seconds)


def _first_axis(chain: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One chain's {name: [draw, ...]} as {name: [1, draw, ...]}."""
    return {name: value[None] for name, value in chain.items()}


def _chains_in(
    executor: Executor, run_chain: Callable, num_chains: int, progress: bool | None, stop: threading.Event
) -> list:
    """The chains' results in chain order; ``progress`` counts finished chains (workers show none). Once ``stop``
    is set (a Ctrl-C), a worker that died of it, before its chain could look, counts as a chain stopped at its
    first step."""
    with interrupts_held():  # until each worker can take a Ctrl-C (``remember_interrupts``)
        futures = [executor.submit(run_chain, chain) for chain in range(num_chains)]
    try:
        with reporter("chains in workers", num_chains, "chain", progress=progress) as bar:
            for done, future in enumerate(as_completed(futures), 1):
                if future.exception() is None or not stop.is_set():
                    future.result()  # the first failure stops the wait
                bar.update(done)
        return [({}, {}, 0) if stop.is_set() and f.exception() else f.result() for f in futures]
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
    settings: ChainSettings,
    kernel: Callable | None,
    init_strategy: Callable | None,
    max_plate_nesting: int | None,
    dtype,
    chain: int,
    progress: bool | None = False,
    stop: threading.Event | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """One chain of ``pyro_mcmc``: ({site: [draw, ...]}, {statistic: [draw]}, steps done of warmup and draws), in
    whichever process runs it (``dtype``: torch's default dtype in the caller's process); ``progress``: Pyro's bar,
    or lines (``ProgressLog``) where ``ppgen.progress`` says so.

    The chain stops at its next step once ``stop`` is set (None: a Ctrl-C in this process sets it, as in a worker),
    keeping the draws so far."""
    import pyro
    import torch
    from pyro.infer import MCMC

    if stop is None:  # in a worker process: the parent process says what a Ctrl-C does
        with stop_on_interrupt(message=None) as stop:
            return _pyro_chain(
                model, model_kwargs, settings, kernel, init_strategy, max_plate_nesting, dtype, chain, progress, stop
            )
    torch.set_default_dtype(dtype)  # a spawned worker starts with float32
    pyro.set_rng_seed((settings.seed + chain) % 2**32)
    if kernel is not None:
        sampler = kernel(model)
    else:
        sampler = pyro_kernel(model, settings, init_strategy, max_plate_nesting)
    infos: list = []
    drawn: list[dict] = []  # the unconstrained draws, kept in case the chain stops
    mode = progress_mode(progress)
    label = "sampling" if settings.num_chains == 1 else f"sampling chain {chain + 1}/{settings.num_chains}"
    log = ProgressLog(label, settings.num_warmup + settings.num_samples, "iteration") if mode == "log" else None
    steps = [0]  # steps done, warmup and draws (a cell the hook writes)

    def record(kernel, params, stage, index):
        if stop.is_set():
            raise _Stopped
        sampling = stage.startswith("Sample")
        if sampling:  # Langevin kernels describe each step; HMC only its step size
            infos.append(getattr(kernel, "last_info", None) or float(getattr(kernel, "step_size", np.nan)))
            drawn.append({name: value.detach().clone() for name, value in params.items()})
        steps[0] = index + 1 + settings.num_warmup * sampling
        if log is not None:
            log.update(steps[0], phase="sampling" if sampling else "warmup")

    mcmc = MCMC(
        sampler,
        num_samples=settings.num_samples,
        warmup_steps=settings.num_warmup,
        disable_progbar=mode != "bar",
        hook_fn=record,
    )
    try:
        mcmc.run(**model_kwargs)
    except _Stopped:
        return _stopped_chain(sampler, drawn, infos, steps[0])
    finally:
        if log is not None:
            log.close()
    draws = {name: value.detach().cpu().numpy() for name, value in mcmc.get_samples().items()}
    diagnostics = mcmc.diagnostics() if settings.num_samples >= 4 else {}  # Pyro's R-hat needs 4 draws
    return draws, _step_stats(infos, diagnostics, settings.num_samples), steps[0]


class _Stopped(Exception):
    """Raised by a chain's hook to leave Pyro's sampling loop once Ctrl-C asked the chain to stop."""


def _stopped_chain(sampler, drawn: list[dict], infos: list, steps: int):
    """(draws, statistics, steps) of a chain stopped after ``steps`` steps, ``drawn`` its unconstrained draws: mapped
    to the constrained space by the kernel's transforms, as ``MCMC.get_samples`` maps them."""
    import torch

    if not drawn:
        return {}, {}, steps
    transforms = getattr(sampler, "transforms", None) or {}
    draws = {}
    for name in drawn[0]:
        values = torch.stack([draw[name] for draw in drawn])
        values = transforms[name].inv(values) if name in transforms else values
        draws[name] = values.detach().cpu().numpy()
    kernel_diagnostics = sampler.diagnostics()
    diagnostics = {name: {"chain 0": value} for name, value in kernel_diagnostics.items()}
    return draws, _step_stats(infos, diagnostics, len(drawn)), steps


def _step_stats(infos: list, diagnostics: dict, num_samples: int) -> dict[str, np.ndarray]:
    """Per-draw statistics of one Pyro chain, from the hook's records and ``MCMC.diagnostics()``."""
    if infos and not isinstance(infos[0], float):  # LangevinInfo tuples
        from ppgen.infer.langevin_stats import stack_infos

        stats = stack_infos(infos)
        return {key: stats[key] for key in ("acceptance_rate", "step_size", "lp")}
    diverging = np.zeros(num_samples, dtype=bool)
    divergences = np.asarray(diagnostics.get("divergences", {}).get("chain 0", []), dtype=np.int64)
    diverging[divergences[divergences < num_samples]] = True  # a stopped chain's last step is not kept
    acceptance = float(diagnostics.get("acceptance rate", {}).get("chain 0", np.nan))
    return {
        "diverging": diverging,
        "acceptance_rate": np.full(num_samples, acceptance),  # Pyro reports the chain's mean only
        "step_size": np.asarray(infos, dtype=np.float64),
    }
