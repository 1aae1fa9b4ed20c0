"""The score-based family: its noise levels, its losses (checked with the exact score of a Gaussian), its samplers,
its probability-flow likelihood and its runs from the shipped specs."""

import math

import pyro
import pytest
import torch

import ppgen
from ppgen.evaluate.bounds import LogLikelihood
from ppgen.models import FAMILIES, ScoreModel, build_model
from ppgen.runner import run
from ppgen.spec.load import load_spec
from ppgen.spec.schema import RunSpec, SamplingSpec

MEAN = torch.tensor([0.5, -0.5])
COVARIANCE = torch.tensor([[1.0, 0.6], [0.6, 0.5]])
SIGMA_MIN, SIGMA_MAX = 0.01, 10.0


class ExactGaussianScore(ScoreModel):
    """The family with the exact score of N(MEAN, COVARIANCE) convolved with N(0, sigma^2 I), plus ``shift``."""

    def __init__(self, shift=(0.0, 0.0), mean=MEAN, **options):
        super().__init__(2, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, **options)
        self.shift, self.mean = torch.tensor(shift), mean

    def score(self, x, t):
        noised = COVARIANCE + self.sigma(t)[..., None, None] ** 2 * torch.eye(2)
        return -torch.linalg.solve(noised, (x - self.mean).unsqueeze(-1)).squeeze(-1) + self.shift


def gaussian_data(n, seed=0):
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed))
    return MEAN + noise @ torch.linalg.cholesky(COVARIANCE).T


def test_levels_are_geometric_from_sigma_max_to_sigma_min():
    model = ScoreModel(3, hidden=[8], sigma_min=0.1, sigma_max=10.0, num_levels=5)
    torch.testing.assert_close(model.sigmas, torch.tensor([10.0, 10**0.5, 1.0, 10**-0.5, 0.1]))
    # the network is conditioned on t, so it is defined between the levels too
    assert torch.isfinite(model.score(torch.randn(4, 3), torch.tensor(0.37))).all()


@pytest.mark.parametrize("objective", ["dsm", "ssm"])
def test_loss_of_the_exact_score_is_lower_by_the_weighted_fisher_divergence(objective):
    """A score off by a constant c has a loss higher by E[sigma^2] ||c||^2 / 2 in expectation (for both objectives,
    since E[s(x)] = 0 under p_sigma); with the same levels and noise (paired draws) the difference is checked within
    4 standard errors. E[sigma^2] over t ~ U(0, 1) is (sigma_max^2 - sigma_min^2) / (2 log(sigma_max / sigma_min))."""
    x, shift = gaussian_data(20000), (0.3, -0.2)
    losses = []
    for model in (ExactGaussianScore(objective=objective), ExactGaussianScore(shift, objective=objective)):
        pyro.set_rng_seed(1)
        losses.append(model.loss(x).detach())
    difference = losses[1] - losses[0]
    mean_sigma_squared = (SIGMA_MAX**2 - SIGMA_MIN**2) / (2 * math.log(SIGMA_MAX / SIGMA_MIN))
    expected = mean_sigma_squared * (0.3**2 + 0.2**2) / 2
    stderr = difference.std() / math.sqrt(len(x))
    assert difference.mean() > 0
    assert abs(difference.mean() - expected) < 4 * stderr


def test_discrete_levels_draw_from_the_l_levels():
    model = ExactGaussianScore(training_levels="discrete", num_levels=4)
    pyro.set_rng_seed(0)
    assert model.loss(gaussian_data(100)).shape == (100,)
    assert ScoreModel(2, objective="ssm").objective == "ssm_loss" and ScoreModel.objective == "dsm_loss"


def zero_output_model(dim, **options):
    """A score model whose network F outputs 0: its score is the preconditioning's baseline alone."""
    model = ScoreModel(dim, hidden=[16], **options)
    torch.nn.init.zeros_(model.net.out.weight)
    torch.nn.init.zeros_(model.net.out.bias)
    return model


def test_the_untrained_preconditioning_is_the_datas_diagonal_gaussian():
    """Issue 16's diverging trajectories: the preconditioning's baseline (F = 0) was the score of N(0, 0.5^2 I) for
    every pixel, against digits' border pixels of scale 0.017, so the network had to cancel its skip term there and,
    off the data, the learned denoiser's Jacobian got eigenvalues down to -4 (the exact one is positive
    semi-definite) along which the probability-flow ODE blew up. Now F = 0 is, in every dimension, the exact score of
    the data's diagonal Gaussian N(mu, diag(s^2)) convolved with N(0, sigma^2 I), with mu and s those of the first
    training batch: checked far from the data, in a dimension 100 times narrower than another, to float32 rounding."""
    means, scales = torch.tensor([0.5, -1.0, 0.2]), torch.tensor([1.0, 0.3, 0.01])
    x = means + scales * torch.randn(4096, 3, generator=torch.Generator().manual_seed(0))
    model = zero_output_model(3)
    model.loss(x)  # the first training batch sets the statistics
    torch.testing.assert_close(model.data_mean, x.mean(0))
    torch.testing.assert_close(model.data_scale, x.std(0))
    mean, scale = model.data_mean, model.data_scale
    far = means + torch.tensor([[30.0, -20.0, 5.0], [0.0, 0.0, -3.0]])
    for t in torch.tensor([0.0, 0.5, 1.0]):
        exact = -(far - mean) / (scale.square() + model.sigma(t).square())
        torch.testing.assert_close(model.score(far, t), exact)


def test_data_statistics_come_from_the_first_training_batch_unless_fixed():
    g = torch.Generator().manual_seed(0)
    first, second = torch.randn(64, 2, generator=g), 3 + torch.randn(64, 2, generator=g)
    model = ScoreModel(2, hidden=[8])
    model.eval().loss(first)  # evaluation sets nothing
    assert not model.data_fitted and (model.data_mean == 0).all() and (model.data_scale == 1).all()
    model.train().loss(first)
    model.loss(second)  # later batches change nothing
    torch.testing.assert_close(model.data_mean, first.mean(0))
    torch.testing.assert_close(model.data_scale, first.std(0))
    loaded = ScoreModel(2, hidden=[8])
    loaded.load_state_dict(model.state_dict())
    loaded.loss(second)  # loaded statistics are kept
    torch.testing.assert_close(loaded.data_mean, first.mean(0))
    fixed = ScoreModel(2, hidden=[8], sigma_data=0.7)
    fixed.loss(second)
    assert fixed.data_fitted and (fixed.data_mean == 0).all() and (fixed.data_scale == 0.7).all()


def test_a_state_dict_saved_before_the_statistics_loads_with_its_sigma_data():
    """A run saved before the statistics were buffers had one sigma_data, written in its spec.toml: its model loads
    into the model that spec builds and scores as Karras et al.'s preconditioning did, about a zero mean."""
    pyro.set_rng_seed(0)
    saved = ScoreModel(3, hidden=[8], sigma_data=0.5).state_dict()
    old = {name: value for name, value in saved.items() if not name.startswith("data_")}
    model = ScoreModel(3, hidden=[8], sigma_data=0.5)
    model.load_state_dict(old)
    x, t = torch.randn(5, 3), torch.tensor(0.3)
    sigma = model.sigma(t)
    total = sigma**2 + 0.25
    output = model.net(x / total.sqrt(), 1000 * t)
    torch.testing.assert_close(model.score(x, t), 0.5 * output / (sigma * total.sqrt()) - x / total)
    with pytest.raises(RuntimeError, match="data_mean"):  # a model estimating them has no such fallback
        ScoreModel(3, hidden=[8]).load_state_dict(old)


@pytest.mark.parametrize("training_levels", ["continuous", "discrete"])
def test_evaluation_loss_is_the_same_at_every_call_and_unbiased(training_levels):
    """In eval mode (validation, metrics) the levels are stratified and the noise comes from a fixed seed: every call
    gives the same losses, from the global random stream untouched, so that keep_best compares parameters rather
    than Monte-Carlo draws. With the exact score of N(m, S) the loss at noise level sigma has expectation
    1/2 tr(S (S + sigma^2 I)^-1) (from I - sigma^2 (S + sigma^2 I)^-1 = S (S + sigma^2 I)^-1); its mean over the
    levels (t ~ U(0, 1), or the L levels) is matched within 4 standard errors of the per-example losses (a
    conservative bound: stratifying the levels only lowers the estimate's variance)."""
    model = ExactGaussianScore(training_levels=training_levels, num_levels=10).eval()
    x = gaussian_data(4000)
    state = torch.get_rng_state()
    losses = model.loss(x)
    assert torch.equal(torch.get_rng_state(), state)
    torch.testing.assert_close(model.loss(x), losses, rtol=0, atol=0)
    levels = torch.linspace(0, 1, 10001) if training_levels == "continuous" else model.level_times
    noised = COVARIANCE + model.sigma(levels)[:, None, None] ** 2 * torch.eye(2)
    expected = 0.5 * torch.linalg.solve(noised, COVARIANCE.expand_as(noised)).diagonal(dim1=-2, dim2=-1).sum(-1)
    expected = torch.trapezoid(expected, levels) if training_levels == "continuous" else expected.mean()
    assert abs(losses.mean() - expected) < 4 * losses.std() / math.sqrt(len(x))


@pytest.mark.parametrize("sampler", ["pc", "langevin"])
def test_samplers_with_the_exact_score_recover_the_gaussian(sampler):
    """Loose: the mean within 0.1 (about 4.5 standard errors of 2000 draws, plus the prior N(0, sigma_max^2 I)'s
    offset from N(m, S + sigma_max^2 I), which the reverse process shrinks to ~0.01), each covariance entry within
    25% (sampling error ~3%; the rest is discretization, and annealed Langevin's incomplete mixing at small sigma)."""
    pyro.set_rng_seed(0)
    model = ExactGaussianScore(num_levels=50)
    samples = model.draw(2000, SamplingSpec(sampler=sampler, step_size=1e-4, noise_levels=50))
    assert (samples.mean(0) - MEAN).abs().max() < 0.1
    assert ((torch.cov(samples.T) - COVARIANCE).abs() < 0.25 * COVARIANCE.abs()).all()


def test_trained_network_samples_approach_the_data():
    """A small network trained briefly (40 epochs, the learning rate annealed to 0) by DSM on a 2-D Gaussian: its
    predictor-corrector draws have the data's mean within 0.1 and its covariance entries within 0.25 (loose: the
    short training, not the sampling error of 1000 draws, ~0.03 and ~0.05, dominates; measured 0.02 and 0.17)."""
    pyro.set_rng_seed(0)
    model = ScoreModel(2, hidden=[32, 32], sigma_min=0.01, sigma_max=5.0, sigma_data=1.0, num_levels=30)
    data = gaussian_data(2000)
    options = {"epochs": 40, "batch_size": 128, "lr": 3e-3, "schedule": "cosine", "progress": False}
    ppgen.fit(model._loss_model, model._loss_guide, data, **options)
    samples = model.eval().draw(1000, SamplingSpec(sampler="pc"))
    assert (samples.mean(0) - MEAN).abs().max() < 0.1
    assert (torch.cov(samples.T) - COVARIANCE).abs().max() < 0.25


def test_held_out_log_likelihood_is_the_gaussian_density_in_chunks():
    """The exact score of N(0, S): the ODE gives log N(x; 0, S + sigma_min^2 I) up to the prior's mismatch, N(0,
    sigma_max^2 I) against N(0, S + sigma_max^2 I) (about tr(S) / (2 sigma_max^2) = 0.008 nats, from the log
    determinants and the quadratic forms each), the ODE tolerance (1e-5) and float32 rounding: within 0.05."""
    model = ExactGaussianScore(mean=torch.zeros(2), exact_trace=True)
    x = gaussian_data(6, seed=2) - MEAN
    whole = model.held_out_log_likelihood(x, num_samples=1, chunk_size=None)
    chunked = model.held_out_log_likelihood(x, num_samples=1, chunk_size=2 * 2)  # 2 examples x D probes a chunk
    assert isinstance(whole, LogLikelihood) and whole.num_samples == 2 and (whole.stderr == 0).all()
    exact = torch.distributions.MultivariateNormal(torch.zeros(2), COVARIANCE + SIGMA_MIN**2 * torch.eye(2)).log_prob(x)
    torch.testing.assert_close(whole.estimate, exact, rtol=0, atol=0.05)
    torch.testing.assert_close(chunked.estimate, whole.estimate, rtol=0, atol=1e-4)


def test_trajectories_that_leave_the_prior_are_warned_about():
    """A score five times too steep, -5 x / sigma^2, makes the forward ODE's drift 5 ln(sigma_max / sigma_min) x:
    x_1 = 1000^5 x_0, far beyond 10 sigma_max sqrt(D); the warning names the rows and the median."""

    class Steep(ExactGaussianScore):
        def score(self, x, t):
            return -5 * x / self.sigma(t) ** 2

    x = gaussian_data(3, seed=1)
    steep, exact = (
        model(exact_trace=True).held_out_log_likelihood(x, num_samples=1, chunk_size=None)
        for model in (Steep, ExactGaussianScore)
    )
    assert "3 of 3 test examples (rows [0, 1, 2])" in steep.warning and "median NLL" in steep.warning
    assert exact.warning is None


def test_spec_builds_the_registered_family():
    spec = RunSpec.model_validate(
        {"data": {"name": "moons", "binarize": "none"}, "model": {"kind": "score", "objective": "ssm"}}
    )
    model = build_model(spec.model, (2,))
    assert FAMILIES["score"] is ScoreModel and isinstance(model, ScoreModel) and model.objective == "ssm_loss"
    assert spec.sampling.sampler == "langevin"  # the family's own sampler when [sampling] names none


@pytest.mark.parametrize(
    ("tree", "message"),
    [
        (
            {"model": {"kind": "score", "sigma_min": 2.0, "sigma_max": 1.0}, "data": {"binarize": "none"}},
            "model.sigma_min = 2.0",
        ),
        ({"model": {"kind": "score"}, "data": {"binarize": "threshold"}}, "data.binarize = 'threshold'"),
        (
            {"model": {"kind": "score"}, "data": {"binarize": "none"}, "sampling": {"sampler": "ancestral"}},
            "sampling.sampler = 'ancestral'",
        ),
    ],
)
def test_spec_errors_name_the_key(tree, message):
    with pytest.raises(ValueError, match=message):
        RunSpec.model_validate(tree)


@pytest.mark.parametrize("name", ["score-moons", "score-digits"])
def test_spec_runs_and_reports_the_ode_likelihood(name, tmp_path):
    budget = ["inference.epochs=1", "inference.device='cpu'", "evaluation.max_examples=5", "sampling.noise_levels=5"]
    spec = load_spec(f"models/{name}.toml", overrides=budget)
    metrics = run(spec, tmp_path / "run", progress=False)
    assert metrics["training"]["objective"] == "dsm_loss"
    assert all(math.isfinite(metrics[split]["dsm_loss"]) for split in ("train", "validation", "test"))
    assert metrics["test"]["nll_method"] == "probability-flow ODE" and metrics["test"]["nll_num_examples"] == 5
    assert math.isfinite(metrics["test"]["nll"]) and math.isfinite(metrics["test"]["nll_stderr"])


def test_a_run_preconditions_by_the_whole_training_split(tmp_path):
    # ppgen run sets each pixel's mean and scale from every training image (as evaluation sees them, dequantized
    # once), not from the first batch of 64: the saved model holds exactly the split's statistics.
    from ppgen.generative_run import load_run

    budget = ["inference.epochs=1", "inference.device='cpu'", "evaluation.max_examples=2", "sampling.noise_levels=2"]
    run(load_spec("models/score-digits.toml", overrides=budget), tmp_path / "run", progress=False)
    _, model, splits = load_run(tmp_path / "run")
    train = splits.fixed_train().double()  # the buffers are float32: equal to its rounding (relative 1e-6)
    torch.testing.assert_close(model.data_mean.double(), train.mean(0), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model.data_scale.double(), train.std(0), rtol=1e-6, atol=1e-7)
