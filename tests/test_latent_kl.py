"""The per-site KL diagnostic against closed forms."""

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine

from ppgen.evaluate import latent_kl
from ppgen.models.hvae import HierarchicalVAE
from ppgen.models.vae import VAE


def test_a_vae_site_matches_the_closed_form_kl_within_monte_carlo_error():
    pyro.set_rng_seed(0)
    vae = VAE(12, latent_dim=3, hidden=(8,))
    x = torch.bernoulli(torch.full((200, 12), 0.3))
    num_samples = 20
    estimate = latent_kl(vae.model, vae.guide, (x,), num_samples=num_samples)

    q = poutine.trace(vae.guide).get_trace(x).nodes["z"]["fn"]
    prior = dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1)
    exact = torch.distributions.kl_divergence(q, prior).mean()
    # The estimate averages N * S independent draws of log q(z) - log p(z); its standard error is their
    # standard deviation / sqrt(N * S), estimated here from fresh draws. 4 standard errors.
    z = q.sample((num_samples,))
    gaps = q.log_prob(z) - prior.log_prob(z)
    stderr = gaps.std() / (gaps.numel() ** 0.5)
    assert list(estimate) == ["z"]
    assert abs(estimate["z"] - exact) < 4 * stderr


def test_a_hierarchical_vae_reports_every_layer_and_the_kls_make_up_the_elbo_gap():
    pyro.set_rng_seed(1)
    hvae = HierarchicalVAE(10, latent_dims=(4, 2), hidden=(8,), latent_hidden=(6,))
    x = torch.bernoulli(torch.full((50, 10), 0.5))
    estimate = latent_kl(hvae.model, hvae.guide, (x,), num_samples=1)
    assert list(estimate) == ["z_2", "z_1"]  # the ladder guide draws the top layer first
    # With one draw the figures are exactly log q - log p at that draw: replaying the same draw, the
    # log-weight is log p(x | z_1) minus their sum.
    pyro.set_rng_seed(2)
    guide_trace = poutine.trace(hvae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(hvae.model, trace=guide_trace)).get_trace(x)
    pyro.set_rng_seed(2)
    kl = latent_kl(hvae.model, hvae.guide, (x,), num_samples=1)
    log_weight = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
    likelihood = model_trace.nodes["x"]["fn"].log_prob(x).sum()
    assert torch.isclose(likelihood - log_weight, torch.tensor(sum(kl.values()) * len(x)), rtol=1e-5)
