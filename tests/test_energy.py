"""The energy-based model family (ppgen.models.energy): its spec table, its losses, its replay buffer through a
checkpoint, its AIS log-likelihood during training, and runs of the shipped specs."""

import math
from pathlib import Path

import pyro
import pytest
import torch

from ppgen.data import load_data
from ppgen.errors import SpecError
from ppgen.infer import fit
from ppgen.models import EBM, build_model, family_of
from ppgen.runner import run
from ppgen.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]
MOONS_SPEC, DIGITS_SPEC = REPO / "models" / "ebm-moons.toml", REPO / "models" / "ebm-digits.toml"


class Crash(Exception):
    pass


@pytest.fixture(scope="module")
def moons():
    splits = load_data("moons", binarize="none", num_examples=1000)
    return splits.train.x, splits.test.x


def _tiny_ebm(**options) -> EBM:
    settings = dict(hidden=[32, 32], langevin_steps=5, step_size=0.01, buffer_size=256, alpha=0.01)
    return EBM(2, **{**settings, **options})


def test_the_spec_builds_an_ebm_with_its_keys():
    spec = load_spec(MOONS_SPEC, overrides=["model.objective='dsm'", "model.dsm_sigma=0.2"])
    ebm = build_model(spec.model, (2,))
    assert isinstance(ebm, EBM) and family_of(spec.model) is EBM and spec.sampling.sampler == "langevin"
    assert (ebm.objective, ebm.validates, ebm.dsm_sigma, ebm.langevin_steps) == ("dsm_loss", True, 0.2, 10)
    assert ebm.replay.shape == (2000, 2)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.binarize='dynamic'", "data.binarize = 'dynamic' must be 'none'"),
        ("model.objective='nce'", "model.objective"),
        ("model.reinit=1.0", "model.reinit"),
        ("model.ais_chains=1", "model.ais_chains"),
        ("model.hidden=[]", "model.hidden"),
        ("sampling.sampler='ancestral'", "sampling.sampler = 'ancestral' does not apply to model.kind = 'ebm'"),
    ],
)
def test_spec_errors_name_the_key(override, message):
    with pytest.raises(SpecError, match=message) as error:
        load_spec(MOONS_SPEC, overrides=[override])
    assert "\n" not in str(error.value)


def test_langevin_moves_the_chain_without_gradients_into_the_network(moons):
    train, _ = moons
    pyro.set_rng_seed(0)
    ebm = _tiny_ebm()
    ebm.fit_base(train)
    with torch.no_grad():
        moved = ebm.langevin(train[:16], 5)
    assert moved.shape == (16, 2) and not moved.requires_grad and not torch.equal(moved, train[:16])
    assert all(parameter.grad is None for parameter in ebm.parameters())


def test_contrastive_divergence_writes_its_negatives_back_only_in_training(moons):
    train, _ = moons
    pyro.set_rng_seed(0)
    ebm = _tiny_ebm()
    ebm.loss(train[:32])  # the first training batch fits the base and refills the buffer
    assert ebm.base_fitted and torch.allclose(ebm.base_loc, train[:32].mean(0))
    before = ebm.replay.clone()
    ebm.eval()
    with torch.no_grad():  # as the trainer's validation and the evaluation call it
        loss = ebm.loss(train[:32])
    assert loss.shape == (32,) and torch.isfinite(loss).all() and torch.equal(ebm.replay, before)
    ebm.train()
    ebm.loss(train[:32]).sum().backward()
    changed = (ebm.replay != before).any(-1).sum().item()
    assert 0 < changed <= 32  # the 32 sampled entries (fewer where an index repeats)
    assert all(parameter.grad is not None for parameter in ebm.parameters())


def test_denoising_score_matching_of_the_base_alone_is_its_exact_expectation():
    """With f = 0 the energy is -log N(x; m, S), so s(x~) = -S^-1 (x~ - m). For x ~ N(m, S), x~ = x + sigma eps and
    S = I, E[sigma^2 / 2 |s(x~) + eps / sigma|^2] = sigma^2 / 2 E|-(x - m) - sigma eps + eps / sigma|^2
    = sigma^2 / 2 D (1 + (1 / sigma - sigma)^2). A mean over 20,000 examples: relative standard error under 1%;
    the tolerance is 4%."""
    pyro.set_rng_seed(0)
    ebm = EBM(3, hidden=[4], objective="dsm", dsm_sigma=0.5)
    torch.nn.init.zeros_(ebm.network[-1].weight)
    torch.nn.init.zeros_(ebm.network[-1].bias)
    ebm.base_fitted.fill_(True)  # the base stays N(0, I)
    loss = ebm.loss(torch.randn(20000, 3))
    sigma = 0.5
    assert loss.mean().item() == pytest.approx(sigma**2 / 2 * 3 * (1 + (1 / sigma - sigma) ** 2), rel=0.04)
    loss.mean().backward()  # the score's graph reaches the network (create_graph in training)
    assert ebm.network[-1].weight.grad is not None and ebm.network[-1].weight.grad.abs().sum() > 0
    ebm.eval()
    with torch.no_grad():  # validation still differentiates the energy with respect to x
        assert torch.isfinite(ebm.loss(torch.randn(8, 3))).all()


def test_the_ais_log_likelihood_rises_during_short_training(moons):
    """Before training p is the Gaussian base (fitted to the first batch, as training fits it) tilted by a random
    network; 200 CD steps move it towards the moons. The rise is compared with its standard error: each estimate's
    error is that of its log Z (stderr < 0.05)."""
    train, test = moons
    pyro.set_rng_seed(0)
    ebm = _tiny_ebm(alpha=0.1, ais_steps=100, ais_chains=200)
    ebm.fit_base(train[:64])
    before = ebm.held_out_log_likelihood(test, num_samples=200, chunk_size=None)
    fit(*ebm.training_pair(), train, epochs=20, batch_size=64, lr=3e-3, progress=False)
    after = ebm.held_out_log_likelihood(test, num_samples=200, chunk_size=None)
    rise = (after.estimate.mean() - before.estimate.mean()).item()
    error = math.hypot(before.shared_stderr, after.shared_stderr)
    assert max(before.shared_stderr, after.shared_stderr) < 0.05
    assert rise > 3 * error and rise > 0.05
    assert after.num_samples == 200 and torch.equal(after.stderr, torch.full_like(after.estimate, after.shared_stderr))


def _fit(train, checkpoint, crash_at=None, resume=False):
    pyro.set_rng_seed(0)
    ebm = _tiny_ebm()
    calls = {"batches": 0}

    def transform(x):  # fit applies it to the first batch once before training starts
        calls["batches"] += 1
        if crash_at is not None and calls["batches"] == crash_at + 1:
            raise Crash
        return x

    settings = dict(epochs=3, batch_size=64, lr=3e-3, checkpoint_every=5, log_every=5, progress=False)
    fit(*ebm.training_pair(), train, checkpoint=checkpoint, resume=resume, batch_transform=transform, **settings)
    return ebm


def test_the_replay_buffer_is_checkpointed_and_a_resumed_run_ends_exactly_where_an_unbroken_one_does(moons, tmp_path):
    train, _ = moons
    reference = _fit(train, tmp_path / "reference.pt")
    assert {"replay", "base_loc", "base_scale_tril", "base_fitted"} <= set(reference.state_dict())
    with pytest.raises(Crash):  # step 12 crashes; the checkpoint of step 10 survives
        _fit(train, tmp_path / "broken.pt", crash_at=12)
    resumed = _fit(train, tmp_path / "broken.pt", resume=True)
    for (name, expected), actual in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(actual, expected), name


def test_samples_are_langevin_draws_of_the_asked_shape(moons):
    train, _ = moons
    pyro.set_rng_seed(0)
    ebm = _tiny_ebm(sample_steps=5)
    ebm.fit_base(train)
    samples = ebm.draw(7, sampling=None)
    assert samples.shape == (7, 2) and torch.isfinite(samples).all() and not samples.requires_grad


# The shipped specs with a tiny budget: one epoch capped at a second, a short AIS, short sampling chains.
TINY = (
    "inference.epochs=1", "inference.time_limit=1", "inference.device=cpu", "evaluation.max_examples=20",
    "model.ais_steps=20", "model.ais_chains=50", "model.sample_steps=5",
)  # fmt: skip


@pytest.mark.parametrize("path", [MOONS_SPEC, DIGITS_SPEC], ids=["moons", "digits"])
def test_a_short_run_of_each_spec_reports_ais_and_the_cd_loss(path, tmp_path):
    metrics = run(load_spec(path, overrides=TINY), tmp_path / "run", progress=False)
    assert metrics["training"]["objective"] == "cd_loss" and metrics["training"]["steps"] >= 1
    assert all(math.isfinite(metrics[split]["cd_loss"]) for split in ("train", "validation", "test"))
    test = metrics["test"]
    assert test["nll_method"] == "AIS" and test["nll_num_samples"] == 50 and test["nll_num_examples"] == 20
    assert all(math.isfinite(test[key]) for key in ("nll", "nll_stderr", "nll_bits_per_dim"))
