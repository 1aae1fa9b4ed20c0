import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ppgen.data.splits import Split, Splits, holdout_indices, split_indices
from ppgen.errors import DataError


def _assert_partition(parts, num_examples):
    everything = torch.cat(parts)
    assert everything.dtype == torch.int64
    assert torch.equal(everything.sort().values, torch.arange(num_examples))


@given(
    num_examples=st.integers(3, 2000),
    validation_fraction=st.floats(0.0, 0.6),
    test_fraction=st.floats(0.0, 0.6),
    seed=st.integers(0, 2**31),
)
def test_split_indices_is_a_partition_with_rounded_sizes(num_examples, validation_fraction, test_fraction, seed):
    num_validation = round(validation_fraction * num_examples)
    num_test = round(test_fraction * num_examples)
    if min(num_validation, num_test, num_examples - num_validation - num_test) <= 0:
        with pytest.raises(DataError, match="split would have"):
            split_indices(num_examples, validation_fraction, test_fraction, seed)
        return
    train, validation, test = split_indices(num_examples, validation_fraction, test_fraction, seed)
    num_train = num_examples - num_validation - num_test
    assert (len(train), len(validation), len(test)) == (num_train, num_validation, num_test)
    _assert_partition([train, validation, test], num_examples)


def test_split_indices_known_values():
    # Pinned numbers: the same seed must give the same split on every machine and every run.
    train, validation, test = split_indices(10, 0.2, 0.3, seed=0)
    assert train.tolist() == [4, 1, 7, 5, 3]
    assert validation.tolist() == [9, 0]
    assert test.tolist() == [8, 6, 2]


def test_split_indices_same_seed_same_split_different_seed_different_split():
    first = split_indices(1000, 0.1, 0.2, seed=3)
    again = split_indices(1000, 0.1, 0.2, seed=3)
    other = split_indices(1000, 0.1, 0.2, seed=4)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])


def test_split_indices_ignores_the_global_rng():
    state = torch.get_rng_state()
    split_indices(100, 0.1, 0.2, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("validation_fraction", "test_fraction", "message"),
    [
        (0.01, 0.2, "the validation split would have 0 examples"),
        (0.1, 0.04, "the test split would have 0 examples"),
        (0.5, 0.5, "the train split would have 0 examples"),
        (0.7, 0.5, "the train split would have -2 examples"),
        (-0.1, 0.2, "the validation split would have -1 examples"),
    ],
)
def test_split_indices_rejects_empty_splits(validation_fraction, test_fraction, message):
    with pytest.raises(DataError) as error:
        split_indices(10, validation_fraction, test_fraction, seed=0)
    assert str(error.value) == (
        f"cannot split 10 examples with validation_fraction={validation_fraction} "
        f"and test_fraction={test_fraction}: {message}"
    )


def test_holdout_indices_is_a_seeded_partition():
    train, validation = holdout_indices(600, 0.1, seed=1)
    assert (len(train), len(validation)) == (540, 60)
    _assert_partition([train, validation], 600)
    assert torch.equal(holdout_indices(600, 0.1, seed=1)[1], validation)
    assert not torch.equal(holdout_indices(600, 0.1, seed=2)[1], validation)


@pytest.mark.parametrize(
    ("validation_fraction", "message"),
    [(0.01, "the validation split would have 0 examples"), (1.0, "the train split would have 0 examples")],
)
def test_holdout_indices_rejects_empty_splits(validation_fraction, message):
    with pytest.raises(DataError) as error:
        holdout_indices(10, validation_fraction, seed=0)
    assert str(error.value) == f"cannot split 10 examples with validation_fraction={validation_fraction}: {message}"


def test_split_and_splits_hold_tensors_immutably():
    split = Split(torch.zeros(5, 6))
    assert len(split) == 5
    assert split.y is None
    splits = Splits(split, split, split, event_shape=(2, 3), binarize="none")
    assert splits.data_dim == 6
    with pytest.raises(dataclasses.FrozenInstanceError):
        splits.binarize = "dynamic"
    # Identity equality: comparing tensors elementwise inside == would raise.
    assert split == split
    assert split != Split(torch.zeros(5, 6))
