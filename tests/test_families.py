"""Every registered family through the same contract: built from its spec tables, its evaluation pair
bounds log p(x) from below, its draws and reconstructions have the data's shape, and ``evaluate_model``
runs on it; and a user's own model/guide pair gets the defaults."""

import math
from types import SimpleNamespace

import pyro
import pyro.distributions as dist
import pytest
import torch
from models_exact import ProbabilisticPCA
from pyro.nn import PyroModule, PyroParam

import ppgen.models.zoo
from ppgen.data import Split, Splits
from ppgen.evaluate import elbo, latent_kl, log_likelihood
from ppgen.generative_run import classify_accuracy, evaluate_model
from ppgen.models import (
    FAMILIES,
    GenerativeFamily,
    LossFamily,
    PairFamily,
    as_family,
    build_model,
    family_of,
    register_family,
)
from ppgen.spec.schema import EvaluationSpec, RunSpec, SamplingSpec

Z = 4.0  # standard errors
D, N, CLASSES = 6, 40, 3
# A tiny [model] table for every registered family (a new family adds one here), fitting binary data.
TINY = {
    "vae": {"latent_dim": 2, "hidden": [8]},
    "cvae": {"latent_dim": 2, "hidden": [8]},
    "hvae": {"latent_dims": [3, 2], "hidden": [8], "latent_hidden": [4]},
    "flow": {"layers": 2, "hidden": [8]},
    "ddpm": {"num_steps": 12, "schedule": "cosine", "hidden": [16], "time_dim": 8, "decoder": "bernoulli"},
    "nade": {"hidden": 8, "orderings": 2},
    "made": {"hidden": [8], "masks": 2},
    "mixture": {"components": 3, "likelihood": "bernoulli"},
    "ebm": {"hidden": [8], "langevin_steps": 2, "buffer_size": 16, "ais_steps": 5, "ais_chains": 8, "sample_steps": 2},
    "score": {"hidden": [8], "time_dim": 8, "num_levels": 3, "probes": 2, "ode_rtol": 1e-3, "ode_atol": 1e-3},
    "gan": {"latent_dim": 2, "generator_hidden": [8], "critic_hidden": [8]},
}
CONTINUOUS = {"ebm", "score", "gan"}  # families of continuous data, which refuse binarized data
TINY_SAMPLING = {"corrector_steps": 1, "langevin_steps": 1, "noise_levels": 3}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.full((N, D), 0.3), generator=generator), torch.arange(N) % CLASSES


def _spec(kind: str) -> RunSpec:
    binarize = "none" if kind in CONTINUOUS else "threshold"  # the data are 0/1 either way
    return RunSpec.model_validate({"data": {"binarize": binarize}, "model": {"kind": kind, **TINY[kind]}})


def _family(kind: str) -> tuple[GenerativeFamily, tuple[torch.Tensor, ...]]:
    pyro.set_rng_seed(0)
    x, y = _data()
    spec = _spec(kind)
    model = build_model(spec.model, (D,), spec.guide, y).eval()
    return model, tuple({"x": x, "y": y}[key] for key in model.data_keys)


def test_every_family_has_a_tiny_table():
    assert set(TINY) == set(FAMILIES)


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_a_spec_builds_its_family(kind):
    model, _ = _family(kind)
    assert type(model) is FAMILIES[kind] is family_of(_spec(kind).model)
    assert model.kind == kind and as_family(model) is model
    assert model.data_keys[0] == "x" and model.calls_per_pair >= 1


PAIRS = sorted(kind for kind, family in FAMILIES.items() if not issubclass(family, LossFamily))


@pytest.mark.parametrize("kind", PAIRS)
def test_the_evaluation_pair_bounds_log_p_from_below(kind):
    """Per example, E[IS estimate with K samples] >= E[one-sample log-weight] = ELBO, so the mean difference
    over the N independent examples is >= 0 up to Z of its standard errors (plus float rounding: a family
    without latent variables has identical estimates). An analytic ELBO has the same expectation as the
    pair's Monte Carlo one."""
    model, data = _family(kind)
    pair = model.evaluation_pair()
    monte_carlo = elbo(*pair, *data)
    estimate = log_likelihood(*pair, *data, num_samples=50).estimate
    assert monte_carlo.shape == estimate.shape == (N,)
    assert torch.isfinite(monte_carlo).all() and torch.isfinite(estimate).all()
    gap = estimate - monte_carlo
    rounding = 1e-5 * monte_carlo.abs().mean()
    assert gap.mean() >= -Z * gap.std() / math.sqrt(N) - rounding
    analytic = model.analytic_elbo(*data)
    if analytic is not None:
        difference = analytic - monte_carlo
        assert difference.mean().abs() <= Z * difference.std() / math.sqrt(N) + rounding


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_draws_and_reconstructions_have_the_data_shape(kind):
    model, data = _family(kind)
    for sampler in type(_spec(kind).model).samplers:
        samples = model.draw(5, SamplingSpec(sampler=sampler, **TINY_SAMPLING))
        assert samples.shape == (5, D) and torch.isfinite(samples).all(), sampler
    reconstructions = model.reconstruct(*data)
    assert reconstructions is None or reconstructions.shape == (N, D)


@pytest.mark.parametrize("kind", sorted(FAMILIES))
def test_evaluate_model_reports_what_the_family_offers(kind):
    model, data = _family(kind)
    binarize = _spec(kind).data.binarize
    splits = Splits(*[Split(*data)] * 3, event_shape=(D,), binarize=binarize)
    metrics = evaluate_model(model, splits, EvaluationSpec(num_samples=4, classify_samples=2))
    test = metrics["test"]
    assert math.isfinite(test[model.objective]) and test["nll_method"].startswith(model.likelihood or "none")
    if model.likelihood is not None:
        assert math.isfinite(test["nll"]) and test["nll_num_examples"] == N
    assert ("accuracy" in test) == model.classifies
    assert "kl_per_site" not in test or model.kl_per_site
    if model.classifies:
        assert 0 <= classify_accuracy(model, data, 2, None) <= 1


class _UserPair(PyroModule):
    """A user's own pair: probabilistic PCA with its exact posterior as the guide, and no parameters."""

    def __init__(self):
        super().__init__()
        self.ppca = ProbabilisticPCA()

    def model(self, x: torch.Tensor) -> None:
        self.ppca.model(x)

    def guide(self, x: torch.Tensor) -> None:
        self.ppca.exact_guide(x)


def test_a_users_own_pair_gets_the_defaults_and_its_exact_bounds():
    """With the exact posterior as guide every log-weight is log p(x): the ELBO and the importance-sampled
    log-likelihood both equal the closed-form evidence."""
    pair = _UserPair()
    family = as_family(pair)
    assert isinstance(family, PairFamily) and family.data_keys == ("x",) and family.calls_per_pair == 1
    assert family.evaluation_pair() == (pair.model, pair.guide) and family.analytic_elbo() is None
    assert not family.classifies and family.reconstruct() is None
    x = pair.ppca.sample(30)
    splits = Splits(*[Split(x)] * 3, event_shape=(5,), binarize="none")
    test = evaluate_model(pair, splits, EvaluationSpec(num_samples=8))["test"]
    exact = pair.ppca.log_evidence(x).mean().item()
    assert test["elbo"] == pytest.approx(exact, rel=1e-9) and test["nll"] == pytest.approx(-exact, rel=1e-9)
    assert list(test["kl_per_site"]) == ["z"]
    assert list(latent_kl(*family.evaluation_pair(), (x,))) == ["z"]


class _Gaussian(GenerativeFamily, PyroModule):
    """A new family in a few lines: x ~ N(loc, I) with a learned loc, no latent variables."""

    kind = "gaussian"

    def __init__(self, data_dim: int):
        super().__init__()
        self.loc = PyroParam(torch.zeros(data_dim))

    @classmethod
    def from_spec(cls, spec, event_shape, guide=None, labels=None) -> "_Gaussian":
        return cls(math.prod(event_shape))

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(self.loc, 1.0).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pass

    def sample(self, num_samples: int) -> torch.Tensor:
        return dist.Normal(self.loc, 1.0).sample((num_samples,))


def test_a_registered_family_is_built_from_its_kind(monkeypatch):
    monkeypatch.setattr(ppgen.models.zoo, "FAMILIES", dict(FAMILIES))
    assert register_family(_Gaussian) is _Gaussian and "gaussian" not in FAMILIES
    model = build_model(SimpleNamespace(kind="gaussian"), (4,))
    assert isinstance(model, _Gaussian) and model.draw(3, SamplingSpec()).shape == (3, 4)


def test_the_evaluate_packages_names_are_its_functions_whatever_was_imported_first():
    """A submodule named like the function it exports would replace the lazy name once imported directly."""
    import importlib

    import ppgen.evaluate

    for name, module in ppgen.evaluate._EXPORTS.items():
        importlib.import_module(module)
        assert callable(getattr(ppgen.evaluate, name)) and module.rsplit(".", 1)[1] != name, name
