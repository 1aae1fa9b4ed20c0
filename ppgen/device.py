"""Choosing the torch device a run uses."""

import torch

from ppgen.errors import PpgenError

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """ "auto" -> CUDA when available, else CPU; "cpu" and "cuda" as named (CUDA must be present)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise PpgenError("device = 'cuda' but no CUDA device is available (use 'auto' or 'cpu')")
    if name not in ("cpu", "cuda"):
        raise PpgenError(f"unknown device {name!r}; expected 'auto', 'cpu' or 'cuda'")
    return torch.device(name)
