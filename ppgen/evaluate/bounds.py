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

Discrete model sites marked for enumeration (``infer={"enumerate": "parallel"}``, ``config_enumerate``) are
summed out exactly rather than sampled: the model runs under ``poutine.enum`` with its enumeration dimensions left
of the sample plate, and log p(x, z) is contracted over them plate by plate (per example when they lie in the
data plate) with ``pyro.ops.contract.contract_to_tensor`` (tensor variable elimination, Obermeyer et al. 2019,
arXiv:1902.03210). With an empty guide, such a model's weights are all exactly log p(x).

The K samples are vectorized with an outer plate, so models must broadcast over extra leading batch
dimensions as Pyro's vectorized particles require; pass ``vectorize=False`` for one that does not.
Work is chunked over examples and samples so that at most ``chunk_size`` (example, sample) pairs are
evaluated at once, which keeps memory bounded for K = 5000 on 10,000 images. Without a ``chunk_size``
one is chosen from the memory free on the data's device (``choose_chunk_size``): a probe chunk is run,
its memory measured, and as many pairs as fit in the budget go into each call, all K samples of an
example together where they fit. Samples, log-weights and the running logsumexp stay on the device;
nothing is read back to the host until the caller reads the result.

A chunk's samples are drawn in one vectorized call, so with a random guide the draws, and the estimate
within its Monte-Carlo error, depend on the chunking: pass ``chunk_size`` for figures that repeat
bit for bit on machines with different free memory.
"""

import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.ops import packed
from pyro.ops.contract import contract_to_tensor
from pyro.poutine.util import prune_subsample_sites

from ppgen.errors import PpgenError
from ppgen.plates import DATA_PLATE, PlateStructure, inspect_plates
from ppgen.progress import reporter

__all__ = [
    "LogLikelihood",
    "elbo",
    "log_likelihood",
    "choose_chunk_size",
    "probe_bytes_per_pair",
    "free_memory",
    "MEMORY_FRACTION",
    "CPU_ACTIVATION_FACTOR",
    "DEFAULT_CPU_MEMORY",
    "MIN_ESS_FRACTION",
    "MIN_ESS",
    "effective_sample_size_warning",
]

_SAMPLE_PLATE = "_ppgen_samples"

MEMORY_FRACTION = 0.5
"""Share of the device's free memory an evaluation may use by default; the rest absorbs the allocator's
fragmentation and the error of the per-pair estimate."""

CPU_ACTIVATION_FACTOR = 4.0
"""On the CPU, the memory of a pair is estimated as this many times the bytes of the tensors in its traces
(distribution parameters, values, log-densities). Those are the networks' outputs; the hidden layers and the
elementwise temporaries of the log-densities come on top. For the 784-200-200-50 Bernoulli VAE the peak
resident memory of a 100,000-pair call was 3.1 times the traced bytes; 4 leaves a margin."""

DEFAULT_CPU_MEMORY = 2 * 1024**3
"""Bytes of RAM the CPU evaluator counts on: the available RAM (from psutil, when installed) capped at this, so
that the chunks, and with them the draws, are the same on every machine with at least this much free."""

MIN_ESS_FRACTION, MIN_ESS = 0.05, 2.0
"""An importance-sampled log p(x) whose effective sample size is below MIN_ESS_FRACTION of K (or below MIN_ESS) has
weights dominated by a few samples: its standard error, estimated from the spread of those same weights, leaves out
the larger weights not drawn, and is no error bar (``effective_sample_size_warning``)."""

_PROBE_PAIRS = 1024  # (example, sample) pairs in the chunk whose memory is measured
PROGRESS_DELAY = 5.0  # seconds before an evaluation shows a progress bar on a terminal


@dataclass(frozen=True)
class LogLikelihood:
    """Importance-sampled log p(x) and its Monte-Carlo standard error (delta method).

    estimate, stderr, effective_sample_size: [N] per example, or [] for the whole batch when the model
    has global latents. The effective sample size (sum w)^2 / sum w^2 lies between 1 and K; when it is
    a small fraction of K the weights are dominated by a few samples and the stderr understates the
    error (a guide far from the posterior, or too few samples).
    shared_stderr: the standard error of the mean over examples when their errors are one shared error (an
        estimate of log Z common to all examples, as with AIS), rather than independent; None when independent.
    """

    estimate: torch.Tensor
    stderr: torch.Tensor
    effective_sample_size: torch.Tensor
    num_samples: int
    shared_stderr: float | None = None
    warning: str | None = None  # what the estimator saw that makes its figure doubtful, in one line

    def mean_stderr(self) -> float:
        """The standard error of the mean of ``estimate`` over examples."""
        if self.shared_stderr is not None:
            return self.shared_stderr
        return (self.stderr.square().sum().sqrt() / self.estimate.numel()).item()

    @property
    def per_example(self) -> bool:
        return self.estimate.dim() == 1


@torch.no_grad()
def elbo(
    model: Callable,
    guide: Callable,
    *data: torch.Tensor,
    num_particles: int = 1,
    chunk_size: int | None = None,
    memory_budget: float | None = None,
    vectorize: bool = True,
) -> torch.Tensor:
    """The ELBO estimated with num_particles samples: [N] per example, or [] for global latents, on the
    data's device. chunk_size, memory_budget: as for ``log_likelihood``."""
    total = None
    label = "ELBO" if num_particles == 1 else f"ELBO ({num_particles} particles)"
    chunks = _log_weight_chunks(model, guide, data, num_particles, chunk_size, memory_budget, vectorize, label)
    for rows, log_weights in chunks:
        total = _accumulate(total, rows, log_weights.sum(0), torch.add, 0.0, data)
    return total / num_particles


@torch.no_grad()
def log_likelihood(
    model: Callable,
    guide: Callable,
    *data: torch.Tensor,
    num_samples: int = 1000,
    chunk_size: int | None = None,
    memory_budget: float | None = None,
    vectorize: bool = True,
) -> LogLikelihood:
    """Importance-sampled log p(x) with the guide as proposal, from num_samples samples per example.

    The standard error is the delta-method one, sqrt(Var[w] / K) / mean[w], computed from the running
    sums of w and w^2 in log space; it is 0 when the guide is the exact posterior.

    Args:
        model, guide: the pair, called as ``model(*data)``; data: tensors [N, ...] on one device.
        num_samples: K.
        chunk_size: (example, sample) pairs per vectorized call; None chooses it with ``choose_chunk_size``.
        memory_budget: bytes the chosen chunks may use; None is MEMORY_FRACTION of ``free_memory``.
        vectorize: draw a chunk's samples in one call under a sample plate (False: one pass per sample).
    Returns:
        A LogLikelihood whose tensors are on the data's device.
    """
    lse, lse_squared = None, None
    label = f"log-likelihood (K = {num_samples})"
    chunks = _log_weight_chunks(model, guide, data, num_samples, chunk_size, memory_budget, vectorize, label)
    for rows, log_weights in chunks:
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


def effective_sample_size_warning(effective_sample_size: float, num_samples: int) -> str | None:
    """A line saying why an importance-sampled estimate with this (median) effective sample size of K =
    ``num_samples`` has no meaningful standard error, and what to do; None when the ESS is large enough."""
    if effective_sample_size >= max(MIN_ESS, MIN_ESS_FRACTION * num_samples):
        return None
    return (
        f"the importance-sampled NLL has a median effective sample size of {effective_sample_size:.1f} of K ="
        f" {num_samples}: a few samples carry the weights, so its +- (estimated from those same weights) is no error"
        " bar, and the NLL is in practice an upper bound on -log p(x). Raise K (evaluation.num_samples, or ppgen"
        " evaluate --num-samples), or bring the guide closer to the posterior (train longer, guide.family = 'iaf', or"
        " inference.elbo = 'iwae')"
    )


def _accumulate(total, rows, part, combine, identity, data):
    """Fold a chunk's values (per example [len(rows)], or whole-batch []) into the running result."""
    if total is None:
        shape = (data[0].shape[0],) if part.dim() else ()
        total = torch.full(shape, identity, dtype=part.dtype, device=part.device)
    if part.dim() == 0:
        return combine(total, part)
    total[rows] = combine(total[rows], part)
    return total


def free_memory(device: torch.device | str) -> int:
    """Bytes free for new tensors on ``device``: on CUDA what the driver reports free plus what torch's caching
    allocator holds unused; on the CPU the available RAM from psutil capped at DEFAULT_CPU_MEMORY (that figure
    without psutil)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        import psutil
    except ImportError:
        return DEFAULT_CPU_MEMORY
    return min(psutil.virtual_memory().available, DEFAULT_CPU_MEMORY)


@torch.no_grad()
def probe_bytes_per_pair(
    model: Callable, guide: Callable, *data: torch.Tensor, num_samples: int, vectorize: bool = True
) -> float:
    """Memory, in bytes, that one (example, sample) pair takes in a vectorized call, from a probe chunk of about
    1024 pairs: on CUDA its peak allocated memory (this resets the device's peak-memory statistics); on the CPU
    CPU_ACTIVATION_FACTOR times the bytes of the tensors in its traces. Fixed costs (parameters, a per-example
    encoder pass) are charged to the pairs too, which errs on the safe side. The probe draws from torch's
    global generator."""
    structure = _inspect(model, guide, data, num_samples)
    return _probe_bytes_per_pair(model, guide, data, num_samples, structure, vectorize)


@torch.no_grad()
def choose_chunk_size(
    model: Callable,
    guide: Callable,
    *data: torch.Tensor,
    num_samples: int,
    memory_budget: float | None = None,
    vectorize: bool = True,
) -> int:
    """The (example, sample) pairs per vectorized call that fit in ``memory_budget`` bytes (default
    MEMORY_FRACTION of ``free_memory`` of the data's device), given ``probe_bytes_per_pair``; at least 1,
    at most all N K pairs."""
    structure = _inspect(model, guide, data, num_samples)
    return _choose_chunk_size(model, guide, data, num_samples, memory_budget, structure, vectorize)


def _inspect(model, guide, data, num_samples) -> PlateStructure:
    if num_samples < 1:
        raise PpgenError(f"num_samples must be at least 1, got {num_samples}")
    probe = max(1, min(data[0].shape[0], _PROBE_PAIRS // num_samples))
    return inspect_plates(model, guide, *(x[:probe] for x in data))


def _choose_chunk_size(model, guide, data, num_samples, memory_budget, structure, vectorize) -> int:
    if memory_budget is None:
        memory_budget = MEMORY_FRACTION * free_memory(data[0].device)
    if not memory_budget > 0:
        raise PpgenError(f"memory_budget must be a positive number of bytes, got {memory_budget}")
    per_pair = _probe_bytes_per_pair(model, guide, data, num_samples, structure, vectorize)
    all_pairs = data[0].shape[0] * num_samples
    return int(max(1, min(all_pairs, memory_budget // per_pair)))


def _probe_bytes_per_pair(model, guide, data, num_samples, structure, vectorize) -> float:
    num_examples = data[0].shape[0]
    examples = max(1, min(num_examples, _PROBE_PAIRS // num_samples)) if structure.per_example else num_examples
    samples = max(1, min(num_samples, _PROBE_PAIRS // examples))
    if not vectorize:
        samples = 1  # a pass holds one sample at a time
    chunk = tuple(x[:examples] for x in data)
    device = data[0].device
    with pyro.validation_enabled(False):  # as the chunks will run
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            _log_weights(model, guide, chunk, samples, structure, vectorize)
            used = torch.cuda.max_memory_allocated(device) - before
        else:
            traces = _traces(model, guide, chunk, samples, structure, vectorize)
            used = CPU_ACTIVATION_FACTOR * _traced_bytes(traces)
    return max(float(used), 1.0) / (examples * samples)


def _traces(model, guide, data, num_samples, structure, vectorize):
    """The (model, guide) traces of one vectorized pass over num_samples samples, log-densities computed."""
    if vectorize and num_samples > 1:
        with pyro.plate(_SAMPLE_PLATE, num_samples, dim=-(structure.max_plate_nesting + 1)):
            traces = _trace_pair(model, guide, data, structure)
    else:
        traces = _trace_pair(model, guide, data, structure)
    for trace in traces:
        trace.compute_log_prob()
    return traces


def _traced_bytes(traces: Iterable) -> int:
    """Bytes of the distinct tensors held by the sample sites of traces (each view counted by the memory it
    spans, a broadcast dimension counting once)."""
    spans = {}
    for trace in traces:
        for site in trace.nodes.values():
            if site["type"] == "sample":
                for tensor in _site_tensors(site):
                    extent = math.prod(n for n, stride in zip(tensor.shape, tensor.stride()) if stride)
                    key = (tensor.data_ptr(), tensor.dtype, extent)
                    spans[key] = extent * tensor.element_size()
    return sum(spans.values())


def _site_tensors(site: dict) -> Iterator[torch.Tensor]:
    """A site's value, log-density and the tensors of its distribution (through wrappers such as Independent)."""
    yield from (site[key] for key in ("value", "log_prob") if isinstance(site.get(key), torch.Tensor))
    fn = site["fn"]
    while fn is not None:
        yield from (value for value in vars(fn).values() if isinstance(value, torch.Tensor))
        fn = getattr(fn, "base_dist", None)


def _log_weight_chunks(
    model, guide, data, num_samples, chunk_size, memory_budget, vectorize, label
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Yield (rows, log_weights) with log_weights [S, len(rows)] for per-example models, or [S] for
    models with global latents (rows = all), over chunks covering all examples and num_samples samples; a phase
    longer than a few seconds shows its progress as ``label`` (``ppgen.progress``: the run's setting)."""
    num_examples = data[0].shape[0]
    structure = _inspect(model, guide, data, num_samples)
    if chunk_size is None:
        chunk_size = _choose_chunk_size(model, guide, data, num_samples, memory_budget, structure, vectorize)
    if structure.per_example:
        examples_per_call = max(1, chunk_size // num_samples)
        samples_per_call = min(num_samples, chunk_size)
    else:
        examples_per_call = num_examples
        samples_per_call = max(1, min(num_samples, chunk_size // num_examples))
    done = 0
    with reporter(label, num_examples * num_samples, "sample", delay=PROGRESS_DELAY) as bar:
        for start in range(0, num_examples, examples_per_call):
            rows = slice(start, min(start + examples_per_call, num_examples))
            chunk = tuple(x[rows] for x in data)
            for first in range(0, num_samples, samples_per_call):
                count = min(samples_per_call, num_samples - first)
                # The structure's pass ran with validation as the caller set it; checking every chunk's arguments,
                # supports and NaNs again would read a flag back from the device several times per chunk.
                with pyro.validation_enabled(False):
                    log_weights = _log_weights(model, guide, chunk, count, structure, vectorize)
                yield rows, log_weights
                done += (rows.stop - rows.start) * count
                bar.update(done)


def _log_weights(model, guide, data, num_samples, structure, vectorize) -> torch.Tensor:
    """log p(x, z) - log q(z | x) for num_samples draws z ~ q: [S, N], or [S] with global latents."""
    if not vectorize or num_samples == 1:  # one sample needs no sample plate, so any model can take it
        return torch.cat([_log_weights_of_one_pass(model, guide, data, structure) for _ in range(num_samples)])
    with pyro.plate(_SAMPLE_PLATE, num_samples, dim=-(structure.max_plate_nesting + 1)):
        return _log_weights_of_one_pass(model, guide, data, structure)


def _trace_pair(model, guide, data, structure) -> tuple:
    """(model trace, guide trace) of one pass, subsample sites pruned; the model's enumerated sites take every
    value, along dimensions left of the plates and the sample plate."""
    guide_trace = poutine.trace(guide).get_trace(*data)
    if structure.enumerated:
        model = poutine.enum(model, first_available_dim=-(structure.max_plate_nesting + 2))
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*data)
    return prune_subsample_sites(model_trace), prune_subsample_sites(guide_trace)


def _log_weights_of_one_pass(model, guide, data, structure) -> torch.Tensor:
    model_trace, guide_trace = _trace_pair(model, guide, data, structure)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    total, summed_out = _summed_out(model_trace, structure) if structure.enumerated else (0.0, set())
    for trace, sign in ((model_trace, 1.0), (guide_trace, -1.0)):
        for name, site in trace.nodes.items():
            if site["type"] != "sample" or (sign < 0 and site["is_observed"]) or (sign > 0 and name in summed_out):
                continue
            total = total + sign * _reduce(site["log_prob"], _data_dim(site), structure)
    return total


def _summed_out(model_trace, structure: PlateStructure) -> tuple[torch.Tensor, set[str]]:
    """The log of the sum over the enumerated values of the product of the model's densities that depend on them,
    contracted plate by plate down to the sample plate (and the data plate when per example), and the names of
    the sites whose densities it holds."""
    model_trace.pack_tensors()
    symbols = model_trace.plate_to_symbol
    sum_dims = {site["infer"]["_enumerate_symbol"] for site in _enumerated_sites(model_trace)}
    tree, sizes, names, data_dim = OrderedDict(), {}, set(), None
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample" or sum_dims.isdisjoint(site["packed"]["log_prob"]._pyro_dims):
            continue
        log_prob = site["packed"]["log_prob"]
        ordinal = frozenset(symbols[f.name] for f in site["cond_indep_stack"] if f.vectorized)
        tree.setdefault(ordinal, []).append(log_prob)
        sizes.update(zip(log_prob._pyro_dims, log_prob.shape))
        names.add(name)
        data_dim = _data_dim(site) if data_dim is None else data_dim
    kept = [_SAMPLE_PLATE] + ([DATA_PLATE] if structure.per_example else [])
    target = frozenset(symbols[name] for name in kept if symbols.get(name) in sizes)  # a size-1 plate is packed away
    log_prob = packed.unpack(contract_to_tensor(tree, sum_dims, target_ordinal=target), model_trace.symbol_to_dim)
    return _reduce(log_prob, data_dim, structure), names


def _enumerated_sites(trace) -> list[dict]:
    return [site for site in trace.nodes.values() if site["type"] == "sample" and "_enumerate_symbol" in site["infer"]]


def _data_dim(site: dict) -> int | None:
    """The dimension of a site's ``"data"`` plate, None outside it."""
    return next((f.dim for f in site["cond_indep_stack"] if f.name == DATA_PLATE), None)


def _reduce(log_prob: torch.Tensor, data_dim: int | None, structure: PlateStructure) -> torch.Tensor:
    """Sum a log-density over every plate but the sample plate (and the data plate, at ``data_dim``, when per
    example)."""
    width = structure.max_plate_nesting + 1
    log_prob = log_prob.reshape((1,) * (width - log_prob.dim()) + log_prob.shape)
    keep = {-width}
    if structure.per_example:
        keep.add(data_dim)
    others = [d for d in range(-width, 0) if d not in keep]
    return log_prob.sum(others) if others else log_prob
