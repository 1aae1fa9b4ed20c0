"""Classification by likelihood with a class-conditional model p(x | y): argmax_y log p(x | y) + log p(y)."""

from collections.abc import Callable

import torch

from ppgen.evaluate.bounds import log_likelihood

__all__ = ["class_log_joint", "classify"]


@torch.no_grad()
def class_log_joint(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    class_log_prior: torch.Tensor,
    num_samples: int = 100,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """[N, C] log p(x_n | y = c) + log p(c), with log p(x | y) estimated by importance sampling.

    model(x, y) and guide(x, y) take labels y [N]; class_log_prior is [C] log p(y).
    """
    columns = []
    for label in range(len(class_log_prior)):
        y = torch.full(x.shape[:1], label, dtype=torch.long, device=x.device)
        columns.append(log_likelihood(model, guide, x, y, num_samples=num_samples, chunk_size=chunk_size).estimate)
    return torch.stack(columns, dim=-1) + class_log_prior.to(x.device)


def classify(
    model: Callable,
    guide: Callable,
    x: torch.Tensor,
    class_log_prior: torch.Tensor,
    num_samples: int = 100,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """[N] predicted classes argmax_y log p(x | y) + log p(y)."""
    return class_log_joint(model, guide, x, class_log_prior, num_samples, chunk_size).argmax(-1)
