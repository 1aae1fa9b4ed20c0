import math

import pyro
import pytest
import torch
from pyro import distributions as dist

from ppgen.evaluate import log_likelihood
from ppgen.infer.elbos import chosen_elbo
from ppgen.infer.objectives import make_objective
from ppgen.models import VAE

Z = 4.0


@pytest.fixture
def vae():
    pyro.set_rng_seed(0)
    return VAE(data_dim=20, latent_dim=3, hidden=[16])


@pytest.fixture
def x():
    return torch.bernoulli(torch.full((8, 20), 0.3), generator=torch.Generator().manual_seed(0))


def _objective(vae, num_data=8, **options):
    return make_objective(vae.model, vae.guide, [vae], num_data=num_data, max_plate_nesting=1, **options)


def _loss_and_gradients(objective, vae, x, seed):
    vae.zero_grad(set_to_none=True)
    pyro.set_rng_seed(seed)
    loss = objective.loss_and_backward(x)
    return loss, [p.grad.clone() for p in vae.parameters()]


@pytest.mark.parametrize("elbo", ["trace", "meanfield"])
def test_compiled_elbos_match_their_uncompiled_twins(vae, x, elbo):
    eager = _objective(vae, elbo=elbo)
    compiled = _objective(vae, elbo=elbo, jit=True)
    compiled.loss_and_backward(x)  # compile first: tracing draws random numbers of its own
    for seed in (1, 2):
        loss, gradients = _loss_and_gradients(eager, vae, x, seed)
        compiled_loss, compiled_gradients = _loss_and_gradients(compiled, vae, x, seed)
        torch.testing.assert_close(compiled_loss, loss)
        for gradient, compiled_gradient in zip(gradients, compiled_gradients):
            torch.testing.assert_close(compiled_gradient, gradient)


def test_the_compiled_mean_field_elbo_compiles_once(vae, x):
    objective = _objective(vae, elbo="meanfield", jit=True)
    objective.loss_and_backward(x)
    compiled = objective.elbo._differentiable_loss
    for _ in range(3):
        objective.loss_and_backward(x)
    assert objective.elbo._differentiable_loss is compiled and len(compiled.compiled) == 1


@pytest.mark.parametrize("options", [{"jit": True}, {"elbo": "iwae", "num_particles": 3}])
def test_objectives_that_need_param_sites_train_the_modules_without_pyros_parameter_store(vae, x, options):
    """Compiled ELBOs and RenyiELBO find parameters through pyro.param sites; those are answered by the
    objective itself, so the modules' parameters get gradients and the global store is left as it was."""
    pyro.clear_param_store()
    mine = pyro.param("mine", torch.ones(2))
    objective = _objective(vae, **options)
    assert {id(p) for p in objective.parameters()} == {id(p) for p in vae.parameters()}
    vae.zero_grad(set_to_none=True)
    objective.loss_and_backward(x)
    assert all(p.grad is not None for p in vae.parameters())
    assert list(pyro.get_param_store().keys()) == ["mine"] and pyro.param("mine") is mine
    pyro.clear_param_store()


def test_the_loss_is_rescaled_from_the_batch_to_the_data_set(vae, x):
    batch = _objective(vae, num_data=8)
    whole = _objective(vae, num_data=32)
    pyro.set_rng_seed(3)
    batch_loss = batch.loss_and_backward(x)
    pyro.set_rng_seed(3)
    torch.testing.assert_close(whole.loss_and_backward(x), 4 * batch_loss)


def test_the_one_sample_importance_weighted_bound_is_the_elbo(vae, x):
    trace = _objective(vae)
    iwae = _objective(vae, elbo="iwae", num_particles=1)
    loss, gradients = _loss_and_gradients(trace, vae, x, seed=4)
    iwae_loss, iwae_gradients = _loss_and_gradients(iwae, vae, x, seed=4)
    torch.testing.assert_close(iwae_loss.double(), loss.double())
    for gradient, iwae_gradient in zip(gradients, iwae_gradients):
        torch.testing.assert_close(iwae_gradient, gradient)


def test_the_importance_weighted_objective_is_the_per_example_bound_the_evaluator_estimates(vae, x):
    """-RenyiELBO(alpha=0, K) / B and the mean of log_likelihood(K) both estimate E[L_K] per example."""
    objective = _objective(vae, elbo="iwae", num_particles=5)
    pyro.set_rng_seed(5)
    training = torch.stack([-objective.loss_and_backward(x) / len(x) for _ in range(300)])
    evaluation = torch.stack(
        [log_likelihood(vae.model, vae.guide, x, num_samples=5).estimate.mean() for _ in range(300)]
    )
    stderr = math.hypot(training.std().item(), evaluation.std().item()) / math.sqrt(300)
    assert abs(training.mean() - evaluation.mean()) < Z * stderr


def test_kl_weight_scales_latent_sites_and_leaves_the_likelihood_alone(vae, x):
    from pyro import poutine

    objective = _objective(vae, kl_warmup=True)
    objective.set_kl_weight(0.25)
    guide_trace = poutine.trace(objective.guide).get_trace(x)
    model_trace = poutine.trace(poutine.replay(objective.model, trace=guide_trace)).get_trace(x)
    assert guide_trace.nodes["z"]["scale"] == model_trace.nodes["z"]["scale"] == pytest.approx(0.25)
    assert model_trace.nodes["x"]["scale"] == pytest.approx(1.0)


def _mixed_pair(discrete: bool):
    """A global Normal latent, a Gamma latent whose KL against its LogNormal guide Pyro has no formula for and,
    if ``discrete``, a per-example Bernoulli latent (not reparametrizable: a score-function gradient)."""

    def model(x):
        loc = pyro.sample("loc", dist.Normal(0.0, 1.0))
        rate = pyro.sample("rate", dist.Gamma(2.0, 2.0))
        with pyro.plate("data", len(x)):
            switch = pyro.sample("switch", dist.Bernoulli(0.5)) if discrete else 0.0
            pyro.sample("obs", dist.Normal(loc + switch, rate.reciprocal().sqrt()), obs=x)

    def guide(x):
        pyro.sample("loc", dist.Normal(pyro.param("q_loc", torch.tensor(0.3)), 0.5))
        pyro.sample("rate", dist.LogNormal(pyro.param("q_log_rate", torch.tensor(0.1)), 0.3))
        if discrete:
            with pyro.plate("data", len(x)):
                pyro.sample("switch", dist.Bernoulli(logits=pyro.param("q_logit", torch.zeros(len(x)))))

    return model, guide


@pytest.mark.parametrize("num_particles", [1, 3])
@pytest.mark.parametrize(
    ("ours", "pyros", "discrete"),
    [("trace", pyro.infer.Trace_ELBO, True), ("meanfield", pyro.infer.TraceMeanField_ELBO, False)],
)
def test_the_eager_elbos_give_pyros_loss_and_gradients(ours, pyros, discrete, num_particles):
    """ppgen's eager ELBOs keep the loss on the device; with the same draws they must be Pyro's estimator exactly
    (score-function terms, KLs with and without a closed form, vectorized particles)."""
    pyro.clear_param_store()
    x = torch.tensor([0.2, 1.4, -0.3, 1.1])
    model, guide = _mixed_pair(discrete)
    options = {"num_particles": num_particles, "vectorize_particles": num_particles > 1, "max_plate_nesting": 2}
    objective = make_objective(
        model, guide, [], elbo=ours, num_data=4, max_plate_nesting=1, num_particles=num_particles
    )
    names = ("q_loc", "q_log_rate", "q_logit") if discrete else ("q_loc", "q_log_rate")
    try:
        results = []
        for loss_fn in (
            objective.differentiable_loss,
            lambda x: pyros(**options).differentiable_loss(objective.model, objective.guide, x),
        ):
            pyro.set_rng_seed(3)
            loss = loss_fn(x)
            params = [pyro.param(name).unconstrained() for name in names]
            results.append((loss.detach(), torch.autograd.grad(loss, params)))
        (loss, gradients), (pyro_loss, pyro_gradients) = results
        torch.testing.assert_close(loss, pyro_loss)
        for gradient, pyro_gradient in zip(gradients, pyro_gradients):
            torch.testing.assert_close(gradient, pyro_gradient)
        assert all(gradient.abs().sum() > 0 for gradient in gradients)
    finally:
        pyro.clear_param_store()


def _hierarchical(x):
    """A latent site (z) that depends on another (scale): the closed-form KL of z is not valid for every guide."""
    scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(0.0, scale).expand([x.shape[1]]).to_event(1))
        pyro.sample("x", dist.Bernoulli(logits=z).to_event(1), obs=x)


def _no_latent_sites(x):
    with pyro.plate("data", len(x)):
        pyro.sample("x", dist.Bernoulli(logits=torch.zeros_like(x)).to_event(1), obs=x)


def test_auto_chooses_closed_form_kl_terms_only_where_no_latent_site_depends_on_another(vae, x):
    assert chosen_elbo("auto", vae.model, (x,), enumerated=False) == "meanfield"
    assert chosen_elbo("auto", vae.model, (x,), enumerated=True) == "trace"  # TraceMeanField_ELBO cannot sum out
    assert chosen_elbo("auto", _hierarchical, (x,), enumerated=False) == "trace"
    assert chosen_elbo("auto", _no_latent_sites, (x,), enumerated=False) == "trace"
    for named in ("trace", "meanfield", "iwae"):
        assert chosen_elbo(named, _hierarchical, (x,), enumerated=False) == named


def test_choosing_draws_nothing_from_the_random_stream(vae, x):
    pyro.set_rng_seed(5)
    chosen_elbo("auto", vae.model, (x,), enumerated=False)
    after_choosing = torch.rand(3)
    pyro.set_rng_seed(5)
    assert torch.equal(torch.rand(3), after_choosing)
