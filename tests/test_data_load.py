import numpy as np
import pytest
import torch

from ppgen.data.digits import load_digits
from ppgen.data.load import DATASET_NAMES, load_data
from ppgen.data.splits import split_indices
from ppgen.data.toy import TOY_SETS, make_toy
from ppgen.errors import DataError

# Digit counts of scikit-learn's bundled digits (its documentation: 1797 examples, ~180 per class).
DIGITS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.fixture
def unit_file(tmp_path):
    """A .npz file of 50 labelled [50, 3, 2] intensities in [0, 1]."""
    rng = np.random.default_rng(0)
    path = tmp_path / "images.npz"
    np.savez(path, x=rng.random((50, 3, 2)), y=rng.integers(0, 4, 50))
    return path


def _all_splits(splits):
    return splits.train, splits.validation, splits.test


def test_load_digits():
    x, y = load_digits()
    assert x.shape == (1797, 64) and x.dtype == torch.float32
    assert y.shape == (1797,) and y.dtype == torch.int64
    assert (x.min(), x.max()) == (0.0, 1.0)
    assert torch.equal(x * 16, (x * 16).round())  # pixel counts 0..16, divided by 16
    assert torch.bincount(y).tolist() == DIGITS_COUNTS


def test_digits_splits_follow_split_indices():
    splits = load_data("digits", validation_fraction=0.1, test_fraction=0.2, seed=3)
    # round(0.1 * 1797) = 180, round(0.2 * 1797) = 359.
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (1258, 180, 359)
    assert splits.event_shape == (8, 8) and splits.data_dim == 64 and splits.binarize == "none"
    x, y = load_digits()
    for split, index in zip(_all_splits(splits), split_indices(1797, 0.1, 0.2, seed=3)):
        assert torch.equal(split.x, x[index]) and torch.equal(split.y, y[index])


def test_same_seed_same_splits_different_seed_different_splits():
    first, again, other = (load_data("digits", seed=seed) for seed in (0, 0, 1))
    assert all(torch.equal(a.x, b.x) and torch.equal(a.y, b.y) for a, b in zip(_all_splits(first), _all_splits(again)))
    assert not torch.equal(first.test.y, other.test.y)


@pytest.mark.parametrize("name", ["digits", "file", *TOY_SETS])
def test_tensors_are_contiguous_float32_on_the_cpu(name, unit_file):
    splits = load_data(name, path=unit_file, num_examples=100)
    for split in _all_splits(splits):
        assert split.x.dtype == torch.float32 and split.x.device.type == "cpu" and split.x.is_contiguous()
        assert split.x.shape[1] == splits.data_dim
        assert split.y is None or (split.y.dtype == torch.int64 and split.y.shape == (len(split),))


@pytest.mark.parametrize("name", TOY_SETS)
def test_toy_sets(name):
    splits = load_data(name, num_examples=1000, noise=0.05, validation_fraction=0.25, test_fraction=0.25, seed=2)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (500, 250, 250)
    assert splits.event_shape == (2,) and splits.train.y is None
    everything = torch.cat([split.x for split in _all_splits(splits)])
    expected = make_toy(name, 1000, noise=0.05, seed=2)
    assert torch.equal(everything.sort(dim=0).values, expected.sort(dim=0).values)


@pytest.mark.parametrize("binarize", ["threshold", "dynamic"])
def test_toy_sets_cannot_be_binarized(binarize):
    with pytest.raises(DataError) as error:
        load_data("moons", binarize=binarize)
    assert str(error.value) == f"toy data set 'moons' is continuous 2-D data: binarize must be 'none', not {binarize!r}"


def test_file(unit_file):
    splits = load_data("file", path=unit_file, validation_fraction=0.2, test_fraction=0.2, seed=0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (30, 10, 10)
    assert splits.event_shape == (3, 2) and splits.data_dim == 6
    with np.load(unit_file) as data:
        x, y = torch.from_numpy(data["x"].reshape(50, 6).astype(np.float32)), torch.from_numpy(data["y"])
    for split, index in zip(_all_splits(splits), split_indices(50, 0.2, 0.2, seed=0)):
        assert torch.equal(split.x, x[index]) and torch.equal(split.y, y[index])


def test_file_needs_a_path():
    with pytest.raises(DataError) as error:
        load_data("file")
    assert str(error.value) == "data.path is required when data.name = 'file'"


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=f"^data file {tmp_path / 'none.csv'} does not exist$"):
        load_data("file", path=tmp_path / "none.csv")


def test_threshold_binarizes_every_split():
    plain = load_data("digits", seed=0)
    binary = load_data("digits", binarize="threshold", threshold=0.3, seed=0)
    assert binary.binarize == "threshold"
    for plain_split, binary_split in zip(_all_splits(plain), _all_splits(binary)):
        assert torch.equal(binary_split.x, (plain_split.x > 0.3).float())
        assert torch.equal(binary_split.y, plain_split.y)


def test_dynamic_keeps_train_and_fixes_validation_and_test():
    plain = load_data("digits", seed=0)
    rng_state = torch.get_rng_state()
    dynamic = load_data("digits", binarize="dynamic", seed=0)
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert dynamic.binarize == "dynamic"
    assert torch.equal(dynamic.train.x, plain.train.x)
    for plain_split, dynamic_split in ((plain.validation, dynamic.validation), (plain.test, dynamic.test)):
        assert set(dynamic_split.x.unique().tolist()) == {0.0, 1.0}
        assert (dynamic_split.x[plain_split.x == 0] == 0).all() and (dynamic_split.x[plain_split.x == 1] == 1).all()
        assert torch.equal(dynamic_split.y, plain_split.y)
    again = load_data("digits", binarize="dynamic", seed=0)
    assert torch.equal(again.validation.x, dynamic.validation.x) and torch.equal(again.test.x, dynamic.test.x)
    other = load_data("digits", binarize="dynamic", seed=1)
    assert not torch.equal(other.test.x, dynamic.test.x)


@pytest.mark.parametrize("binarize", ["threshold", "dynamic"])
def test_binarizing_values_outside_the_unit_interval(tmp_path, binarize):
    path = tmp_path / "counts.npy"
    np.save(path, np.arange(40).reshape(20, 2))
    with pytest.raises(DataError) as error:
        load_data("file", path=path, binarize=binarize)
    assert str(error.value).startswith(f"{path}: values span [")
    assert load_data("file", path=path).train.x.max() > 1  # unbinarized data is left as it is


def test_unknown_names_and_modes():
    with pytest.raises(DataError) as error:
        load_data("cifar10")
    assert str(error.value) == (
        "unknown data set 'cifar10'; valid names: digits, mnist, binarized_mnist, file, moons, rings,"
        " eight_gaussians, checkerboard"
    )
    assert DATASET_NAMES == ("digits", "mnist", "binarized_mnist", "file", *TOY_SETS)
    with pytest.raises(DataError) as error:
        load_data("digits", binarize="stochastic")
    assert str(error.value) == "unknown binarize mode 'stochastic'; valid modes: none, threshold, dynamic"


def test_fractions_that_leave_a_split_empty():
    with pytest.raises(DataError) as error:
        load_data("moons", num_examples=10, validation_fraction=0.6, test_fraction=0.4)
    assert str(error.value) == (
        "cannot split 10 examples with validation_fraction=0.6 and test_fraction=0.4: "
        "the train split would have 0 examples"
    )
