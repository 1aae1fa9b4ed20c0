"""Whether ``torchrun`` started this process, read from its environment without importing torch."""

import os

__all__ = ["TORCHRUN_VARIABLES", "launched"]

TORCHRUN_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


def launched() -> bool:
    """Whether this process was started by torchrun (its environment names WORLD_SIZE, RANK and LOCAL_RANK)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)
