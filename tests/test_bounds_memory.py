"""Chunk sizes chosen from free memory: the figures do not depend on the chunking, and the chunks fit the budget.

Exact checks only: with the exact posterior as guide every log-weight equals log p(x), and with an approximate
guide the estimate must equal, to float64 rounding, the logsumexp of the very draws the guide made, however they
were split into calls.
"""

import math
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from models_exact import ProbabilisticPCA

from ppgen.errors import PpgenError
from ppgen.evaluate.bounds import (
    DEFAULT_CPU_MEMORY,
    choose_chunk_size,
    elbo,
    free_memory,
    log_likelihood,
    probe_bytes_per_pair,
)
from ppgen.models import VAE

NUM_EXAMPLES, NUM_SAMPLES = 24, 300


@pytest.fixture(scope="module")
def ppca():
    return ProbabilisticPCA()


@pytest.fixture(scope="module")
def x(ppca):
    return ppca.sample(NUM_EXAMPLES)


@pytest.fixture(scope="module")
def bytes_per_pair(ppca, x):
    return probe_bytes_per_pair(ppca.model, ppca.approximate_guide, x, num_samples=NUM_SAMPLES)


def _budgets(bytes_per_pair):
    """Budgets for: part of one example's samples per call, a few examples per call, everything in one call."""
    return [bytes_per_pair * pairs for pairs in (NUM_SAMPLES // 7, 5 * NUM_SAMPLES, 10 * NUM_EXAMPLES * NUM_SAMPLES)]


class RecordingGuide:
    """ppca.approximate_guide, keeping every call's x and z so that the test can redo the estimator's sums."""

    def __init__(self, ppca):
        self.ppca, self.calls = ppca, []

    def __call__(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.ppca.approximate_posterior(x))
        self.calls.append((x, z))


def _log_weights_of_the_draws(ppca, calls, x):
    """Per example, the log-weights log p(x, z) - log q(z | x) of the draws of the calls that evaluated all
    N K pairs (the last calls: before them come the passes that read the plates and probe the memory)."""
    weights = [[] for _ in range(len(x))]
    pairs = 0
    for x_call, z in reversed(calls):
        if pairs == NUM_EXAMPLES * NUM_SAMPLES:
            break
        z = z.reshape(-1, *x_call.shape[:1], z.shape[-1])  # [S, n, k]
        log_joint = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_joint = log_joint + dist.Normal(z @ ppca.W.T + ppca.mu, ppca.sigma).log_prob(x_call).sum(-1)
        log_weight = log_joint - ppca.approximate_posterior(x_call).log_prob(z)
        for row, column in zip((x_call[:, None] == x[None]).all(-1).nonzero()[:, 1], log_weight.T):
            weights[row].append(column)
        pairs += log_weight.numel()
    assert pairs == NUM_EXAMPLES * NUM_SAMPLES
    return [torch.cat(w) for w in weights]


def test_any_budget_gives_the_exact_log_likelihood_with_the_exact_posterior(ppca, x, bytes_per_pair):
    results = [
        log_likelihood(ppca.model, ppca.exact_guide, x, num_samples=NUM_SAMPLES, memory_budget=budget)
        for budget in _budgets(bytes_per_pair)
    ]
    results.append(log_likelihood(ppca.model, ppca.exact_guide, x, num_samples=NUM_SAMPLES, chunk_size=113))
    for result in results:
        torch.testing.assert_close(result.estimate, ppca.log_evidence(x), rtol=0, atol=1e-10)
        torch.testing.assert_close(result.estimate, results[0].estimate, rtol=0, atol=1e-12)
        torch.testing.assert_close(
            result.effective_sample_size, torch.full((NUM_EXAMPLES,), float(NUM_SAMPLES), dtype=torch.float64)
        )


def test_any_chunking_gives_the_logsumexp_of_the_draws_made(ppca, x, bytes_per_pair):
    """The chunked on-device logsumexp equals one logsumexp over all K draws of each example, for chunkings
    that split an example's samples over calls, put several examples in a call, or do everything at once."""
    for budget in _budgets(bytes_per_pair):
        pyro.set_rng_seed(0)
        guide = RecordingGuide(ppca)
        result = log_likelihood(ppca.model, guide, x, num_samples=NUM_SAMPLES, memory_budget=budget)
        weights = _log_weights_of_the_draws(ppca, guide.calls, x)
        assert all(len(w) == NUM_SAMPLES for w in weights)
        expected = torch.stack([w.logsumexp(0) for w in weights]) - math.log(NUM_SAMPLES)
        torch.testing.assert_close(result.estimate, expected, rtol=0, atol=1e-10)
        squared = torch.stack([(2 * w).logsumexp(0) for w in weights])
        ess = torch.exp(2 * (expected + math.log(NUM_SAMPLES)) - squared)
        torch.testing.assert_close(result.effective_sample_size, ess, rtol=1e-10, atol=0)


def test_the_same_seed_and_budget_give_the_same_figures(ppca, x, bytes_per_pair):
    budget = _budgets(bytes_per_pair)[1]
    runs = []
    for _ in range(2):
        pyro.set_rng_seed(3)
        runs.append(
            log_likelihood(ppca.model, ppca.approximate_guide, x, num_samples=NUM_SAMPLES, memory_budget=budget)
        )
    assert torch.equal(runs[0].estimate, runs[1].estimate) and torch.equal(runs[0].stderr, runs[1].stderr)


@pytest.mark.parametrize("budget_index", [0, 1, 2])
def test_the_calls_fit_the_memory_budget(ppca, x, bytes_per_pair, budget_index):
    budget = _budgets(bytes_per_pair)[budget_index]
    chunk_size = choose_chunk_size(ppca.model, ppca.approximate_guide, x, num_samples=NUM_SAMPLES, memory_budget=budget)
    assert chunk_size * bytes_per_pair <= budget
    assert chunk_size == min(NUM_EXAMPLES * NUM_SAMPLES, int(budget // bytes_per_pair))
    guide = RecordingGuide(ppca)
    log_likelihood(ppca.model, guide, x, num_samples=NUM_SAMPLES, memory_budget=budget)
    pairs_per_call = [z.shape[:-1].numel() for _, z in guide.calls[2:]]  # after the plate and memory probes
    assert max(pairs_per_call) * bytes_per_pair <= budget
    assert sum(pairs_per_call) == NUM_EXAMPLES * NUM_SAMPLES


def test_a_budget_below_one_pair_evaluates_one_pair_at_a_time_and_a_huge_one_everything_at_once(ppca, x):
    tiny = choose_chunk_size(ppca.model, ppca.exact_guide, x, num_samples=NUM_SAMPLES, memory_budget=1)
    huge = choose_chunk_size(ppca.model, ppca.exact_guide, x, num_samples=NUM_SAMPLES, memory_budget=1e15)
    assert (tiny, huge) == (1, NUM_EXAMPLES * NUM_SAMPLES)
    with pytest.raises(PpgenError, match="memory_budget must be a positive number of bytes"):
        log_likelihood(ppca.model, ppca.exact_guide, x, num_samples=NUM_SAMPLES, memory_budget=0)


def test_the_pair_estimate_grows_with_the_observed_dimension():
    """On the CPU a pair is charged the bytes of its traced tensors; a decoder of 4x the outputs costs more,
    by at least the factor times the extra float32 logits (and the estimate does not depend on N)."""
    x_small, x_large = torch.zeros(50, 100), torch.zeros(50, 400)
    small = probe_bytes_per_pair(*_vae_pair(100), x_small, num_samples=64)
    large = probe_bytes_per_pair(*_vae_pair(400), x_large, num_samples=64)
    assert large - small >= 4 * 300 * 4  # CPU_ACTIVATION_FACTOR * 300 extra logits * 4 bytes
    assert probe_bytes_per_pair(*_vae_pair(100), x_small[:20], num_samples=64) == small


def _vae_pair(data_dim):
    torch.manual_seed(0)
    vae = VAE(data_dim=data_dim, latent_dim=4, hidden=[16])
    return vae.model, vae.guide


def test_global_latents_are_chunked_over_samples_within_the_budget():
    from models_exact import ConjugateNormalMean

    model = ConjugateNormalMean()
    x = model.sample(40)
    per_pair = probe_bytes_per_pair(model.model, model.exact_guide, x, num_samples=64)
    budget = per_pair * 40 * 5  # five samples of the whole batch per call
    assert choose_chunk_size(model.model, model.exact_guide, x, num_samples=64, memory_budget=budget) == 200
    result = log_likelihood(model.model, model.exact_guide, x, num_samples=64, memory_budget=budget)
    torch.testing.assert_close(result.estimate, model.log_evidence(x), rtol=0, atol=1e-9)


def test_elbo_takes_a_budget_too(ppca, x, bytes_per_pair):
    for budget in _budgets(bytes_per_pair):
        bound = elbo(ppca.model, ppca.exact_guide, x, num_particles=NUM_SAMPLES, memory_budget=budget)
        torch.testing.assert_close(bound, ppca.log_evidence(x), rtol=0, atol=1e-10)


def test_free_memory_on_the_cpu_comes_from_psutil_capped_at_a_fixed_figure(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now raises ImportError
    assert free_memory("cpu") == DEFAULT_CPU_MEMORY
    monkeypatch.setitem(sys.modules, "psutil", _FakePsutil)
    assert free_memory(torch.device("cpu")) == 12345
    # More RAM than the cap gives the cap: chunks, and so draws, are the same on any machine with that much.
    monkeypatch.setattr(_FakePsutil._Memory, "available", 100 * DEFAULT_CPU_MEMORY)
    assert free_memory("cpu") == DEFAULT_CPU_MEMORY


class _FakePsutil:
    class _Memory:
        available = 12345

    @staticmethod
    def virtual_memory():
        return _FakePsutil._Memory()


def test_the_default_budget_is_a_share_of_the_free_memory(ppca, x, bytes_per_pair, monkeypatch):
    import ppgen.evaluate.bounds as bounds

    monkeypatch.setattr(bounds, "free_memory", lambda device: 2 * 1000 * bytes_per_pair)
    chunk_size = choose_chunk_size(ppca.model, ppca.approximate_guide, x, num_samples=NUM_SAMPLES)
    assert chunk_size == int(bounds.MEMORY_FRACTION * 2 * 1000)
