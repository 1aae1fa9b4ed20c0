"""NADE and MADE: the autoregressive property, exact normalization, sampling frequencies, the exact held-out
log-likelihood through ``ppgen run``, the spec tables' checks, and the binarized MNIST loader."""

import itertools
import math
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from scipy import stats

from ppgen.data.load import load_data
from ppgen.errors import DataError, SpecError
from ppgen.models.autoregressive import MADE, NADE
from ppgen.runner import run
from ppgen.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]
BUDGET = (
    "inference.epochs=1", "inference.time_limit=2", "inference.device=cpu",
    "evaluation.max_examples=20", "model.seed=1",
)  # fmt: skip

# Small models of every kind: (name, constructor(D)). Ensembles have several orderings or masks.
MODELS = {
    "nade": lambda d, likelihood="bernoulli": NADE(d, hidden=8, likelihood=likelihood),
    "nade-3-orderings": lambda d, likelihood="bernoulli": NADE(d, hidden=8, likelihood=likelihood, orderings=3),
    "nade-mixture": lambda d, likelihood="gaussian": NADE(d, hidden=8, likelihood=likelihood, components=3),
    "made": lambda d, likelihood="bernoulli": MADE(d, hidden=[16, 12], likelihood=likelihood),
    "made-4-masks": lambda d, likelihood="bernoulli": MADE(d, hidden=[16], likelihood=likelihood, masks=4, seed=3),
}
BINARY = [name for name in MODELS if name != "nade-mixture"]


def build(name: str, data_dim: int, seed: int = 0, **options):
    """A model with its parameters moved off their initial values (biases start at 0), in eval mode: the ensemble."""
    torch.manual_seed(seed)
    model = MODELS[name](data_dim, **options)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    return model.eval()


def all_binary_vectors(data_dim: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=data_dim)))


def order_of(model, member: int) -> list[int]:
    """The dimensions in member's order."""
    if isinstance(model, NADE):
        return model.orders[member].tolist()
    return torch.argsort(model.degrees_0[member]).tolist()


@pytest.mark.parametrize("name", list(MODELS))
def test_each_conditional_depends_only_on_the_dimensions_before_it(name):
    """Changing the inputs at positions >= i leaves the conditionals at positions <= i exactly as they were, and
    changing the first input changes the last conditional (the network is not trivially constant)."""
    data_dim = 5
    likelihood = "gaussian" if name == "nade-mixture" else "bernoulli"
    model = build(name, data_dim)
    generator = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((6, data_dim), 0.5), generator=generator)
    if likelihood == "gaussian":
        x = torch.randn(6, data_dim, generator=generator)
    probe = x.roll(1, 0)  # fixed points at which every conditional's log-density is read
    for member in range(model.members):
        order = order_of(model, member)
        base = model.conditionals_of(x, member).log_prob(probe)
        for position in range(data_dim):
            changed = x.clone()
            later = order[position:]
            changed[:, later] = 1 - x[:, later] if likelihood == "bernoulli" else x[:, later] + 1.5
            after = model.conditionals_of(changed, member).log_prob(probe)
            assert torch.equal(after[:, order[: position + 1]], base[:, order[: position + 1]])
        changed = x.clone()
        changed[:, order[0]] = 1 - x[:, order[0]] if likelihood == "bernoulli" else x[:, order[0]] + 1.5
        assert not torch.equal(model.conditionals_of(changed, member).log_prob(probe)[:, order[-1]], base[:, order[-1]])


@pytest.mark.parametrize("name", BINARY)
def test_probabilities_of_all_binary_vectors_sum_to_one(name):
    """Each member and the ensemble: sum over the 2^4 vectors of p(x) = 1 up to float32 rounding (16 terms of
    relative error ~1e-6 each)."""
    model = build(name, 4)
    x = all_binary_vectors(4)
    with torch.no_grad():
        for member in [*range(model.members), None]:
            assert model.log_prob(x, member).exp().sum().item() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("name", ["nade-3-orderings", "made-4-masks", "nade", "made"])
def test_sampling_frequencies_match_the_probabilities(name):
    """8000 ensemble draws over the 2^3 outcomes: Pearson's chi-square against the exact probabilities stays
    below its 0.1% critical value (7 degrees of freedom), with a fixed seed."""
    model = build(name, 3)
    x = all_binary_vectors(3)
    probabilities = model.log_prob(x).exp().detach().double()
    pyro.set_rng_seed(0)
    draws = model.sample(8000)
    index = (draws * torch.tensor([4.0, 2.0, 1.0])).sum(-1).long()  # the row of x each draw equals
    counts = torch.bincount(index, minlength=8).double()
    expected = 8000 * probabilities
    assert expected.min() > 5  # the chi-square approximation holds
    statistic = ((counts - expected) ** 2 / expected).sum().item()
    assert statistic < stats.chi2.ppf(0.999, df=7)


@pytest.mark.parametrize(
    ("name", "data_dim"),
    [("nade-mixture", 1), ("nade-mixture", 2), ("nade", 2), ("made", 2), ("made-4-masks", 2), ("nade-3-orderings", 2)],
)
def test_real_valued_density_integrates_to_one(name, data_dim):
    """A Riemann sum of p(x) on a grid of step 0.04 over [-10, 10]^D: the conditionals are Gaussians (or mixtures)
    whose scales, near softplus(0) ~ 0.7 here, are many steps wide, so the sum's error is far below 1e-3."""
    torch.manual_seed(0)
    model = MODELS[name](data_dim, likelihood="gaussian").eval()  # the initial network: scales of order 1
    axis = torch.linspace(-10, 10, 501)
    grid = torch.cartesian_prod(*[axis] * data_dim).reshape(-1, data_dim)
    with torch.no_grad():
        mass = model.exact_log_prob(grid).exp().sum().item() * (axis[1] - axis[0]).item() ** data_dim
    assert mass == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("name", list(MODELS))
def test_the_elbo_of_the_pair_is_the_exact_log_likelihood(name):
    """The guide has no sites, so Trace_ELBO of the pair is log p(x) (the ensemble's in eval mode), and the held-out
    log-likelihood is that value with standard error 0."""
    model = build(name, 4)
    x = torch.randn(7, 4) if name == "nade-mixture" else all_binary_vectors(4)[:7]
    loss = pyro.infer.Trace_ELBO().differentiable_loss(model.model, model.guide, x)
    exact = model.exact_log_prob(x)
    assert -loss.item() == pytest.approx(exact.sum().item(), rel=1e-6)
    estimate = model.held_out_log_likelihood(x, num_samples=100, chunk_size=3)
    assert torch.allclose(estimate.estimate, exact) and estimate.mean_stderr() == 0.0 and estimate.num_samples == 1


@pytest.mark.parametrize("name", ["nade-3-orderings", "made-4-masks"])
def test_training_scores_a_batch_under_one_member(name):
    """In training mode the model's log-likelihood is one member's log p_k(x), drawn per call, each member in turn."""
    model = build(name, 4).train()
    x = all_binary_vectors(4)
    members = torch.stack([model.log_prob(x, k).sum() for k in range(model.members)])
    seen = set()
    for _ in range(40):
        trace = pyro.poutine.trace(model.model).get_trace(x)
        value = trace.log_prob_sum()
        matches = torch.isclose(members, value, rtol=1e-6).nonzero().flatten().tolist()
        assert len(matches) >= 1
        seen.update(matches)
    assert seen == set(range(model.members))  # 40 draws miss one of 4 members with probability < 4 (3/4)^40 ~ 1e-5


def test_made_masks_come_from_the_seed_and_are_saved():
    first, again, other = (MADE(6, hidden=[8, 8], masks=3, seed=seed) for seed in (0, 0, 1))
    for name in first.degree_names:
        assert torch.equal(getattr(first, name), getattr(again, name))
        assert name in first.state_dict()
    assert not all(torch.equal(getattr(first, name), getattr(other, name)) for name in first.degree_names)
    assert torch.equal(first.degrees_0[0], torch.arange(1, 7))  # the first mask has the natural order


def test_model_without_data_draws_one_example():
    model = build("made-4-masks", 5)
    assert model.model().shape == (1, 5) and set(model.model().unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("spec", ["nade", "made"])
def test_spec_runs_and_reports_the_exact_log_likelihood(spec, tmp_path):
    metrics = run(load_spec(REPO / "models" / f"{spec}.toml", overrides=BUDGET), tmp_path / "run", progress=False)
    test = metrics["test"]
    assert test["nll_method"] == "exact" and test["nll_stderr"] == 0.0 and test["nll_num_samples"] == 1
    assert math.isfinite(test["nll"]) and test["nll"] > 0
    assert "kl_per_site" not in test


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["data.binarize='none'"],
            "model.likelihood = 'bernoulli' needs binary data: set data.binarize to 'dynamic' or 'threshold'",
        ),
        (["model.likelihood='gaussian'"], "model.likelihood = 'gaussian' is a density of real-valued data"),
        (
            ["model.components=3"],
            "model.components = 3 applies to likelihood 'gaussian' (RNADE's mixtures), not 'bernoulli'",
        ),
    ],
)
def test_spec_refuses_a_likelihood_that_does_not_fit_the_data(overrides, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        load_spec(REPO / "models" / "nade.toml", overrides=overrides)
    assert "\n" not in str(error.value)


def test_spec_takes_gaussian_nade_on_real_valued_data_and_bernoulli_on_binarized_mnist():
    spec = load_spec(
        REPO / "models" / "nade.toml",
        overrides=["data.binarize='none'", "data.dequantize=true", "model.likelihood='gaussian'", "model.components=2"],
    )
    assert spec.model.components == 2
    spec = load_spec(REPO / "models" / "made.toml", overrides=["data.name='binarized_mnist'", "data.binarize='none'"])
    assert spec.data.name == "binarized_mnist"


# The binarized MNIST loader, on a tiny file of the real one's layout.


def write_binarized_mnist(path: Path, sizes=(5, 3, 2), **changes) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        name: rng.integers(0, 2, (size, 784), dtype=np.uint8) for name, size in zip(("train", "valid", "test"), sizes)
    }
    arrays.update(changes)
    np.savez_compressed(path, **{name: array for name, array in arrays.items() if array is not None})
    return path


def test_binarized_mnist_keeps_its_official_splits(tmp_path, monkeypatch):
    path = write_binarized_mnist(tmp_path / "binarized_mnist.npz")
    monkeypatch.delenv("PPGEN_DATA", raising=False)
    for binarize in ("none", "dynamic", "threshold"):  # every mode leaves binary data as it is
        splits = load_data("binarized_mnist", path=path, binarize=binarize, validation_fraction=0.5, seed=4)
        with np.load(path) as arrays:
            for split, name in zip((splits.train, splits.validation, splits.test), ("train", "valid", "test")):
                assert split.y is None and split.x.dtype == torch.float32
                assert torch.equal(split.x, torch.from_numpy(arrays[name]).float())
        assert splits.event_shape == (28, 28) and splits.binarize == "none"


def test_binarized_mnist_is_found_in_a_folder_or_under_ppgen_data(tmp_path, monkeypatch):
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    write_binarized_mnist(folder / "binarized_mnist.npz")
    assert len(load_data("binarized_mnist", path=folder).train) == 5
    monkeypatch.setenv("PPGEN_DATA", str(tmp_path))
    assert len(load_data("binarized_mnist").test) == 2
    monkeypatch.delenv("PPGEN_DATA")
    with pytest.raises(DataError, match="binarized MNIST needs its .npz file: set data.path, or PPGEN_DATA"):
        load_data("binarized_mnist")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"valid": None}, "no array 'valid' \\(it needs train, valid and test\\)"),
        ({"test": np.zeros((2, 784), dtype=np.float32)}, "array 'test' is float32 of shape \\(2, 784\\), not uint8"),
        ({"train": np.zeros((5, 28, 28), dtype=np.uint8)}, "array 'train' is uint8 of shape \\(5, 28, 28\\)"),
        ({"train": np.full((5, 784), 255, dtype=np.uint8)}, "array 'train' holds values other than 0 and 1"),
        ({"train": np.zeros((0, 784), dtype=np.uint8)}, "with N >= 1"),
        ({"train": np.array([None, 1], dtype=object)}, "cannot be read as an .npz of arrays"),
    ],
)
def test_a_bad_binarized_mnist_file_is_one_line(tmp_path, changes, message):
    path = write_binarized_mnist(tmp_path / "bad.npz", **changes)
    with pytest.raises(DataError, match=message) as error:
        load_data("binarized_mnist", path=path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize("content", [b"not a zip file", None])
def test_a_missing_or_unreadable_binarized_mnist_file_is_one_line(tmp_path, content):
    path = tmp_path / "binarized_mnist.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match="not found" if content is None else "cannot be read") as error:
        load_data("binarized_mnist", path=path)
    assert "\n" not in str(error.value)
