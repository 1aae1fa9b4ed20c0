"""Timing shared by the benchmark scripts: seconds of work on a device, CUDA-aware."""

import time
from collections.abc import Callable
from typing import TypeVar

import torch

__all__ = ["device_seconds"]

T = TypeVar("T")


def device_seconds(work: Callable[[], T], device: torch.device) -> tuple[T, float]:
    """(work(), the seconds it took on device): between two CUDA events on the current stream, read once the
    second has completed, or by the wall clock on the CPU."""
    if device.type != "cuda":
        start = time.perf_counter()
        result = work()
        return result, time.perf_counter() - start
    torch.cuda.synchronize(device)  # nothing queued before the start event is counted
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    result = work()
    end.record()
    end.synchronize()
    return result, start.elapsed_time(end) / 1e3
