"""Posterior draws [chain, draw, ...] as every inference method hands them back (MCMC, Langevin, SGLD, or draws
from a fitted autoguide), with the sampler's per-draw statistics named as ArviZ names them; and the draws of chains
that Ctrl-C stopped (``stop_on_interrupt``, ``interruption``), as both MCMC backends keep them."""

import contextlib
import dataclasses
import signal
import sys
import threading
from dataclasses import dataclass, field

import numpy as np

from ppgen.errors import SamplingInterrupted

__all__ = ["Draws", "stack_chains", "join_chains", "interruption", "stop_on_interrupt"]


@dataclass(frozen=True)
class Draws:
    """Posterior draws and what the sampler says about them.

    posterior: site name -> [chain, draw, ...] constrained values.
    sample_stats: ArviZ names (``diverging``, ``acceptance_rate``, ``step_size``, ``tree_depth``, ``lp``, ...)
        -> [chain, draw].
    seconds: wall time of warmup and sampling.
    choices: what the sampler chose for itself, e.g. {"mass": "dense"} for NUTS's mass = "auto", or found (Pathfinder's
        {"Pareto k": "0.41"}).
    warnings: what the method says is wrong with its draws (one line each), added to the run's warnings.
    gradients: gradient evaluations of warmup and draws, all chains together (NumPyro's NUTS and HMC: their
        leapfrog steps); None where the sampler does not count them.
    """

    posterior: dict[str, np.ndarray]
    sample_stats: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    choices: dict[str, str] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    gradients: int | None = None

    def thinned(self, step: int, stop: int | None = None) -> "Draws":
        """Every ``step``-th draw of each chain, of its first ``stop`` (None: all; draws [chain, ceil(draw / step),
        ...])."""
        if step == 1 and stop is None:
            return self
        return Draws(
            {name: value[:, :stop:step] for name, value in self.posterior.items()},
            {name: value[:, :stop:step] for name, value in self.sample_stats.items()},
            self.seconds,
            self.choices,
            self.warnings,
            self.gradients,
        )

    def flat(self, names) -> dict[str, np.ndarray]:
        """The draws of ``names`` with the chains concatenated: name -> [chain * draw, ...]."""
        return {name: self.posterior[name].reshape(-1, *self.posterior[name].shape[2:]) for name in names}


def stack_chains(chains: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """[{name: [draw, ...]}] per chain -> {name: [chain, draw, ...]}."""
    return {name: np.stack([chain[name] for chain in chains]) for name in chains[0]}


def join_chains(draws: list[Draws], seconds: float) -> Draws:
    """Draws of chains run apart, each [chain, draw, ...] with equally many draws, as one Draws [chain, draw, ...]."""
    if len(draws) == 1:
        return dataclasses.replace(draws[0], seconds=seconds)
    return Draws(
        {name: np.concatenate([d.posterior[name] for d in draws]) for name in draws[0].posterior},
        {name: np.concatenate([d.sample_stats[name] for d in draws]) for name in draws[0].sample_stats},
        seconds,
        draws[0].choices,
        gradients=None if any(d.gradients is None for d in draws) else sum(d.gradients for d in draws),
    )


def interruption(
    draws: list[Draws], done: list[int], num_warmup: int, num_samples: int, chains: int, seconds: float
) -> SamplingInterrupted:
    """The SamplingInterrupted of runs stopped by Ctrl-C: ``draws`` [chain, draw, ...] of runs (one chain each, or
    all chains together), each after ``done`` steps (warmup and draws) of its chains, out of ``chains`` chains.
    Complete runs are its draws; the runs stopped short of them, cut to the fewest draws among them, its partial
    chains."""
    total = num_warmup + num_samples
    complete = [d for d, steps in zip(draws, done) if steps == total]
    stopped = [(d, steps) for d, steps in zip(draws, done) if steps < total]
    if not stopped:  # stopped between chains run one after another
        message = f"{len(complete)} of {chains} chains complete, the next did not start"
        return SamplingInterrupted(message, join_chains(complete, seconds))
    fewest = min(steps for _, steps in stopped)
    kept = max(0, fewest - num_warmup)
    partial = join_chains([d.thinned(1, kept) for d, _ in stopped], seconds) if kept else None
    where = f"after {kept} of {num_samples} draws" if kept else f"in warmup, at step {fewest} of {num_warmup}"
    if fewest < max(steps for _, steps in stopped):  # chains in worker processes, each stopped by its own Ctrl-C
        where += " (the fewest among them: all cut to that)" if kept else " (the earliest among them)"
    if complete:
        others = "the next" if len(stopped) == 1 else f"{len(stopped)} others"
        message = f"{sum(map(_chains, complete))} of {chains} chains complete, {others} stopped {where}"
        return SamplingInterrupted(message, join_chains(complete, seconds), partial)
    count = sum(map(_chains, (d for d, _ in stopped)))
    what = "the chain" if chains == 1 else f"all {chains} chains" if count == chains else "chain 0"
    return SamplingInterrupted(f"{what} stopped {where}", partial)


def _chains(draws: Draws) -> int:
    """How many chains ``draws`` holds (a run without sites, stopped before its first draw, held one)."""
    return len(next(iter(draws.posterior.values()), [None]))


_EARLY_INTERRUPT = threading.Event()  # a Ctrl-C that reached this worker process before its chain began


@contextlib.contextmanager
def interrupts_held():
    """Ctrl-C held back in this thread while it starts worker processes: they start with it held too (a signal mask
    is inherited), until ``remember_interrupts`` takes it up; one sent meanwhile arrives when the hold ends."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def remember_interrupts() -> None:
    """A worker process's initializer: a Ctrl-C that comes before the worker's chain has begun (a terminal's reaches
    every process of its group, workers still importing torch among them) is remembered rather than raised, and
    the chain's ``stop_on_interrupt`` starts set. Ends the hold of ``interrupts_held``."""
    signal.signal(signal.SIGINT, lambda signum, frame: _EARLY_INTERRUPT.set())
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def stop_on_interrupt(message: str | None = "stopping the chains, keeping their draws so far"):
    """An Event that a first Ctrl-C sets, saying ``message`` (None: nothing, as in a worker process; the chains then
    stop where their sampler next looks); a second Ctrl-C interrupts at once. Outside the main thread, where
    signals cannot be caught, the Event is never set."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    if _EARLY_INTERRUPT.is_set():
        stop.set()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if message is not None:
            print(f"\nppgen: {message} (Ctrl-C again to abort)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)
