import pyro
import pytest
import torch
from pyro import poutine

from ppgen.models import VAE, build_model
from ppgen.spec.schema import VAESpec


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "continuous_bernoulli"])
def test_model_and_guide_agree_on_their_sites_and_shapes(likelihood):
    vae = VAE(data_dim=10, latent_dim=3, hidden=[8, 6], likelihood=likelihood)
    x = torch.rand(7, 10).round()
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    assert guide_trace.nodes["z"]["value"].shape == (7, 3)
    assert model_trace.nodes["x"]["is_observed"] and torch.equal(model_trace.nodes["x"]["value"], x)
    assert [f.name for f in model_trace.nodes["z"]["cond_indep_stack"]] == ["data"]
    assert torch.isfinite(model_trace.log_prob_sum()) and torch.isfinite(guide_trace.log_prob_sum())


def test_the_guide_depends_on_the_data_and_the_decoder_mirrors_the_encoder():
    vae = VAE(data_dim=10, latent_dim=3, hidden=[8, 6])
    widths = [layer.out_features for layer in vae.decoder.net if isinstance(layer, torch.nn.Linear)]
    assert widths == [6, 8, 10]
    q0, q1 = vae.encoder(torch.zeros(1, 10)), vae.encoder(torch.ones(1, 10))
    assert not torch.equal(q0.mean, q1.mean)


def test_prior_predictive_samples_and_reconstructions():
    pyro.set_rng_seed(0)
    vae = VAE(data_dim=10, latent_dim=3, hidden=[8])
    assert vae.model().shape == (1, 10)
    means = vae.sample(5)
    assert means.shape == (5, 10) and ((means > 0) & (means < 1)).all()
    draws = vae.sample(5, mean=False)
    assert set(draws.unique().tolist()) <= {0.0, 1.0}
    x = torch.rand(4, 10).round()
    assert vae.reconstruct(x).shape == (4, 10)
    assert not torch.is_grad_enabled() or vae.reconstruct(x).grad_fn is None


def test_a_spec_builds_the_model_it_describes():
    spec = VAESpec(kind="vae", latent_dim=4, hidden=[9], activation="relu", likelihood="gaussian", likelihood_scale=0.2)
    vae = build_model(spec, event_shape=(12,))
    assert isinstance(vae, VAE) and vae.latent_dim == 4 and vae.data_dim == 12
    assert isinstance(vae.encoder.trunk[1], torch.nn.ReLU)
    assert vae.decoder.scale() == pytest.approx(0.2)
