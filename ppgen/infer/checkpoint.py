"""Checkpoint files: written atomically, read without unpickling code."""

import pickle
from pathlib import Path

import torch

from ppgen.errors import TrainingError
from ppgen.files import atomic_open

__all__ = ["save_checkpoint", "load_checkpoint"]


def save_checkpoint(state: dict, path: str | Path) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts) so that ``path`` is always either
    the previous complete checkpoint or the new complete one, even if the process dies mid-write."""
    with atomic_open(path) as file:
        torch.save(state, file)


def load_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``: plain data and tensors only, never arbitrary objects."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise TrainingError(f"no checkpoint at {path}") from None
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise TrainingError(f"checkpoint {path} is unreadable or not a ppgen checkpoint: {reason}") from None
