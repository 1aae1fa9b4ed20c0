"""Progress of long phases (training, sampling, evaluation): a tqdm bar on a terminal, and when stderr is not a
terminal (a log file, a batch job) a line at a time, so that a redirected run is never silent:

    training: 1200/5000 steps (24%), epoch 12/50, elbo -23.104, val -23.310; 41.2 steps/s, 29s elapsed, ETA 1m32s

A line is written every 10 s in a phase's first minute, then every minute (``PPGEN_PROGRESS_SECONDS`` sets a
fixed interval; 0 writes one at every update), and a last one when the phase ends if any was written: phases
shorter than 10 s stay silent.

``progress`` arguments: True a bar, False nothing, None a bar on a terminal and lines otherwise. A phase that
takes none of its own (evaluation) follows the run's (``default_progress``: ``ppgen run --quiet`` silences it).
"""

import contextlib
import contextvars
import itertools
import os
import sys
import threading
import time

__all__ = ["progress_mode", "default_progress", "reporter", "ProgressLog", "numpyro_progress_log"]

FIRST_MINUTE_INTERVAL, LATER_INTERVAL = 10.0, 60.0  # seconds between lines

_default: contextvars.ContextVar[bool | None] = contextvars.ContextVar("ppgen_progress", default=None)


def progress_mode(progress: bool | None) -> str | None:
    """How a ``progress`` argument shows: "bar", "log" or None (not at all); None follows ``default_progress``, then
    whether stderr is a terminal (or a Jupyter kernel's, where tqdm draws widgets)."""
    if progress is None:
        progress = _default.get()
    if progress is False:
        return None
    if progress is True or sys.stderr.isatty() or "ipykernel" in sys.modules:
        return "bar"
    return "log"


@contextlib.contextmanager
def default_progress(progress: bool | None):
    """Phases inside this block that are given no ``progress`` of their own follow ``progress``."""
    token = _default.set(progress)
    try:
        yield
    finally:
        _default.reset(token)


def _interval(elapsed: float) -> float:
    fixed = os.environ.get("PPGEN_PROGRESS_SECONDS")
    if fixed:
        return float(fixed)
    return FIRST_MINUTE_INTERVAL if elapsed < 60 else LATER_INTERVAL


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressLog:
    """Progress lines on stderr, ``label: n/total units (pct), fields; rate, elapsed, ETA``, at most one per interval.

    The rate (and the ETA from it) is measured from the first update, so that start-up and compilation before it
    do not count."""

    def __init__(self, label: str, total: int, unit: str = "step", initial: int = 0):
        self.label, self.total, self.unit = label, total, unit
        self.started = self.last = time.perf_counter()
        self.n, self.fields, self.first, self.written = initial, {}, None, None  # written: the last line's n

    def update(self, n: int, **fields) -> None:
        """Move to position ``n`` (of ``total``) with ``fields`` shown as ``key value``; writes a line when due."""
        now = time.perf_counter()
        self.n = n
        self.fields.update(fields)
        if self.first is None:
            self.first = (n, now)
        if now - self.last >= _interval(now - self.started):
            self._write(now, final=False)

    def close(self) -> None:
        """A last line, if any was written and the position moved since."""
        if self.written is not None and self.written != self.n:
            self._write(time.perf_counter(), final=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _write(self, now: float, final: bool) -> None:
        self.last, self.written = now, self.n
        units = f"{self.unit}s"
        parts = [f"{self.n}/{self.total} {units}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")]
        parts += [f"{key} {value}" for key, value in self.fields.items()]
        first_n, first_time = self.first or (self.n, now)
        rate = (self.n - first_n) / (now - first_time) if self.n > first_n and now > first_time else None
        timing = [] if rate is None else [f"{rate:.0f} {units}/s" if rate >= 100 else f"{rate:.3g} {units}/s"]
        timing.append(f"{_duration(now - self.started)} elapsed")
        if rate is not None and not final and self.n < self.total:
            timing.append(f"ETA {_duration((self.total - self.n) / rate)}")
        print(f"{self.label}: {', '.join(parts)}; {', '.join(timing)}", file=sys.stderr, flush=True)


class _Bar:
    """A tqdm bar with ``ProgressLog``'s interface."""

    def __init__(self, label: str, total: int, unit: str, initial: int, delay: float):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, initial=initial, desc=label or None, unit=unit, dynamic_ncols=True, delay=delay)

    def update(self, n: int, **fields) -> None:
        self.bar.n = min(n, self.bar.total)
        if fields:
            self.bar.set_postfix(fields, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _Silent:
    def update(self, n: int, **fields) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def reporter(
    label: str, total: int, unit: str = "step", *, initial: int = 0, progress: bool | None = None, delay: float = 0.0
):
    """The progress of one phase as ``progress_mode(progress)`` says: a tqdm bar (shown after ``delay`` seconds), a
    ``ProgressLog`` or nothing; each has ``update(n, **fields)`` and ``close()`` and is a context manager."""
    mode = progress_mode(progress)
    if mode == "bar":
        return _Bar(label, total, unit, initial, delay)
    if mode == "log":
        return ProgressLog(label, total, unit, initial)
    return _Silent()


def numpyro_progress_log(total: int, num_chains: int, num_warmup: int, every: int):
    """Like ``numpyro.util.progress_bar_factory``: a decorator for loop bodies ``(index, (state, chain))`` with
    ``chain`` -1 at the start, but reporting every ``every`` iterations to a ``ProgressLog`` per chain ("sampling
    chain 2/4: 600/2000 iterations (30%), phase warmup; ..."). Each chain takes the next number at its first
    iteration."""
    import jax
    import jax.numpy as jnp
    from jax.experimental import io_callback

    labels = [f"sampling chain {c + 1}/{num_chains}" if num_chains > 1 else "sampling" for c in range(num_chains)]
    logs = [ProgressLog(label, total, "iteration") for label in labels]
    numbers, lock = itertools.count(), threading.Lock()

    def report(iteration, chain):
        iteration, chain = int(iteration), int(chain)
        if chain < 0:
            with lock:
                chain = next(numbers)
        logs[chain].update(iteration, phase="warmup" if iteration <= num_warmup else "sampling")
        if iteration == total:
            logs[chain].close()
        return chain

    def decorate(body):
        def wrapped(index, values):
            state, chain = values
            state = body(index, state)
            iteration = index + 1
            due = (iteration == 1) | (iteration % every == 0) | (iteration == total)
            chain = jax.lax.cond(due, lambda: io_callback(report, jnp.array(0), iteration, chain), lambda: chain)
            return state, chain

        return wrapped

    return decorate
