"""Inner loops make no host round trips, checked on the CPU with ``host_reads`` (see there why it matters)."""

import collections

import pytest
import torch
from host_reads import round_trips
from models_exact import ProbabilisticPCA
from pyro import poutine
from pyro.poutine.util import prune_subsample_sites

from ppgen.evaluate import elbo, log_likelihood
from ppgen.infer import fit
from ppgen.models import VAE
from ppgen.models.diffusion import DDPM
from ppgen.models.flow_density import FlowDensity


def _sample(num_steps, sampler):
    ddpm = DDPM(6, num_steps=num_steps, hidden=[8]).eval()
    settings = {"langevin": {"noise_levels": 1000, "langevin_steps": 2}, "pc": {"corrector_steps": 2}}
    return lambda: ddpm.sample(3, sampler=sampler, **settings.get(sampler, {}))


@pytest.mark.parametrize("sampler", ["ancestral", "pc", "langevin"])
def test_diffusion_samplers_do_not_round_trip_per_step(sampler):
    short, long = (round_trips(_sample(num_steps, sampler)) for num_steps in (30, 60))
    assert short == long


def _score_training_program(num_steps):
    ddpm = DDPM(6, num_steps=num_steps, hidden=[8], time_subsample=4)
    x = torch.rand(5, 6)

    def run():
        guide_trace = poutine.trace(ddpm.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(ddpm.model, trace=guide_trace)).get_trace(x)
        prune_subsample_sites(model_trace).log_prob_sum()  # as the ELBOs score it

    return run


def test_the_diffusion_training_program_does_not_round_trip_per_time_step():
    short, long = (round_trips(_score_training_program(num_steps)) for num_steps in (30, 60))
    assert short == long
    assert short["tensor"] == 0  # no tensor made from a Python number on the data's device


def _evaluate_chain(num_steps):
    ddpm = DDPM(6, num_steps=num_steps, hidden=[8]).eval()
    x = torch.rand(4, 6)

    def run():
        ddpm.chain_elbo(x, steps_per_call=5)
        log_likelihood(ddpm.chain_model, ddpm.chain_guide, x, num_samples=6, chunk_size=6)

    return run


def test_the_diffusion_chain_elbo_and_importance_weights_do_not_round_trip_per_step():
    short, long = (round_trips(_evaluate_chain(num_steps)) for num_steps in (30, 60))
    assert short == long


def _evaluate_ppca(x, chunk_size, memory_budget):
    ppca = ProbabilisticPCA()
    log_likelihood(ppca.model, ppca.approximate_guide, x, num_samples=5, chunk_size=chunk_size)
    elbo(ppca.model, ppca.approximate_guide, x, num_particles=5, memory_budget=memory_budget)


@pytest.mark.parametrize(("chunk_size", "memory_budget"), [(None, None), (50, 1.0)])
def test_the_evaluator_does_not_round_trip_per_chunk(chunk_size, memory_budget):
    """Only the passes that read the plates and probe the memory read from the device (Pyro's validation);
    a budget of 1 byte makes one pair per call, the most chunks there can be."""
    few, many = (round_trips(_evaluate_ppca, ProbabilisticPCA().sample(n), chunk_size, memory_budget) for n in (10, 40))
    assert few["__bool__"] == many["__bool__"] and not few["item"] and not many["item"]


def test_a_vae_evaluation_reads_nothing_back_in_its_chunks():
    vae = VAE(data_dim=12, latent_dim=3, hidden=[8])
    x = torch.bernoulli(torch.full((30, 12), 0.4))
    few = round_trips(log_likelihood, vae.model, vae.guide, x, num_samples=10, chunk_size=300)
    many = round_trips(log_likelihood, vae.model, vae.guide, x, num_samples=10, chunk_size=7)
    assert few == many


def _evaluate_flow(flow, x):
    log_likelihood(flow.model, flow.guide, x, num_samples=1, chunk_size=5)
    flow.log_prob(x)


@pytest.mark.parametrize("family", ["realnvp", "maf", "nice"])
def test_a_flow_density_does_not_round_trip_per_chunk(family):
    flow = FlowDensity(4, family, layers=2, hidden=[8])
    few, many = (round_trips(_evaluate_flow, flow, torch.randn(n, 4)) for n in (10, 40))
    assert few == many


@pytest.mark.parametrize(
    "options",
    [
        {"elbo": "trace"},
        {"elbo": "meanfield"},
        {"elbo": "iwae", "num_particles": 3},
        {"elbo": "trace", "jit": True},
        {"elbo": "meanfield", "jit": True},
        {"elbo": "trace", "precision": "bf16"},
    ],
)
def test_training_reads_nothing_back_between_log_intervals(options):
    """Steps add no host reads: the losses are read (and checked for NaN) once per log interval, here longer than
    both runs; validation (two batches) reads its total once per epoch."""
    x = torch.bernoulli(torch.full((40, 12), 0.4), generator=torch.Generator().manual_seed(0))

    def train(epochs):
        vae = VAE(data_dim=12, latent_dim=3, hidden=[8])
        fit(vae.model, vae.guide, x, x[:20], epochs=epochs, batch_size=10, log_every=1000, progress=False, **options)

    few, many = round_trips(train, 1), round_trips(train, 3)
    assert many == few + collections.Counter(item=2)
