import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

from ppgen.errors import PpgenError
from ppgen.evaluate import elbo, log_likelihood
from ppgen.models import DDPM
from ppgen.models.diffusion_parts import DiscretizedNormal, noise_schedule
from ppgen.samplers.langevin import langevin_proposal

Z = 4.0


def _ddpm(**options):
    pyro.set_rng_seed(0)
    # beta from 2e-4 to 2e-3 at T = 1000, scaled by 1000 / T, keeps every beta below 1 for T >= 4.
    settings = dict(data_dim=3, num_steps=4, hidden=[8], time_dim=4, levels=5, beta_start=2e-4, beta_end=2e-3)
    return DDPM(**{**settings, **options})


def _pixels(n=6, levels=5):
    return torch.randint(0, levels, (n, 3), generator=torch.Generator().manual_seed(1)).float() / (levels - 1)


def test_a_linear_schedule_too_short_for_its_betas_is_refused():
    with pytest.raises(ValueError, match="must stay below 1: use more steps than 20"):
        noise_schedule(20, "linear")


def test_schedules():
    linear = noise_schedule(1000, "linear")
    assert linear[0].item() == pytest.approx(1e-4) and linear[-1].item() == pytest.approx(0.02)
    short = noise_schedule(100, "linear")
    assert short[-1].item() == pytest.approx(0.2)  # scaled by 1000 / T
    for betas in (linear, short, noise_schedule(100, "cosine")):
        alpha_bar_T = torch.prod(1 - betas)
        assert ((betas > 0) & (betas <= 0.999)).all() and alpha_bar_T < 1e-3


def test_forward_marginals_compose_the_forward_steps():
    """Pushing N(y_0, 0) through y_t = sqrt(alpha_t) y_t-1 + sqrt(beta_t) eps gives mean sqrt(abar_t) y_0 and
    variance 1 - abar_t: the recursion on (mean factor, variance) must land on the stored buffers."""
    ddpm = _ddpm(num_steps=50)
    factor, variance = 1.0, 0.0
    for t in range(1, 51):
        alpha = ddpm.alphas[t].double()
        factor, variance = alpha.sqrt() * factor, alpha * variance + ddpm.betas[t].double()
        assert factor.item() == pytest.approx(ddpm.alpha_bars[t].sqrt().item(), rel=1e-5)
        assert variance.item() == pytest.approx(1 - ddpm.alpha_bars[t].item(), rel=1e-5, abs=1e-7)


def test_forward_posterior_is_bayes_rule():
    """q(y_t-1 | y_t, y_0) is proportional to q(y_t | y_t-1) q(y_t-1 | y_0), a product of Gaussians."""
    ddpm = _ddpm(num_steps=50)
    y0, y_t = torch.randn(4, 3), torch.randn(4, 3)
    for t in (2, 10, 50):
        alpha, beta, previous = ddpm.alphas[t], ddpm.betas[t], ddpm.alpha_bars[t - 1]
        precision = 1 / (1 - previous) + alpha / beta
        loc = (previous.sqrt() * y0 / (1 - previous) + alpha.sqrt() * y_t / beta) / precision
        q = ddpm.forward_posterior(y0, y_t, torch.tensor(t)).base_dist
        torch.testing.assert_close(q.loc, loc, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(q.scale, precision.rsqrt().expand(4, 3), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(("loc", "scale"), [(0.3, 0.1), (0.0, 1e-4), (2.0, 0.05), (-5.0, 3.0), (0.5, 40.0)])
def test_a_discretized_normal_puts_mass_one_on_its_levels(loc, scale):
    levels = 17
    values = torch.arange(levels, dtype=torch.float64) / (levels - 1)
    d = DiscretizedNormal(torch.tensor(loc, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64), levels)
    log_probs = d.log_prob(values)
    assert torch.isfinite(log_probs).all()
    assert log_probs.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    inner = torch.distributions.Normal(torch.tensor(loc, dtype=torch.float64), scale)
    mass = inner.cdf(torch.tensor(5.5 / 16, dtype=torch.float64)) - inner.cdf(
        torch.tensor(4.5 / 16, dtype=torch.float64)
    )
    assert log_probs[5].exp().item() == pytest.approx(mass.item(), rel=1e-6, abs=1e-12)


def test_the_programs_need_data():
    with pytest.raises(PpgenError, match="conditions on data x; draw new examples with sample"):
        _ddpm().model()


def test_the_score_is_the_scaled_noise_prediction():
    ddpm = _ddpm()
    y, t = torch.randn(5, 3), torch.tensor(3)
    torch.testing.assert_close(ddpm.score(y, t), -ddpm.net(y, t) / (1 - ddpm.alpha_bars[3]).sqrt())


def _estimates(loss, parameters, direction, draws):
    """Values of a stochastic loss and of its gradient projected on ``direction``, over independent draws."""
    values, projections = [], []
    for _ in range(draws):
        for p in parameters:
            p.grad = None
        value = loss()
        value.backward()
        values.append(value.item())
        projections.append(sum((p.grad * d).sum() for p, d in zip(parameters, direction)).item())
    return torch.tensor(values, dtype=torch.float64), torch.tensor(projections, dtype=torch.float64)


@pytest.mark.slow
def test_the_subsampled_training_objective_is_unbiased_for_the_whole_chain_elbo():
    """Three estimators of the same ELBO and of its gradient (projected on a random direction): the training
    program with one of the T - 1 = 3 steps drawn per example, scored by Monte Carlo (Trace_ELBO) and in
    closed form (TraceMeanField_ELBO), and the whole-chain pair (every step of one forward trajectory).
    Their means must agree within 4 standard errors of the differences."""
    ddpm = _ddpm(time_subsample=1)
    x = _pixels()
    parameters = list(ddpm.parameters())
    direction = [torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) for i, p in enumerate(parameters)]
    pyro.set_rng_seed(2)
    estimators = {
        "subsampled, Monte Carlo": lambda: Trace_ELBO(max_plate_nesting=2).differentiable_loss(
            ddpm.model, ddpm.guide, x
        ),
        "subsampled, closed form": lambda: TraceMeanField_ELBO(max_plate_nesting=2).differentiable_loss(
            ddpm.model, ddpm.guide, x
        ),
        "whole chain": lambda: Trace_ELBO(max_plate_nesting=1).differentiable_loss(
            ddpm.chain_model, ddpm.chain_guide, x
        ),
    }
    results = {name: _estimates(loss, parameters, direction, 2000) for name, loss in estimators.items()}
    reference_values, reference_gradients = results["whole chain"]
    for name in ("subsampled, Monte Carlo", "subsampled, closed form"):
        values, gradients = results[name]
        for a, b in ((values, reference_values), (gradients, reference_gradients)):
            stderr = math.hypot(a.std().item(), b.std().item()) / math.sqrt(len(a))
            assert abs(a.mean() - b.mean()) < Z * stderr, name
    closed_form = torch.stack([ddpm.chain_elbo(x) for _ in range(2000)]).sum(-1)
    stderr = math.hypot(closed_form.std().item(), reference_values.std().item()) / math.sqrt(2000)
    assert abs(-closed_form.mean() - reference_values.mean()) < Z * stderr


def test_generic_bounds_of_the_training_pair_and_the_chain_pair():
    ddpm = _ddpm()
    x = _pixels()
    assert elbo(ddpm.model, ddpm.guide, x, num_particles=4).shape == (6,)
    result = log_likelihood(ddpm.chain_model, ddpm.chain_guide, x, num_samples=50, chunk_size=16)
    assert result.estimate.shape == (6,) and torch.isfinite(result.estimate).all()
    closed_form = torch.stack([ddpm.chain_elbo(x) for _ in range(200)]).mean(0)
    assert (closed_form < result.estimate + Z * result.stderr + 0.5).all()  # E[L_K] >= ELBO; 0.5: spread of 200 draws


@pytest.mark.parametrize("sampler", ["ancestral", "pc", "langevin"])
@pytest.mark.parametrize("decoder", ["discretized_gaussian", "bernoulli"])
def test_samplers_return_pixels(sampler, decoder):
    ddpm = _ddpm(num_steps=6, decoder=decoder)
    samples = ddpm.sample(5, sampler=sampler)
    assert samples.shape == (5, 3) and ((samples >= 0) & (samples <= 1)).all()
    draws = ddpm.sample(5, mean=False, sampler=sampler)
    assert set((draws * 4).round().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0, 4.0}


def test_the_unet_handles_images_and_the_sample_plate():
    pyro.set_rng_seed(0)
    ddpm = DDPM(
        64, (8, 8), num_steps=5, network="unet", channels=8, time_dim=8, levels=17, time_subsample=2, beta_end=2e-3
    )
    x = torch.randint(0, 17, (3, 64)).float() / 16
    assert log_likelihood(ddpm.chain_model, ddpm.chain_guide, x, num_samples=3).estimate.shape == (3,)
    assert elbo(ddpm.model, ddpm.guide, x, num_particles=2).shape == (3,)
    assert ddpm.sample(2).shape == (2, 64)


def test_langevin_steps_keep_a_gaussian_at_the_known_stationary_variance():
    """For a N(0, 1) target, x' = (1 - e) x + sqrt(2 e) z is stationary at variance 1 / (1 - e / 2) (the
    unadjusted chain's O(e) bias). 20,000 independent chains after 200 steps: the sample variance has
    standard error about v sqrt(2 / 20000)."""
    torch.manual_seed(0)
    step, chains = 0.2, 20000
    x = torch.randn(chains, 1, dtype=torch.float64) * 3
    for _ in range(200):
        x = langevin_proposal(x, -x, step, torch.randn_like(x))
    stationary = 1 / (1 - step / 2)
    assert abs(x.var().item() - stationary) < Z * stationary * math.sqrt(2 / chains)
    assert abs(x.mean().item()) < Z * math.sqrt(stationary / chains)
