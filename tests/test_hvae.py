import pyro
import pytest
import torch
from pyro import poutine

from ppgen.evaluate import elbo, log_likelihood
from ppgen.models import HierarchicalVAE
from ppgen.plates import PlateStructure, inspect_plates


def _hvae(structure, **options):
    pyro.set_rng_seed(0)
    return HierarchicalVAE(
        data_dim=10, latent_dims=[4, 3, 2], hidden=[8], latent_hidden=[6], structure=structure, **options
    )


@pytest.mark.parametrize("structure", ["top_down", "bottom_up"])
def test_model_and_guide_hold_one_site_per_layer_inside_the_data_plate(structure):
    hvae = _hvae(structure)
    x = torch.rand(5, 10).round()
    guide_trace = poutine.trace(hvae.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(hvae.model, trace=guide_trace)).get_trace(x)
    shapes = {name: guide_trace.nodes[name]["value"].shape for name in ("z_1", "z_2", "z_3")}
    assert shapes == {"z_1": (5, 4), "z_2": (5, 3), "z_3": (5, 2)}
    assert [n for n in model_trace.nodes if n.startswith("z")] == ["z_3", "z_2", "z_1"]
    assert inspect_plates(hvae.model, hvae.guide, x) == PlateStructure(1, True)


def test_the_ladder_guide_weights_its_message_and_the_prior_by_precision():
    hvae = _hvae("top_down")
    x = torch.rand(5, 10).round()
    trace = poutine.trace(hvae.guide).get_trace(x)
    z_2 = trace.nodes["z_2"]["value"]
    features = hvae.paths[0](x)  # d_1
    m, raw_s = hvae.messages[0](features).chunk(2, dim=-1)
    s = torch.nn.functional.softplus(raw_s) + 1e-4
    prior = hvae.priors[0](z_2).base_dist
    precision = s.pow(-2) + prior.scale.pow(-2)
    q = trace.nodes["z_1"]["fn"].base_dist
    torch.testing.assert_close(q.scale, precision.rsqrt())
    torch.testing.assert_close(q.loc, (m * s.pow(-2) + prior.loc * prior.scale.pow(-2)) / precision)


def test_the_ladder_guide_shares_the_generative_top_down_path():
    hvae = _hvae("top_down")
    trace = poutine.trace(hvae.guide).get_trace(torch.rand(5, 10).round())
    trace.log_prob_sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in hvae.priors.parameters())


@pytest.mark.parametrize("structure", ["top_down", "bottom_up"])
@pytest.mark.parametrize("family", ["diagonal", "iaf"])
def test_bounds_of_each_guide(structure, family):
    hvae = _hvae(structure, guide_family=family)
    x = torch.rand(6, 10).round()
    result = log_likelihood(hvae.model, hvae.guide, x, num_samples=200)
    bound = elbo(hvae.model, hvae.guide, x, num_particles=200)
    assert result.estimate.shape == bound.shape == (6,)
    assert (bound < result.estimate + 4 * result.stderr).all()  # ELBO <= log p(x), up to Monte-Carlo error
    assert hvae.sample(7).shape == (7, 10) and hvae.reconstruct(x).shape == (6, 10)
