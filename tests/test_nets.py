import pyro.distributions as dist
import pytest
import torch
from torch import nn

from ppgen.nets import (
    ACTIVATIONS,
    LIKELIHOODS,
    MIN_SCALE,
    AmortizedNormal,
    GaussianLikelihood,
    SinusoidalEmbedding,
    TimeMLP,
    likelihood_head,
    mlp,
)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mlp_has_the_asked_widths_and_no_output_activation(activation):
    net = mlp(5, [7, 3], 2, activation)
    linears = [layer for layer in net if isinstance(layer, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(5, 7), (7, 3), (3, 2)]
    assert isinstance(net[-1], nn.Linear) and isinstance(net[1], ACTIVATIONS[activation])
    assert net(torch.randn(4, 6, 5)).shape == (4, 6, 2)


def test_amortized_normal_splits_the_head_into_location_and_positive_scale():
    head = AmortizedNormal(in_dim=4, hidden=[], latent_dim=2)
    with torch.no_grad():
        head.head.weight.copy_(torch.eye(4))
        head.head.bias.zero_()
    context = torch.tensor([[1.0, -2.0, -50.0, 0.0]])
    q = head(context)
    assert q.event_shape == (2,) and q.batch_shape == (1,)
    torch.testing.assert_close(q.mean, torch.tensor([[1.0, -2.0]]))
    expected_scale = torch.nn.functional.softplus(torch.tensor([[-50.0, 0.0]])) + MIN_SCALE
    torch.testing.assert_close(q.base_dist.scale, expected_scale)


def test_an_amortized_flow_is_a_transformed_distribution_over_the_latents():
    q = AmortizedNormal(in_dim=5, hidden=[7], latent_dim=3, flow="iaf", flow_layers=2, flow_hidden=[6])(
        torch.randn(4, 5)
    )
    z = q.rsample()
    assert z.shape == (4, 3) and q.log_prob(z).shape == (4,)


def test_time_embeddings_and_the_time_mlp_broadcast_over_steps():
    embedding = SinusoidalEmbedding(6)(torch.tensor([0, 5]))
    assert embedding.shape == (2, 6) and torch.equal(embedding[0], torch.tensor([0.0, 0, 0, 1, 1, 1]))
    net = TimeMLP(4, [8])
    assert net(torch.randn(3, 2, 4), torch.tensor([[1], [2], [3]])).shape == (3, 2, 4)


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_likelihood_heads_give_a_distribution_over_the_flattened_example(name):
    head = likelihood_head(name, nn.Linear(3, 6))
    p = head(torch.randn(2, 5, 3))
    assert p.batch_shape == (2, 5) and p.event_shape == (6,)
    x = torch.rand(2, 5, 6).round() if name == "bernoulli" else torch.rand(2, 5, 6)
    assert p.log_prob(x).shape == (2, 5) and torch.isfinite(p.log_prob(x)).all()
    assert ((p.mean >= 0) & (p.mean <= 1)).all() or name == "gaussian"


def test_a_fixed_gaussian_scale_is_not_learned_and_gives_the_normal_density():
    head = GaussianLikelihood(nn.Identity(), scale=0.5)
    assert [name for name, _ in head.named_parameters()] == []
    x, loc = torch.randn(3, 4), torch.randn(3, 4)
    expected = dist.Normal(loc, 0.5).log_prob(x).sum(-1)
    torch.testing.assert_close(head(loc).log_prob(x), expected)


def test_a_learned_gaussian_scale_is_one_shared_parameter():
    head = GaussianLikelihood(nn.Identity(), scale="learned")
    assert [name for name, _ in head.named_parameters()] == ["raw_scale"]
    p = head(torch.zeros(2, 3))
    assert p.base_dist.scale.unique().numel() == 1
