"""Langevin dynamics: the proposal step that annealed Langevin sampling and predictor-corrector samplers
compose (and that a Metropolis-adjusted kernel would pair with an accept/reject rule)."""

import torch

__all__ = ["langevin_step"]


def langevin_step(
    x: torch.Tensor, score: torch.Tensor, step_size: torch.Tensor | float, noise: torch.Tensor
) -> torch.Tensor:
    """x + step_size * score + sqrt(2 step_size) * noise: one Euler-Maruyama step of the Langevin diffusion
    dx = grad log p(x) dt + sqrt(2) dW, whose stationary law is p.

    Args:
        x, score: [..., D] the state and grad log p at it.
        step_size: a number, or a tensor broadcasting against x (e.g. [..., 1] per chain).
        noise: [..., D] standard normal draws, supplied by the caller so that randomness stays explicit.
    """
    return x + step_size * score + (2 * step_size) ** 0.5 * noise
