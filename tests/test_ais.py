"""Annealed importance sampling of log Z (ppgen.evaluate.ais) against normalizers known exactly or by quadrature."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppgen.data import load_data
from ppgen.evaluate.ais import ais, log_mean_exp_with_stderr
from ppgen.models import EBM


def _mixture() -> dist.Distribution:
    """A normalized 2-D mixture of two well-separated anisotropic Gaussians."""
    locs = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    scales = torch.tensor([[0.5, 0.3], [0.4, 0.6]])
    components = dist.Normal(locs, scales).to_event(1)
    return dist.MixtureSameFamily(dist.Categorical(torch.tensor([0.3, 0.7])), components)


def test_ais_finds_the_normalizer_of_a_gaussian_mixture_within_three_standard_errors():
    """f = e^3 * (a normalized mixture), so log Z = 3 exactly. AIS's estimate is consistent with a delta-method
    standard error; its downward bias (Jensen) is of order stderr^2 / 2, negligible next to 3 stderr."""
    pyro.set_rng_seed(0)
    mixture, base = _mixture(), dist.Normal(torch.zeros(2), 3.0).to_event(1)
    result = ais(lambda x: mixture.log_prob(x) + 3.0, base, num_steps=200, num_chains=500)
    assert 0 < result.stderr < 0.1
    assert abs(result.log_z.item() - 3.0) < 3 * result.stderr.item()
    assert result.samples.shape == (500, 2) and result.accept_prob.shape == (200,)
    # The final positions are from the mixture: about 70% of them near the heavier component at x_1 = 2
    # (binomial standard error sqrt(0.21 / 500) = 0.02; 0.1 is 5 of them).
    assert abs((result.samples[:, 0] > 0).double().mean().item() - 0.7) < 0.1


def test_ais_from_the_target_itself_has_equal_weights_and_no_error():
    """When f is the base times a constant c, every log-weight is log c exactly: log Z = log c, stderr 0, ESS = C."""
    pyro.set_rng_seed(0)
    base = dist.Normal(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 2.0])).to_event(1)
    result = ais(lambda x: base.log_prob(x) + 1.5, base, num_steps=5, num_chains=64)
    assert result.log_z.item() == pytest.approx(1.5, abs=1e-5)
    assert result.stderr.item() < 1e-3 and result.effective_sample_size.item() == pytest.approx(64, rel=1e-4)


def test_log_mean_exp_with_stderr_is_the_delta_method():
    """For weights w: log mean w, sqrt(Var[w] / C) / mean w with the unbiased variance, and (sum w)^2 / sum w^2."""
    weights = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    log_mean, stderr, ess = log_mean_exp_with_stderr(weights.log())
    assert log_mean.item() == pytest.approx(math.log(3.0))
    assert stderr.item() == pytest.approx(math.sqrt(weights.var().item() / 4) / 3.0)
    assert ess.item() == pytest.approx(12.0**2 / 50.0)


def test_ais_refuses_a_single_chain():
    base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    with pytest.raises(ValueError, match="num_chains >= 2"):
        ais(base.log_prob, base, num_steps=3, num_chains=1)


def test_ais_log_z_of_a_random_ebm_matches_a_grid_on_moons():
    """A small untrained EBM on moons: exp(-E) = N(x; m, S) exp(-f(x)) with a random network f. Its log Z on a
    600 x 600 grid over [-8, 8]^2 agrees with a 300 x 300 grid to 1e-4 (a smooth, fast-decaying integrand; the base's
    largest standard deviation is under 2, so the tails beyond 8 hold less than e^-8 of the mass even where f tilts
    them), so the grid's error is far below AIS's; AIS must agree within 3 of its standard errors plus 1e-3."""
    pyro.set_rng_seed(0)
    x = load_data("moons", binarize="none", num_examples=500).train.x
    ebm = EBM(2, hidden=[16, 16], ais_steps=100, ais_chains=500)
    ebm.fit_base(x)
    with torch.no_grad():
        grids = []
        for size in (300, 600):
            axis = torch.linspace(-8.0, 8.0, size)
            cell = (16.0 / (size - 1)) ** 2
            grids.append((-ebm.energy(torch.cartesian_prod(axis, axis))).logsumexp(0).item() + math.log(cell))
    assert abs(grids[0] - grids[1]) < 1e-4
    result = ebm.log_normalizer()
    assert abs(result.log_z.item() - grids[1]) < 3 * result.stderr.item() + 1e-3
