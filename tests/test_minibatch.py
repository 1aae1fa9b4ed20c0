import pyro
import pyro.distributions as dist
import pytest
import torch
from models_exact import ConjugateNormalMean
from pyro import poutine

from ppgen.infer.minibatch import ScaleDataPlate, epoch_order


def test_epoch_order_is_a_seeded_permutation():
    order = epoch_order(1000, seed=3, epoch=7)
    assert torch.equal(order.sort().values, torch.arange(1000))
    assert torch.equal(order, epoch_order(1000, seed=3, epoch=7))
    assert not torch.equal(order, epoch_order(1000, seed=3, epoch=8))
    assert not torch.equal(order, epoch_order(1000, seed=4, epoch=7))


def test_epoch_order_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    epoch_order(100, seed=0, epoch=0)
    assert torch.equal(torch.rand(3), expected)


def _scaled_log_joint(model, x, num_data, mu):
    conditioned = poutine.condition(ScaleDataPlate(num_data)(model), data={"mu": mu})
    return poutine.trace(conditioned).get_trace(x).log_prob_sum()


def test_sites_in_the_data_plate_are_rescaled_and_global_sites_are_not():
    model = ConjugateNormalMean()
    x, mu = model.sample(12), torch.tensor(0.7, dtype=torch.float64)
    prior = dist.Normal(0.0, model.tau).log_prob(mu)
    likelihood = dist.Normal(mu, model.sigma).log_prob(x)
    batch = x[:4]
    expected = prior + 12 / 4 * likelihood[:4].sum()
    torch.testing.assert_close(_scaled_log_joint(model.model, batch, 12, mu), expected)
    # Averaged over the batches of an epoch, the rescaled log-joint is the full-data one: unbiased.
    batches = [_scaled_log_joint(model.model, part, 12, mu) for part in x.split(4)]
    torch.testing.assert_close(torch.stack(batches).mean(), prior + likelihood.sum())


def test_a_plate_that_already_subsamples_is_left_alone():
    def model(x, rows):
        with pyro.plate("data", 12, subsample=rows):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    x, rows = torch.randn(4), torch.tensor([0, 3, 5, 9])
    trace = poutine.trace(ScaleDataPlate(12)(model)).get_trace(x, rows)
    assert trace.nodes["x"]["scale"] == pytest.approx(3.0)  # 12 / 4 from the plate itself, and nothing more
