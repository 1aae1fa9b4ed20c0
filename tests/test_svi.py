import dataclasses
import math
import os
import signal

import pyro
import pyro.distributions as dist
import pytest
import torch
from models_exact import ConjugateNormalMean
from torch.distributions import constraints

from ppgen.data import dynamic_binarize
from ppgen.errors import SpecError, TrainingError, TrainingInterrupted
from ppgen.infer import SVISettings, fit, svi_init, svi_step
from ppgen.infer.checkpoint import load_checkpoint, save_checkpoint
from ppgen.infer.minibatch import epoch_order
from ppgen.models import VAE
from ppgen.spec.schema import SVISpec


class Crash(Exception):
    pass


class StepHook:
    """A batch transform that calls ``action`` on training step ``step`` (1-based); fit applies the
    transform once more, to its first batch, before training starts."""

    def __init__(self, transform, step=None, action=None):
        self.transform, self.step, self.action, self.calls = transform, step, action, 0

    def __call__(self, x):
        self.calls += 1
        if self.step is not None and self.calls == self.step + 1:
            x = self.action(x)
        return self.transform(x)


def _raise_crash(x):
    raise Crash


def _send_ctrl_c(x):
    os.kill(os.getpid(), signal.SIGINT)
    return x


@pytest.fixture
def digits():
    generator = torch.Generator().manual_seed(0)
    return torch.rand(300, 16, generator=generator), torch.rand(60, 16, generator=generator).round()


def _vae_fit(digits, checkpoint, hook, resume=False, **options):
    train, validation = digits
    pyro.set_rng_seed(0)
    vae = VAE(data_dim=16, latent_dim=2, hidden=[12])
    settings = dict(epochs=4, batch_size=32, checkpoint_every=7, log_every=5, schedule="exponential", lr_decay=0.9)
    result = fit(
        vae.model,
        vae.guide,
        train,
        validation,
        checkpoint=checkpoint,
        resume=resume,
        batch_transform=hook,
        progress=False,
        **{**settings, **options},
    )
    return vae, result


OBJECTIVES = [
    {"elbo": "trace", "kl_warmup": 2},
    {"elbo": "meanfield", "jit": True},
    {"elbo": "iwae", "num_particles": 3},
]


@pytest.mark.parametrize("objective", OBJECTIVES, ids=["trace-warmup", "meanfield-jit", "iwae"])
@pytest.mark.parametrize("interruption", ["crash", "ctrl-c"])
def test_an_interrupted_run_resumed_from_its_checkpoint_ends_in_the_same_parameters(
    digits, tmp_path, objective, interruption
):
    reference, reference_result = _vae_fit(digits, tmp_path / "reference.pt", StepHook(dynamic_binarize), **objective)
    path = tmp_path / "interrupted.pt"
    if interruption == "crash":  # the process dies in step 20; the periodic checkpoint of step 14 survives
        with pytest.raises(Crash):
            _vae_fit(digits, path, StepHook(dynamic_binarize, 20, _raise_crash), **objective)
        assert load_checkpoint(path)["position"]["step"] == 14
    else:  # Ctrl-C in step 20: the step finishes, a checkpoint of it is written, then training stops
        with pytest.raises(TrainingInterrupted, match=f"interrupted at step 20 .*{path.name} holds this step"):
            _vae_fit(digits, path, StepHook(dynamic_binarize, 20, _send_ctrl_c), **objective)
        assert load_checkpoint(path)["position"]["step"] == 20
    resumed, resumed_result = _vae_fit(digits, path, StepHook(dynamic_binarize), resume=True, **objective)
    for (name, expected), actual in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(actual, expected), name
    assert resumed_result.steps == reference_result.steps == 4 * (300 // 32)
    assert resumed_result.validation_elbo == reference_result.validation_elbo


def test_a_format_1_checkpoint_resumes_like_the_current_format(digits, tmp_path):
    """Format 1 (one process's random state, every CUDA device's) is still read, and resumes exactly."""
    reference, _ = _vae_fit(digits, tmp_path / "reference.pt", StepHook(dynamic_binarize))
    path = tmp_path / "old.pt"
    with pytest.raises(Crash):
        _vae_fit(digits, path, StepHook(dynamic_binarize, 20, _raise_crash))
    state = load_checkpoint(path)
    save_checkpoint({**state, "format": 1, "rng": {"cpu": state["rng"][0]["cpu"], "cuda": None}}, path)
    resumed, _ = _vae_fit(digits, path, StepHook(dynamic_binarize), resume=True)
    for (name, expected), actual in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(actual, expected), name


def _store_guide(x):
    loc = pyro.param("loc", torch.tensor(0.0))
    scale = pyro.param("scale", torch.tensor(1.0), constraint=constraints.positive)
    pyro.sample("mu", dist.Normal(loc, scale))


def _conjugate_model(x):
    mu = pyro.sample("mu", dist.Normal(torch.zeros(()), ConjugateNormalMean().tau))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu, ConjugateNormalMean().sigma), obs=x)


def test_parameters_in_pyros_parameter_store_are_checkpointed_and_resumed(tmp_path):
    x = ConjugateNormalMean().sample(64).float()
    settings = dict(epochs=3, batch_size=16, checkpoint_every=5, progress=False)
    pyro.clear_param_store()
    fit(_conjugate_model, _store_guide, x, checkpoint=tmp_path / "a.pt", **settings)
    expected = {name: pyro.param(name).detach().clone() for name in ("loc", "scale")}
    pyro.clear_param_store()
    with pytest.raises(Crash):
        fit(
            _conjugate_model,
            _store_guide,
            x,
            checkpoint=tmp_path / "b.pt",
            batch_transform=StepHook(lambda t: t, 8, _raise_crash),
            **settings,
        )
    pyro.clear_param_store()
    fit(_conjugate_model, _store_guide, x, checkpoint=tmp_path / "b.pt", resume=True, **settings)
    for name, value in expected.items():
        assert torch.equal(pyro.param(name).detach(), value), name


@pytest.mark.slow
def test_minibatch_svi_reaches_the_exact_posterior_of_a_conjugate_model():
    """With the batch log-likelihood rescaled by N / B the fixed point is the exact posterior; without the
    rescaling it would be the posterior given one batch of 50 of the 200 points, twice as wide (KL ~0.3 nats).
    The cosine schedule anneals the gradient noise, so 0.01 nats separates the two cleanly."""
    model = ConjugateNormalMean()
    x = model.sample(200).float()
    pyro.clear_param_store()
    fit(
        _conjugate_model,
        _store_guide,
        x,
        batch_size=50,
        num_particles=8,
        lr=0.05,
        schedule="cosine",
        epochs=300,
        progress=False,
    )
    loc, scale = model.posterior_loc_scale(x.double())
    fitted_loc, fitted_scale = pyro.param("loc").item(), pyro.param("scale").item()
    kl = math.log(scale / fitted_scale) + (fitted_scale**2 + (fitted_loc - loc.item()) ** 2) / (2 * scale**2) - 0.5
    assert kl < 0.01


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    x = ConjugateNormalMean().sample(64).float()
    path = tmp_path / "checkpoint.pt"
    pyro.clear_param_store()
    poison = StepHook(lambda t: t, 13, lambda t: t * math.nan)
    with pytest.raises(TrainingError) as error:
        fit(
            _conjugate_model,
            _store_guide,
            x,
            epochs=5,
            batch_size=16,
            checkpoint=path,
            checkpoint_every=5,
            log_every=4,
            batch_transform=poison,
            progress=False,
        )
    assert str(error.value).startswith("the loss is nan at step 13 (epoch 4); training stopped")
    assert str(path) in str(error.value)
    state = load_checkpoint(path)
    assert state["position"]["step"] == 10
    assert all(torch.isfinite(value).all() for value in state["parameters"]["store"].values())


def _location_model(x):
    loc = pyro.param("location", torch.tensor(0.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(loc, 1.0), obs=x)


def _no_guide(x):
    pass


def test_early_stopping_restores_the_best_validated_parameters():
    """Training pulls the location towards +3 while the validation data sit at -3, so the (exact,
    latent-free) validation ELBO falls every epoch: the first epoch is the best."""
    train, validation = torch.full((40,), 3.0), torch.full((10,), -3.0)
    options = dict(batch_size=10, lr=0.05, progress=False)
    pyro.clear_param_store()
    fit(_location_model, _no_guide, train, validation, epochs=1, **options)
    after_one_epoch = pyro.param("location").item()
    pyro.clear_param_store()
    result = fit(_location_model, _no_guide, train, validation, epochs=50, patience=2, **options)
    assert result.stop_reason == "patience" and result.epochs == 3 and result.steps == 12
    assert result.best_validation_elbo == result.validation_elbo[0][1]
    assert [value for _, value in result.validation_elbo] == sorted(
        (v for _, v in result.validation_elbo), reverse=True
    )
    assert pyro.param("location").item() == after_one_epoch


def test_a_time_limit_stops_training_after_the_step_that_crosses_it():
    pyro.clear_param_store()
    result = fit(_location_model, _no_guide, torch.zeros(40), epochs=5, batch_size=10, time_limit=1e-9, progress=False)
    assert result.stop_reason == "time_limit" and result.steps == 1


def test_a_fit_reports_its_history(capsys):
    pyro.clear_param_store()
    result = fit(
        _location_model, _no_guide, torch.zeros(40), torch.zeros(8), epochs=3, batch_size=10, log_every=3, progress=True
    )
    assert result.stop_reason == "epochs" and result.steps == 12 and result.epochs == 3
    assert [step for step, _ in result.train_elbo] == [3, 6, 9, 12]
    assert [step for step, _ in result.validation_elbo] == [4, 8, 12]
    # The running ELBO is the mean of -loss / N over the interval: a per-example log-density here.
    assert -5 < result.train_elbo[-1][1] < -0.9
    assert "elbo=" in capsys.readouterr().err


def _parameter_free(x):
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: fit(_location_model, _no_guide, torch.zeros(8), epocs=3), SpecError, "fit: unknown option 'epocs'"),
        (
            lambda: fit(_location_model, _no_guide, torch.zeros(8), lr=-1.0),
            SpecError,
            "fit: lr: Input should be greater than 0",
        ),
        (
            lambda: fit(_location_model, _no_guide, (torch.zeros(8), torch.zeros(7))),
            TrainingError,
            "disagree in their first dimension",
        ),
        (lambda: fit(_parameter_free, _no_guide, torch.zeros(8)), TrainingError, "no parameters to train"),
        (
            lambda: fit(_conjugate_model, _store_guide, torch.zeros(8), elbo="iwae", batch_size=4),
            SpecError,
            "needs every latent inside the 'data' plate",
        ),
        (
            lambda: fit(_location_model, _no_guide, torch.zeros(8), resume=True),
            TrainingError,
            "cannot resume: no checkpoint",
        ),
    ],
    ids=[
        "unknown option",
        "bad value",
        "ragged data",
        "no parameters",
        "iwae with global latents",
        "nothing to resume",
    ],
)
def test_mistakes_are_reported_in_one_line(call, error, message):
    pyro.clear_param_store()
    with pytest.raises(error) as raised:
        call()
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_resuming_with_another_model_is_refused(digits, tmp_path):
    _vae_fit(digits, tmp_path / "checkpoint.pt", StepHook(dynamic_binarize), epochs=1)
    train, _ = digits
    other = VAE(data_dim=16, latent_dim=3, hidden=[12])
    with pytest.raises(TrainingError, match="do not match this model and guide"):
        fit(
            other.model,
            other.guide,
            train,
            checkpoint=tmp_path / "checkpoint.pt",
            resume=True,
            batch_transform=dynamic_binarize,
            batch_size=32,
            progress=False,
        )


def test_a_users_loop_of_svi_steps_ends_where_fit_does(digits):
    """svi_init + svi_step over the epochs' seeded orders is fit without its callbacks: the same parameters,
    exactly (the exponential schedule follows the state's position across the epoch boundary)."""
    train = digits[0].round()
    settings = SVISettings(epochs=2, batch_size=32, schedule="exponential", lr_decay=0.5, lr=0.01, seed=3)
    pyro.set_rng_seed(0)
    fitted = VAE(data_dim=16, latent_dim=2, hidden=[12])
    result = fit(fitted.model, fitted.guide, train, settings=settings, progress=False)

    pyro.set_rng_seed(0)
    vae = VAE(data_dim=16, latent_dim=2, hidden=[12])
    state = svi_init(vae.model, vae.guide, train[:32], settings, num_data=len(train))
    losses = []
    for epoch in range(settings.epochs):
        order = epoch_order(len(train), settings.seed, epoch)
        for start in range(0, len(train) - 31, 32):
            state, loss = svi_step(state, train[order[start : start + 32]])
            losses.append(loss)
    assert (state.step, state.epoch, state.batch) == (result.steps, result.epochs, 0) == (18, 2, 0)
    assert all(loss.shape == () and not loss.requires_grad for loss in losses)
    for (name, expected), actual in zip(fitted.state_dict().items(), vae.state_dict().values()):
        assert torch.equal(actual, expected), name


def test_the_default_elbo_trains_exactly_as_the_estimator_it_chooses(digits):
    """elbo = "auto" chooses the closed-form KL for a VAE and then trains as elbo = "meanfield" does, step for step."""
    results = []
    for elbo in ("auto", "meanfield", "trace"):
        vae, result = _vae_fit(digits, None, StepHook(dynamic_binarize), elbo=elbo, epochs=2)
        results.append((result.elbo, [p.detach().clone() for p in vae.parameters()]))
    (auto, auto_parameters), (meanfield, meanfield_parameters), (trace, trace_parameters) = results
    assert (auto, meanfield, trace) == ("meanfield", "meanfield", "trace")
    assert all(torch.equal(a, b) for a, b in zip(auto_parameters, meanfield_parameters))
    assert not all(torch.equal(a, b) for a, b in zip(auto_parameters, trace_parameters))


@pytest.mark.parametrize(
    "options", [{}, {"elbo": "meanfield", "jit": True}, {"elbo": "iwae", "num_particles": 3}], ids=str
)
def test_fit_leaves_pyros_global_parameter_store_as_it_was(digits, options):
    """Module parameters are trained module-locally on every path, never registered in the global store, even
    for a while (the batch transform looks at the store before every step); a caller's own entries survive."""
    train, validation = digits[0].round(), digits[1]
    pyro.clear_param_store()
    mine = pyro.param("mine", torch.ones(2))
    vae = VAE(data_dim=16, latent_dim=2, hidden=[12])
    seen = []

    def look_at_the_store(x):
        seen.append(list(pyro.get_param_store().keys()))
        return x

    fit(
        vae.model, vae.guide, train, validation, epochs=2, batch_size=100, batch_transform=look_at_the_store,
        progress=False, **options,
    )  # fmt: skip
    assert len(seen) == 1 + 2 * 3 and all(keys == ["mine"] for keys in seen)
    assert list(pyro.get_param_store().keys()) == ["mine"]
    assert pyro.param("mine") is mine and torch.equal(mine, torch.ones(2))
    pyro.clear_param_store()


def test_svi_settings_have_the_fields_and_defaults_of_the_spec_table():
    assert [f.name for f in dataclasses.fields(SVISettings)] == list(SVISpec.model_fields)
    assert SVISettings(**SVISpec().model_dump()) == SVISettings()
    assert SVISettings(**SVISpec(lr=0.01, elbo="iwae").model_dump()) == SVISettings(lr=0.01, elbo="iwae")
