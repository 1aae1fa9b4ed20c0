"""Langevin dynamics: the proposal step that annealed Langevin sampling and predictor-corrector samplers
compose, the Metropolis-Hastings rule that MALA pairs it with, and ULA's exact bias on a Gaussian target
(the kernels built from them are in ``ppgen.infer.langevin_kernels``)."""

import torch

__all__ = [
    "langevin_step",
    "mala_log_accept_ratio",
    "metropolis_accept_prob",
    "ula_gaussian_stationary_covariance",
]


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


def mala_log_accept_ratio(
    x: torch.Tensor,
    log_density: torch.Tensor,
    score: torch.Tensor,
    x_new: torch.Tensor,
    log_density_new: torch.Tensor,
    score_new: torch.Tensor,
    step_size: torch.Tensor | float,
) -> torch.Tensor:
    """log [p(x_new) q(x | x_new)] - log [p(x) q(x_new | x)]: the Metropolis-Hastings log ratio that makes the
    Langevin proposal exact (MALA; Roberts & Tweedie 1996, Bernoulli 2(4), 341-363, doi:10.2307/3318418).

    Args:
        x, x_new: [..., D] the current and the proposed point.
        log_density, log_density_new: [...] log p at them, up to the same constant.
        score, score_new: [..., D] grad log p at them.
        step_size: the step size the proposal was made with.
    Returns:
        [...] the log ratio; it is antisymmetric in (current, proposed), which is detailed balance.

    q(x_new | x) is the Langevin proposal N(x + h score, 2 h I) of ``langevin_step``; both proposals have covariance
    2 h I, so their normalizers cancel: log q(x | x_new) - log q(x_new | x)
    = (|x_new - x - h score|^2 - |x - x_new - h score_new|^2) / (4 h).
    """
    forward = x_new - x - step_size * score
    backward = x - x_new - step_size * score_new
    return log_density_new - log_density + ((forward**2 - backward**2) / (4 * step_size)).sum(-1)


def metropolis_accept_prob(log_ratio: torch.Tensor) -> torch.Tensor:
    """min(1, exp(log_ratio)), elementwise; NaN (a proposal whose log density overflowed) gives 0."""
    return torch.nan_to_num(log_ratio, nan=-torch.inf).clamp(max=0).exp()


def ula_gaussian_stationary_covariance(covariance: torch.Tensor, step_size: torch.Tensor | float) -> torch.Tensor:
    """The covariance of the stationary law of ULA (``langevin_step`` with no accept rule) on a N(m, S) target.

    With score -S^-1 (x - m) a step is x' - m = A (x - m) + sqrt(2 h) xi with A = I - h S^-1, so the stationary
    law is N(m, V) with V = A V A + 2 h I, whose solution (A and S commute) is V = S (I - h S^-1 / 2)^-1: each
    eigenvalue s of S becomes s / (1 - h / (2 s)). The mean is exact, the variance too large by a factor
    1 + h / (2 s) + O(h^2); the chain diverges unless h < 2 s for every eigenvalue. For h = s in 1-D the draws
    are independent N(m, 2 s). See also Durmus & Moulines, arXiv:1507.05021, for ULA's bias in general.

    Args:
        covariance: [..., D, D] the target's covariance S.
        step_size: h, a number or a tensor broadcasting against [..., 1, 1].
    Returns:
        [..., D, D] the stationary covariance V (meaningful only when h < 2 * the smallest eigenvalue of S).
    """
    precision = torch.linalg.inv(covariance)
    return torch.linalg.inv(precision - 0.5 * step_size * precision @ precision)
