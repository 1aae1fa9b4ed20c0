"""User-written model/guide pairs with discrete sites marked for enumeration: the trainer finds them and trains
with TraceEnum_ELBO (the validation loss too), refuses what cannot work in one line, and the evaluator sums the
sites out exactly. Exact answers are closed-form logsumexps over the discrete values; tolerances are float rounding,
or the estimator's own standard error where a continuous latent is importance-sampled."""

import collections

import pyro
import pyro.distributions as dist
import pytest
import torch
from host_reads import round_trips
from pyro.infer import TraceEnum_ELBO, config_enumerate
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

import ppgen
from ppgen.errors import SpecError
from ppgen.evaluate import elbo, latent_kl, log_likelihood
from ppgen.infer import svi_init
from ppgen.infer.objectives import make_objective
from ppgen.infer.settings import SVISettings
from ppgen.plates import inspect_plates

Z = 4.0  # standard errors allowed for importance-sampled figures
FLOAT32 = 1e-4  # absolute tolerance on a float32 log-density of a few nats: rounding of the logsumexps


class ClusterPair(PyroModule):
    """A user's two-dimensional Gaussian mixture: weights, means and scales as point estimates, the assignment c
    enumerated in the data plate, and an empty guide."""

    def __init__(self, components: int = 3):
        super().__init__()
        self.logits = PyroParam(torch.zeros(components))
        self.locs = PyroParam(torch.linspace(-1.0, 1.0, components).unsqueeze(-1).expand(-1, 2).clone())
        self.scales = PyroParam(torch.ones(components, 2), constraints.positive)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            c = pyro.sample("c", dist.Categorical(logits=self.logits), infer={"enumerate": "parallel"})
            pyro.sample("x", dist.Normal(self.locs[c], self.scales[c]).to_event(1), obs=x)

    def guide(self, x):
        pass

    def exact_log_prob(self, x):
        """log p(x) [N] = logsumexp_k log pi_k + log N(x; mu_k, sigma_k), with torch's densities."""
        log_pi = torch.log_softmax(self.logits, 0)
        per_component = torch.distributions.Normal(self.locs, self.scales).log_prob(x.unsqueeze(-2)).sum(-1)
        return torch.logsumexp(log_pi + per_component, -1)


def _clusters(n: int = 120, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-3.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    return centres[torch.arange(n) % 3] + 0.5 * torch.randn(n, 2, generator=generator)


def test_the_plates_report_the_enumerated_sites():
    pair = ClusterPair()
    structure = inspect_plates(pair.model, pair.guide, _clusters(6))
    assert (structure.max_plate_nesting, structure.per_example) == (1, True)
    assert structure.enumerated == ("c",) and structure.enumerated_globally == ()


@pytest.mark.parametrize("chunk_size", [None, 7, 1])
def test_the_log_likelihood_sums_the_enumerated_site_out_exactly(chunk_size):
    pair, x = ClusterPair(), _clusters(30)
    result = log_likelihood(pair.model, pair.guide, x, num_samples=5, chunk_size=chunk_size)
    exact = pair.exact_log_prob(x).detach()
    torch.testing.assert_close(result.estimate, exact, rtol=0, atol=FLOAT32)
    # The empty guide's five weights are all log p(x): the effective sample size is K, the stderr 0 up to rounding.
    torch.testing.assert_close(result.effective_sample_size, torch.full((30,), 5.0), rtol=1e-4, atol=0)
    assert result.stderr.max() < 1e-2
    torch.testing.assert_close(elbo(pair.model, pair.guide, x), exact, rtol=0, atol=FLOAT32)


def test_an_unvectorized_evaluation_sums_out_too():
    pair, x = ClusterPair(), _clusters(9)
    result = log_likelihood(pair.model, pair.guide, x, num_samples=3, vectorize=False)
    torch.testing.assert_close(result.estimate, pair.exact_log_prob(x).detach(), rtol=0, atol=FLOAT32)


def _pixel_switches(x):
    """Each of D pixels of each example is on with probability 0.9 or 0.2 by a switch s enumerated per pixel,
    inside a "pixels" plate nested in the data plate: log p(x) = sum_d logsumexp_s (log p(s) + log p(x_d | s))."""
    with pyro.plate("data", x.shape[0], dim=-2), pyro.plate("pixels", x.shape[1], dim=-1):
        s = pyro.sample("s", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})
        pyro.sample("x", dist.Bernoulli(0.2 + 0.7 * s), obs=x)


def test_sites_enumerated_in_a_nested_plate_are_summed_out_before_the_plate_multiplies():
    x = torch.bernoulli(torch.full((8, 5), 0.5), generator=torch.Generator().manual_seed(1))
    on = torch.tensor(0.3 * 0.9 + 0.7 * 0.2)  # p(x_d = 1) with the switch summed out
    exact = (x * on.log() + (1 - x) * (1 - on).log()).sum(-1)
    result = log_likelihood(_pixel_switches, lambda x: None, x, num_samples=4, chunk_size=6)
    torch.testing.assert_close(result.estimate, exact, rtol=0, atol=FLOAT32)


def _global_switch(x):
    """One switch c for the whole data set, outside the data plate: the examples share it."""
    c = pyro.sample("c", dist.Bernoulli(0.25), infer={"enumerate": "parallel"})
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(2.0 * c, 1.0), obs=x)


def test_a_site_enumerated_outside_the_data_plate_gives_the_joint_log_likelihood():
    x = torch.tensor([1.5, 2.5, 1.0, 3.0])
    terms = torch.stack([torch.distributions.Normal(mean, 1.0).log_prob(x).sum() for mean in (0.0, 2.0)])
    exact = torch.logsumexp(terms + torch.tensor([0.75, 0.25]).log(), 0)
    structure = inspect_plates(_global_switch, lambda x: None, x)
    assert structure.enumerated_globally == ("c",) and not structure.per_example
    result = log_likelihood(_global_switch, lambda x: None, x, num_samples=3)
    assert result.estimate.shape == ()
    torch.testing.assert_close(result.estimate, exact, rtol=0, atol=FLOAT32)


class NoisyClusters(PyroModule):
    """z_i ~ N(0, 1), c_i ~ pi (enumerated), x_i ~ N(z_i + mu_c, 1): p(x_i) = sum_c pi_c N(x_i; mu_c, sqrt 2).
    The guide q(z_i | x_i) = N(a x_i, s) is not the posterior, so the importance weights vary."""

    def __init__(self):
        super().__init__()
        self.means = torch.tensor([-2.0, 2.0])
        self.a = PyroParam(torch.tensor(0.3))
        self.s = PyroParam(torch.tensor(1.0), constraints.positive)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            c = pyro.sample("c", dist.Categorical(torch.tensor([0.3, 0.7])))
            pyro.sample("x", dist.Normal(z + self.means[c], 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(self.a * x, self.s))

    def exact_log_prob(self, x):
        normal = torch.distributions.Normal(self.means, 2**0.5)
        return torch.logsumexp(torch.tensor([0.3, 0.7]).log() + normal.log_prob(x.unsqueeze(-1)), -1)


def test_a_config_enumerated_model_with_a_sampled_latent_is_importance_sampled_within_its_error():
    pair, x = NoisyClusters(), torch.tensor([-3.0, -1.0, 0.5, 2.0, 4.0])
    model = config_enumerate(pair.model)  # marks c (the only site with enumerate support)
    pyro.set_rng_seed(0)
    result = log_likelihood(model, pair.guide, x, num_samples=3000)
    exact = pair.exact_log_prob(x)
    assert ((result.estimate - exact).abs() < Z * result.stderr).all()
    assert (elbo(model, pair.guide, x, num_particles=200) < exact).all()  # the gap is > 0.1 nats here
    assert set(latent_kl(model, pair.guide, (x,), num_samples=2)) == {"z"}  # the summed-out c is no guide site


def test_fit_trains_a_users_enumerated_pair_with_traceenum_and_its_log_likelihood_rises():
    x, validation = _clusters(120), _clusters(30, seed=1)
    pair = ClusterPair()
    before = log_likelihood(pair.model, pair.guide, x, num_samples=1).estimate.mean()
    pyro.set_rng_seed(0)
    result = ppgen.fit(pair.model, pair.guide, x, validation, epochs=40, batch_size=40, lr=0.1, progress=False)
    after = log_likelihood(pair.model, pair.guide, x, num_samples=1).estimate.mean()
    assert after > before + 1.0  # about -7.5 nats at the start, -2.4 once fitted
    # The validation loss was TraceEnum's, which with an empty guide is the exact log p(x) (keep_best ends there).
    held_out = pair.exact_log_prob(validation).mean().item()
    assert result.best_validation_elbo == pytest.approx(held_out, abs=FLOAT32)


def test_svi_init_picks_traceenum_and_the_minibatch_loss_is_rescaled_exactly():
    pair, x = ClusterPair(), _clusters(12)
    state = svi_init(pair.model, pair.guide, x[:4], SVISettings(), num_data=12)
    assert isinstance(state.objective.elbo, TraceEnum_ELBO)
    # An empty guide: the batch's loss is -log p(x_batch) times num_data / batch size, with no Monte Carlo noise.
    expected = -pair.exact_log_prob(x[:4]).sum() * 3
    torch.testing.assert_close(state.objective(x[:4]), expected.detach(), rtol=1e-6, atol=0)


def test_an_objective_left_to_find_out_reads_the_enumeration_off_the_first_batch_without_drawing():
    pair, x = ClusterPair(), _clusters(6)
    objective = make_objective(pair.model, pair.guide, [pair], num_data=6, max_plate_nesting=1)
    assert objective.elbo is None
    state = torch.get_rng_state()
    objective.loss_sum((x,), batch_size=6)
    assert isinstance(objective.elbo, TraceEnum_ELBO)
    assert torch.equal(torch.get_rng_state(), state)  # the empty guide draws nothing, and neither did finding out


@pytest.mark.parametrize("options", [{"jit": True}, {"num_particles": 3}, {"kl_warmup": 2}])
def test_compiled_vectorized_and_warmed_up_enumerated_objectives_give_the_exact_loss(options):
    pair, x = ClusterPair(), _clusters(12)
    pyro.set_rng_seed(0)
    result = ppgen.fit(pair.model, pair.guide, x, epochs=2, batch_size=12, lr=0.05, progress=False, **options)
    state = svi_init(pair.model, pair.guide, x, SVISettings(**{**options, "kl_warmup": 0}), num_data=12)
    torch.testing.assert_close(state.objective(x), -pair.exact_log_prob(x).sum().detach(), rtol=1e-5, atol=0)
    assert result.steps == 2


def _mixed_enumerated_pair():
    """A global location (reparametrized guide), a switch per example sampled by the guide (score-function
    gradients) and a cluster per example enumerated in the model."""

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x)):
            switch = pyro.sample("switch", dist.Bernoulli(0.5))
            c = pyro.sample("c", dist.Categorical(torch.tensor([0.2, 0.3, 0.5])), infer={"enumerate": "parallel"})
            pyro.sample("obs", dist.Normal(loc + switch + torch.tensor([-1.0, 0.0, 1.0])[c], 1.0), obs=x)

    def guide(x):
        pyro.sample("loc", dist.Normal(pyro.param("q_loc", torch.tensor(0.3)), 0.5))
        with pyro.plate("data", len(x)):
            pyro.sample("switch", dist.Bernoulli(logits=pyro.param("q_logit", torch.zeros(len(x)))))

    return model, guide


@pytest.mark.parametrize("num_particles", [1, 3])
def test_the_on_device_traceenum_elbo_gives_pyros_loss_and_gradients(num_particles):
    """With the same draws, the ELBO that keeps its loss on the device is Pyro's TraceEnum_ELBO exactly (sums over
    the enumerated sites, Dice's score-function terms, vectorized particles)."""
    pyro.clear_param_store()
    x = torch.tensor([0.2, 1.4, -0.3, 1.1])
    model, guide = _mixed_enumerated_pair()
    options = {"num_particles": num_particles, "vectorize_particles": num_particles > 1, "max_plate_nesting": 2}
    objective = make_objective(model, guide, [], num_data=4, max_plate_nesting=1, num_particles=num_particles)
    try:
        results = []
        for loss_fn in (
            objective.differentiable_loss,
            lambda x: TraceEnum_ELBO(**options).differentiable_loss(objective.model, objective.guide, x),
        ):
            pyro.set_rng_seed(3)
            loss = loss_fn(x)
            params = [pyro.param(name).unconstrained() for name in ("q_loc", "q_logit")]
            results.append((loss.detach(), torch.autograd.grad(loss, params)))
        (loss, gradients), (pyro_loss, pyro_gradients) = results
        assert type(objective.elbo).__name__ == "_DeviceTraceEnum_ELBO"
        torch.testing.assert_close(loss, pyro_loss)
        for gradient, pyro_gradient in zip(gradients, pyro_gradients):
            torch.testing.assert_close(gradient, pyro_gradient)
        assert all(gradient.abs().sum() > 0 for gradient in gradients)
    finally:
        pyro.clear_param_store()


@pytest.mark.parametrize("elbo_name", ["iwae", "meanfield"])
def test_elbos_that_cannot_sum_sites_out_are_refused_in_one_line(elbo_name):
    pair = ClusterPair()
    with pytest.raises(SpecError, match=f"inference.elbo = '{elbo_name}' cannot sum out") as error:
        svi_init(pair.model, pair.guide, _clusters(6), SVISettings(elbo=elbo_name))
    assert "\n" not in str(error.value)


def test_a_globally_enumerated_site_trains_on_the_whole_set_and_refuses_minibatches():
    x = torch.tensor([1.5, 2.5, 1.0, 3.0])
    mean = torch.zeros((), requires_grad=True)

    def model(x):
        c = pyro.sample("c", dist.Bernoulli(0.25), infer={"enumerate": "parallel"})
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(pyro.param("shift", mean) + 2.0 * c, 1.0), obs=x)

    with pytest.raises(SpecError, match="inference.batch_size = 2: the enumerated site 'c'") as error:
        svi_init(model, lambda x: None, x[:2], SVISettings(), num_data=4)
    assert "\n" not in str(error.value)
    state = svi_init(model, lambda x: None, x, SVISettings(), num_data=4)
    assert isinstance(state.objective.elbo, TraceEnum_ELBO)


def test_kl_warmup_is_refused_when_a_guide_latent_depends_on_an_enumerated_site():
    """z | c ~ N(mu_c, 1) with c enumerated: weighting log p(z | c) alone would break TraceEnum's common scale."""

    def model(x):
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(torch.tensor([0.5, 0.5])), infer={"enumerate": "parallel"})
            z = pyro.sample("z", dist.Normal(torch.tensor([-2.0, 2.0])[c], 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(pyro.param("a", torch.tensor(0.5)) * x, 1.0))

    pyro.clear_param_store()
    with pytest.raises(SpecError, match="inference.kl_warmup = 2: a latent site of the guide depends on an enum"):
        svi_init(model, guide, torch.randn(8), SVISettings(kl_warmup=2))
    pyro.clear_param_store()


def test_enumerated_training_reads_nothing_back_between_log_intervals():
    """As for the other ELBOs (tests/test_host_sync.py): the two extra epochs add only their validation reads."""
    x = _clusters(40)

    def train(epochs):
        pair = ClusterPair()
        ppgen.fit(pair.model, pair.guide, x, x[:20], epochs=epochs, batch_size=10, log_every=1000, progress=False)

    few, many = round_trips(train, 1), round_trips(train, 3)
    assert many == few + collections.Counter(item=2)
