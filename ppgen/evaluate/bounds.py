"""Held-out bounds on log p(x) for any Pyro model/guide pair: the ELBO and the importance-sampled
log-likelihood (Burda, Grosse & Salakhutdinov 2015, arXiv:1509.00519).

Both call ``model(*data)`` and ``guide(*data)`` with tensors whose first dimension is the ``"data"``
plate. With K samples z_k ~ q(z | x), the log-weights are l_k = log p(x, z_k) - log q(z_k | x):

    ELBO             = mean_k l_k                     (an unbiased estimate of E_q[l] <= log p(x))
    log p(x) ~ L_K   = logsumexp_k l_k - log K        (E[L_K] rises with K towards log p(x))

When every sample site lies inside the ``"data"`` plate (a VAE's local z_i), the weights factorize
over examples and both are returned per example, shape [N]. When a site lies outside it (a global
latent such as regression weights), the weights are joint over the batch and the result is for the
whole batch, shape []: log p(x_1..N). The case is read off the traced sites, not the model's kind.

The K samples are vectorized with an outer plate, so models must broadcast over extra leading batch
dimensions as Pyro's vectorized particles require; pass ``vectorize=False`` for one that does not.
Work is chunked over examples and samples so that at most ``chunk_size`` (example, sample) pairs are
evaluated at once, which keeps memory bounded for K = 5000 on 10,000 images.
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ppgen.errors import PpgenError
from ppgen.plates import DATA_PLATE, PlateStructure, inspect_plates

__all__ = ["LogLikelihood", "elbo", "log_likelihood"]

_SAMPLE_PLATE = "_ppgen_samples"


@dataclass(frozen=True)
class LogLikelihood:
    """Importance-sampled log p(x) and its Monte-Carlo standard error (delta method).

    estimate, stderr, effective_sample_size: [N] per example, or [] for the whole batch when the model
    has global latents. The effective sample size (sum w)^2 / sum w^2 lies between 1 and K; when it is
    a small fraction of K the weights are dominated by a few samples and the stderr understates the
    error (a guide far from the posterior, or too few samples).
    """

    estimate: torch.Tensor
    stderr: torch.Tensor
    effective_sample_size: torch.Tensor
    num_samples: int

    @property
    def per_example(self) -> bool:
        return self.estimate.dim() == 1


@torch.no_grad()
def elbo(
    model: Callable,
    guide: Callable,
    *data: torch.Tensor,
    num_particles: int = 1,
    chunk_size: int = 8192,
    vectorize: bool = True,
) -> torch.Tensor:
    """The ELBO estimated with num_particles samples: [N] per example, or [] for global latents."""
    total = None
    for rows, log_weights in _log_weight_chunks(model, guide, data, num_particles, chunk_size, vectorize):
        total = _accumulate(total, rows, log_weights.sum(0), torch.add, 0.0, data)
    return total / num_particles


@torch.no_grad()
def log_likelihood(
    model: Callable,
    guide: Callable,
    *data: torch.Tensor,
    num_samples: int = 1000,
    chunk_size: int = 8192,
    vectorize: bool = True,
) -> LogLikelihood:
    """Importance-sampled log p(x) with the guide as proposal, from num_samples samples per example.

    The standard error is the delta-method one, sqrt(Var[w] / K) / mean[w], computed from the running
    sums of w and w^2 in log space; it is 0 when the guide is the exact posterior.
    """
    lse, lse_squared = None, None
    for rows, log_weights in _log_weight_chunks(model, guide, data, num_samples, chunk_size, vectorize):
        lse = _accumulate(lse, rows, log_weights.logsumexp(0), torch.logaddexp, -math.inf, data)
        lse_squared = _accumulate(lse_squared, rows, (2 * log_weights).logsumexp(0), torch.logaddexp, -math.inf, data)
    log_k = math.log(num_samples)
    estimate = lse - log_k
    effective_sample_size = torch.exp(2 * lse - lse_squared)
    if num_samples == 1:
        return LogLikelihood(estimate, torch.full_like(estimate, math.inf), effective_sample_size, num_samples)
    # K sum(w^2) / sum(w)^2 - 1 is the relative variance of w; divide by K - 1 for the mean's.
    relative_variance = torch.expm1(log_k + lse_squared - 2 * lse).clamp(min=0)
    stderr = (relative_variance / (num_samples - 1)).sqrt()
    return LogLikelihood(estimate, stderr, effective_sample_size, num_samples)


def _accumulate(total, rows, part, combine, identity, data):
    """Fold a chunk's values (per example [len(rows)], or whole-batch []) into the running result."""
    if total is None:
        shape = (data[0].shape[0],) if part.dim() else ()
        total = torch.full(shape, identity, dtype=part.dtype, device=part.device)
    if part.dim() == 0:
        return combine(total, part)
    total[rows] = combine(total[rows], part)
    return total


def _log_weight_chunks(model, guide, data, num_samples, chunk_size, vectorize) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, log_weights) with log_weights [S, len(rows)] for per-example models, or [S] for
    models with global latents (rows = all), over chunks covering all examples and num_samples samples."""
    if num_samples < 1:
        raise PpgenError(f"num_samples must be at least 1, got {num_samples}")
    num_examples = data[0].shape[0]
    probe = max(1, min(num_examples, chunk_size // num_samples))
    structure = inspect_plates(model, guide, *(x[:probe] for x in data))
    if structure.per_example:
        examples_per_call = max(1, chunk_size // num_samples)
        samples_per_call = min(num_samples, chunk_size)
    else:
        examples_per_call = num_examples
        samples_per_call = max(1, min(num_samples, chunk_size // num_examples))
    for start in range(0, num_examples, examples_per_call):
        rows = slice(start, min(start + examples_per_call, num_examples))
        chunk = tuple(x[rows] for x in data)
        for first in range(0, num_samples, samples_per_call):
            count = min(samples_per_call, num_samples - first)
            yield rows, _log_weights(model, guide, chunk, count, structure, vectorize)


def _log_weights(model, guide, data, num_samples, structure, vectorize) -> torch.Tensor:
    """log p(x, z) - log q(z | x) for num_samples draws z ~ q: [S, N], or [S] with global latents."""
    if not vectorize or num_samples == 1:  # one sample needs no sample plate, so any model can take it
        return torch.cat([_log_weights_of_one_pass(model, guide, data, structure) for _ in range(num_samples)])
    with pyro.plate(_SAMPLE_PLATE, num_samples, dim=-(structure.max_plate_nesting + 1)):
        return _log_weights_of_one_pass(model, guide, data, structure)


def _log_weights_of_one_pass(model, guide, data, structure) -> torch.Tensor:
    guide_trace = poutine.trace(guide).get_trace(*data)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*data)
    total = 0.0
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        trace = prune_subsample_sites(trace)
        trace.compute_log_prob()
        for site in trace.nodes.values():
            if site["type"] == "sample" and not (sign < 0 and site["is_observed"]):
                total = total + sign * _reduce(site, structure)
    return total


def _reduce(site: dict, structure: PlateStructure) -> torch.Tensor:
    """Sum a site's log-prob over every plate but the sample plate (and the data plate when per example)."""
    width = structure.max_plate_nesting + 1
    log_prob = site["log_prob"]
    log_prob = log_prob.reshape((1,) * (width - log_prob.dim()) + log_prob.shape)
    keep = {-width}
    if structure.per_example:
        keep.add(next(f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE))
    others = [d for d in range(-width, 0) if d not in keep]
    return log_prob.sum(others) if others else log_prob
