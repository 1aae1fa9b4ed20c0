"""Flow invariants (invertibility, log-det against the autograd Jacobian, normalization, save/load) for every
family, and flow guides whose importance-sampled log-likelihood matches an exact answer."""

import math
import re

import pyro
import pyro.distributions as dist
import pytest
import torch
from models_exact import ProbabilisticPCA
from torch.autograd.functional import jacobian

from ppgen.errors import SpecError
from ppgen.evaluate import log_likelihood
from ppgen.flows import DENSITY_FLOWS, GUIDE_FLOWS, ConditionalFlow, DensityFlow
from ppgen.infer import fit
from ppgen.models import FlowDensity, build_model
from ppgen.nets import AmortizedNormal
from ppgen.spec.schema import FlowSpec, GuideSpec, HVAESpec, VAESpec

Z = 4.0


def _transforms(kind: str, family: str, dim: int = 3):
    torch.manual_seed(0)
    if kind == "guide":
        flow = ConditionalFlow(family, dim, context_dim=2, num_layers=2, hidden=[8]).double()
        return flow.transforms(torch.randn(2, dtype=torch.float64))
    # float32: Pyro 1.9's autoregressive inverse (MAF's density direction) allocates float32 buffers.
    return DensityFlow(family, dim, num_layers=2, hidden=[8]).distribution().transforms


CASES = [("guide", family) for family in GUIDE_FLOWS] + [("density", family) for family in DENSITY_FLOWS]


# Planar and radial layers have no closed-form inverse: Pyro inverts them only from the cache of the forward
# call, which is all a guide needs (it scores its own samples).
CACHE_ONLY_INVERSE = ("planar", "radial")


@pytest.mark.parametrize(("kind", "family"), CASES)
def test_each_layer_is_invertible_and_its_log_det_is_the_jacobians(kind, family):
    dtype = torch.float64 if kind == "guide" else torch.float32
    tolerance = 1e-6 if dtype == torch.float64 else 1e-4
    x = torch.randn(3, dtype=dtype)
    for transform in _transforms(kind, family):
        y = transform(x)
        # A new (detached) tensor misses the cache of the forward call, so the inverse is computed.
        inverse = transform.inv(y if family in CACHE_ONLY_INVERSE else y.detach())
        torch.testing.assert_close(inverse, x, rtol=tolerance, atol=tolerance)
        expected = torch.linalg.slogdet(jacobian(transform, x)).logabsdet
        log_det = transform.log_abs_det_jacobian(x, y).reshape(())
        torch.testing.assert_close(log_det, expected, rtol=tolerance, atol=tolerance)
        x = y.detach()


@pytest.mark.parametrize("family", DENSITY_FLOWS)
def test_a_density_integrates_to_one_on_a_grid(family):
    """Riemann sum over [-10, 10]^2 with spacing h = 0.02: the discretization error is O(h^2) and the mass
    beyond |x| = 10 is below 1e-10 for a flow this close to N(0, I), so 2e-3 is a safe tolerance."""
    torch.manual_seed(0)
    density = FlowDensity(2, family=family, layers=3, hidden=[16]).double()
    grid = torch.arange(-10, 10, 0.02, dtype=torch.float64) + 0.01
    points = torch.cartesian_prod(grid, grid)
    mass = density.log_prob(points).exp().sum() * 0.02**2
    assert abs(mass.item() - 1) < 2e-3


@pytest.mark.slow
def test_a_trained_density_still_integrates_to_one():
    from ppgen.data import make_toy

    x = make_toy("moons", 2000, seed=0)
    pyro.set_rng_seed(0)
    density = FlowDensity(2, family="realnvp", layers=4, hidden=[32, 32])
    fit(density.model, density.guide, x, epochs=20, batch_size=200, lr=3e-3, progress=False)
    grid = torch.arange(-8, 8, 0.02) + 0.01
    mass = density.log_prob(torch.cartesian_prod(grid, grid)).exp().sum() * 0.02**2
    assert abs(mass.item() - 1) < 1e-2  # float32 sums over 640,000 points
    # It has learned something: it beats the best Gaussian, whose mean log-density is -(D log 2 pi e + log|S|) / 2.
    gaussian = -(2 * math.log(2 * math.pi * math.e) + torch.logdet(torch.cov(x.T)).item()) / 2
    assert density.log_prob(x).mean().item() > gaussian


@pytest.mark.parametrize("family", DENSITY_FLOWS)
def test_a_density_survives_a_save_and_load(family, tmp_path):
    torch.manual_seed(0)
    density = FlowDensity(4, family=family, layers=2, hidden=[8])
    torch.save(density.state_dict(), tmp_path / "flow.pt")
    torch.manual_seed(1)
    restored = FlowDensity(4, family=family, layers=2, hidden=[8])
    restored.load_state_dict(torch.load(tmp_path / "flow.pt", weights_only=True))
    x = torch.randn(5, 4)
    torch.testing.assert_close(restored.log_prob(x), density.log_prob(x))


class _FlowGuide(torch.nn.Module):
    """An amortized flow guide whose base scale can be inflated after training."""

    def __init__(self, family):
        super().__init__()
        self.inflate = 1.0
        self.encoder = AmortizedNormal(5, [16], 2, "tanh", flow=family, flow_layers=2, flow_hidden=[16]).double()

    def guide(self, x):
        q = self.encoder(x)
        base = q.base_dist.base_dist
        with pyro.plate("data", x.shape[0]):
            pyro.sample(
                "z",
                dist.TransformedDistribution(
                    dist.Normal(base.loc, self.inflate * base.scale).to_event(1), q.transforms
                ),
            )


@pytest.mark.slow
@pytest.mark.parametrize("family", GUIDE_FLOWS)
def test_a_flow_guide_gives_an_importance_sampled_likelihood_within_four_standard_errors(family):
    """The importance weights divide by q(z | x) at the guide's own samples, so a wrong log-density of a
    flow (a missing log-det, a stale cache) biases the estimate far beyond its standard error. After
    training, the base scale is inflated 1.5 times: a guide with lighter tails than the posterior gives
    weights of infinite variance, whose standard error means nothing (their effective sample size shows it).

    Even so, a few examples keep heavy-tailed weights (the spline guide: effective sample sizes of 5-60 of
    2000). Their estimates then fall short of log p(x) by more than their standard errors, which miss the rare
    large weights too (z down to -10 over seeds), but never exceed it: L_K is biased downwards and its upper
    tail is light. So no estimate may lie more than Z standard errors above the exact value, and the mean z
    over the N examples must be within Z / sqrt(N) of 0 (a wrong density shifts every example)."""
    ppca = ProbabilisticPCA()
    x = ppca.sample(40)
    pyro.set_rng_seed(0)
    guide = _FlowGuide(family)
    fit(ppca.model, guide.guide, x, epochs=100, batch_size=40, lr=1e-2, progress=False)
    guide.inflate = 1.5
    pyro.set_rng_seed(1)
    result = log_likelihood(ppca.model, guide.guide, x, num_samples=2000)
    z_scores = (result.estimate - ppca.log_evidence(x)) / result.stderr
    assert z_scores.max() < Z and z_scores.mean().abs() < Z / math.sqrt(len(x))


@pytest.mark.parametrize(
    "model, guide, key",
    [
        (FlowSpec(family="maf", hidden=[32]), None, "model.hidden"),
        (VAESpec(latent_dim=8), GuideSpec(family="iaf", hidden=[4]), "guide.hidden"),
        (HVAESpec(latent_dims=[16, 4]), GuideSpec(family="spline", hidden=[8]), "guide.hidden"),
    ],
)
def test_an_autoregressive_flow_narrower_than_its_input_is_a_spec_error(model, guide, key):
    """Pyro's masked networks cannot connect an input wider than a hidden layer: say so with the key."""
    with pytest.raises(SpecError, match=rf"{re.escape(key)}.*hidden width >= .*\((64|8|16)\)"):
        build_model(model, (64,), guide)
