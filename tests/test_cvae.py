import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from ppgen.data import load_data
from ppgen.errors import PpgenError
from ppgen.evaluate import class_log_joint, classify
from ppgen.infer import fit
from ppgen.models import ConditionalVAE


@pytest.fixture
def cvae():
    pyro.set_rng_seed(0)
    return ConditionalVAE(data_dim=12, num_classes=3, latent_dim=2, hidden=[8])


@pytest.mark.parametrize("call", ["model", "guide"])
def test_label_free_use_fails_with_a_clear_message(cvae, call):
    with pytest.raises(PpgenError, match="needs labels: call it with \\(x, y\\)"):
        getattr(cvae, call)(torch.zeros(4, 12))


def test_labels_must_be_class_indices(cvae):
    with pytest.raises(PpgenError, match="got torch.float32 of shape \\(4, 3\\)"):
        cvae.model(torch.zeros(4, 12), torch.zeros(4, 3))


def test_samples_and_transfers_follow_the_label(cvae):
    labels = torch.tensor([0, 1, 2])
    assert cvae.sample(labels).shape == (3, 12)
    x, source = torch.rand(3, 12).round(), torch.tensor([0, 0, 0])
    torch.testing.assert_close(cvae.transfer(x, source, source), cvae.reconstruct(x, source))
    assert not torch.allclose(cvae.transfer(x, source, labels), cvae.reconstruct(x, source))


class _GaussianClasses:
    """x | y, z ~ N(mu_y + w z, s^2 I), z ~ N(0, 1): p(x | y) = N(mu_y, s^2 I + w w^T) exactly, and the
    exact posterior of z is a guide with zero-variance importance weights."""

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.means = 2 * torch.randn(3, 4, generator=generator, dtype=torch.float64)
        self.w = torch.randn(4, generator=generator, dtype=torch.float64)
        self.s = 0.7
        self.log_prior = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).log()

    def model(self, x, y):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
            pyro.sample("x", dist.Normal(self.means[y] + z.unsqueeze(-1) * self.w, self.s).to_event(1), obs=x)

    def guide(self, x, y):
        precision = 1 + self.w @ self.w / self.s**2
        loc = ((x - self.means[y]) @ self.w / self.s**2) / precision
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, precision**-0.5))

    def exact_log_joint(self, x):
        covariance = self.s**2 * torch.eye(4, dtype=torch.float64) + torch.outer(self.w, self.w)
        columns = [dist.MultivariateNormal(mean, covariance).log_prob(x) for mean in self.means]
        return torch.stack(columns, dim=-1) + self.log_prior


def test_classification_by_likelihood_adds_the_class_prior_to_the_conditional_likelihood():
    pair = _GaussianClasses()
    x = pair.means[torch.tensor([0, 1, 2, 1])] + torch.randn(4, 4, dtype=torch.float64)
    scores = class_log_joint(pair.model, pair.guide, x, pair.log_prior, num_samples=5)
    torch.testing.assert_close(scores, pair.exact_log_joint(x), rtol=0, atol=1e-9)
    assert torch.equal(classify(pair.model, pair.guide, x, pair.log_prior, 5), pair.exact_log_joint(x).argmax(-1))


@pytest.mark.slow
def test_a_trained_cvae_classifies_digits_far_above_chance():
    """Chance is 0.1 with a standard error of sqrt(0.09 / 359) = 0.016 on the 359 test digits; 0.5 is 25
    standard errors above it, and a working model lands well above that after a short training."""
    splits = load_data("digits", binarize="dynamic")
    counts = torch.bincount(splits.train.y).double()
    pyro.set_rng_seed(0)
    cvae = ConditionalVAE(64, 10, latent_dim=4, hidden=[128], class_log_prior=(counts / counts.sum()).log())
    fit(
        cvae.model,
        cvae.guide,
        (splits.train.x, splits.train.y),
        epochs=40,
        batch_size=64,
        batch_transform=splits.batch_transform(),
        progress=False,
    )
    predictions = classify(cvae.model, cvae.guide, splits.test.x, cvae.class_log_prior, num_samples=50)
    accuracy = (predictions == splits.test.y).double().mean().item()
    assert accuracy > 0.5, accuracy
    assert math.isfinite(accuracy)
