"""How many CPU threads torch trains with, and how long its idle OpenMP threads spin.

Torch's defaults (one intra-op thread per core, OpenMP threads that spin for a long while between parallel
regions) lose badly when another process holds a core: the spinning thread and the busy process share it,
and each parallel region waits for the descheduled one. On 2 cores with one busy, a 64-256-256 MLP step took
3-50 ms with two threads against 0.4 ms with one (bench/threads.py measures ppgen's models).

ppgen's policy, each part only where the user set nothing:
- ``prefer_short_spinning()``, called by ``import ppgen`` before torch loads: ``GOMP_SPINCOUNT`` = 10000, so
  idle OpenMP threads sleep after about 10 microseconds of spinning instead of torch's much longer default. On a
  quiet machine that costs nothing measurable; with a busy core it made two-thread steps 2-3x faster. Skipped when
  ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` is set, or torch is already loaded (OpenMP reads them once).
- ``training_threads(...)``: one thread for a model whose training step is below ``SMALL_STEP_FLOPS``, where a
  second thread gains at most 1.3x on a quiet machine and loses 4-8x on a shared one; torch's count above it.
  An explicit ``threads`` setting, ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS``, or a ``torch.set_num_threads``
  call (seen as a count other than torch's default, one per physical core) is kept as it is.
"""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

__all__ = [
    "SMALL_STEP_FLOPS",
    "physical_cores",
    "prefer_short_spinning",
    "step_flops",
    "training_threads",
    "using_threads",
]

SMALL_STEP_FLOPS = 5e8  # digits VAE: 7e7 per step; Burda's MNIST VAE (batch 100): 2.6e8
SPIN_COUNT = "10000"
_USER_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def prefer_short_spinning() -> None:
    """Set ``GOMP_SPINCOUNT`` for torch's OpenMP runtime unless the user chose a wait policy or torch is loaded."""
    if "torch" in sys.modules:
        return
    if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


def step_flops(parameters: int, batch_size: int, particles: int = 1) -> float:
    """Floating-point operations of one training step of a dense network, forward and backward (6 per weight
    and example, the usual estimate)."""
    return 6.0 * parameters * batch_size * particles


def training_threads(requested: int | str, flops: float) -> int | None:
    """The intra-op thread count to train with: ``requested`` when it is a number; for "auto", 1 below
    ``SMALL_STEP_FLOPS`` unless the user chose a count; None keeps torch's count."""
    if requested != "auto":
        return int(requested)
    if flops >= SMALL_STEP_FLOPS or any(name in os.environ for name in _USER_VARIABLES):
        return None
    import torch

    if torch.get_num_threads() != physical_cores():  # not torch's default: the user called torch.set_num_threads
        return None
    return 1


@cache
def physical_cores() -> int:
    """Cores, counting hyperthreads of one core once (torch's default thread count); all CPUs where Linux's
    topology files are missing."""
    siblings = {
        path.read_text().strip()
        for path in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/topology/thread_siblings_list")
    }
    return len(siblings) or os.cpu_count() or 1


@contextmanager
def using_threads(count: int | None) -> Iterator[int]:
    """Run the block with ``count`` intra-op threads (None: as they are), then restore torch's count; yields the
    count in use."""
    import torch

    before = torch.get_num_threads()
    if count is not None and count != before:
        torch.set_num_threads(count)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
