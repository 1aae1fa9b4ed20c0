"""Executors for many independent jobs (SBC replicates, posteriordb posteriors, Pyro MCMC chains): a local
pool of processes or the tasks of a Ray cluster, both as a ``concurrent.futures.Executor``.

Jobs must be picklable: module-level functions, or ``functools.partial`` of them, with picklable arguments.
Processes are spawned, not forked, since torch and JAX threads do not survive a fork. A Ray job runs as a Ray
task of one CPU (``ray.remote``; Ray 2.x has no ``concurrent.futures`` executor of its own, so ``RayExecutor``
adapts its tasks): on a cluster, every node needs ppgen installed and the spec files at the same paths.
"""

import os
import warnings
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from multiprocessing import get_context
from numbers import Integral
from typing import Any

from ppgen.errors import PpgenError, SpecError

__all__ = ["EXECUTORS", "make_executor", "RayExecutor"]

EXECUTORS = ("process", "ray")
RAY_MISSING = "--executor ray needs Ray: pip install 'ppgen[ray]'"


def make_executor(
    kind: str = "process",
    workers: int | None = None,
    *,
    address: str | None = None,
    initializer: Callable[[], None] | None = None,
) -> Executor:
    """An executor to use in a ``with`` block (leaving it shuts the pool down, or disconnects from Ray).

    kind: "process", a pool of ``workers`` spawned processes (None: one per CPU core), each running
    ``initializer`` first; or "ray", tasks of the Ray cluster at ``address`` ("auto", "HOST:6379",
    "ray://HOST:10001") where the cluster's CPUs set how many run at once, else of a local Ray instance of
    ``workers`` CPUs (None: all cores).
    """
    if kind not in EXECUTORS:
        raise SpecError(f"--executor must be one of {', '.join(EXECUTORS)}, got {kind!r}")
    if workers is not None and (not isinstance(workers, Integral) or isinstance(workers, bool) or workers < 1):
        raise SpecError(f"--workers must be a whole number >= 1, got {workers!r}")
    if kind == "process":
        if address is not None:
            raise SpecError("--ray-address applies to --executor ray, not to a local process pool")
        return ProcessPoolExecutor(
            max_workers=workers or os.cpu_count(), mp_context=get_context("spawn"), initializer=initializer
        )
    if initializer is not None:
        raise ValueError("an initializer applies to a process pool")
    if address is not None and workers is not None:
        raise SpecError("--workers sets the CPUs of a local Ray instance; the cluster at --ray-address has its own")
    return RayExecutor(address=address, num_cpus=workers)


def _call(fn: Callable, args: tuple, kwargs: dict) -> Any:
    """What a Ray task runs: ``fn(*args, **kwargs)``."""
    return fn(*args, **kwargs)


class _RayFuture(Future):
    """The future of one Ray task: cancelling it (before it has finished) cancels the task too."""

    def __init__(self, ref):
        super().__init__()
        self._ref = ref
        ref.future().add_done_callback(self._settle)

    def _settle(self, done: Future) -> None:
        if not self.set_running_or_notify_cancel():  # cancelled here first
            return
        error = done.exception()
        if error is None:
            self.set_result(done.result())
        else:  # the task's own exception, as a process pool raises it, rather than Ray's wrapper of it
            cause = getattr(error, "cause", None)
            self.set_exception(cause if isinstance(cause, Exception) else error)

    def cancel(self) -> bool:
        cancelled = super().cancel()
        if cancelled:
            import ray

            ray.cancel(self._ref)
        return cancelled


class RayExecutor(Executor):
    """``concurrent.futures.Executor`` over Ray tasks (one CPU each).

    address: a running cluster to connect to; None starts a local instance of ``num_cpus`` CPUs (None: all
    cores). When Ray is already initialized in this process, its connection is used and left open.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        try:
            import ray
        except ImportError:
            raise PpgenError(RAY_MISSING) from None
        self._owner = not ray.is_initialized()
        if self._owner:
            settings = {"num_cpus": num_cpus, "include_dashboard": False} if address is None else {"address": address}
            with warnings.catch_warnings():
                # Ray forks to start its own programs (exec follows), which JAX, when imported, warns of.
                warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
                ray.init(logging_level="warning", **settings)
        self._task = ray.remote(_call)
        self._futures: list[_RayFuture] = []
        self._closed = False

    def submit(self, fn: Callable, /, *args, **kwargs) -> Future:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        future = _RayFuture(self._task.remote(fn, args, kwargs))
        self._futures.append(future)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        import ray

        if self._closed:
            return
        self._closed = True
        if cancel_futures:
            for future in self._futures:
                future.cancel()
        if wait:
            for future in self._futures:
                if not future.cancelled():
                    future.exception()  # waits; the exception is the caller's to read from the future
        self._futures.clear()
        if self._owner:
            ray.shutdown()
