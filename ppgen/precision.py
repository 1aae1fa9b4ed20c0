"""Mixed precision: what stays in fp32 when the networks run under bf16 autocast."""

import torch

__all__ = ["full_precision"]


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """x, cast to fp32 if autocast left it in a 16-bit type (fp64 stays fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
