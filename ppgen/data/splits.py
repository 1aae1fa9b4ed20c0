"""Train/validation/test splits of a data set, and the seeded index partitions that make them."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from ppgen.data.binarize import dynamic_binarize
from ppgen.data.dequantize import dequantize
from ppgen.errors import DataError

__all__ = ["Split", "Splits", "split_indices", "holdout_indices"]


# eq=False: the generated __eq__ would compare tensors elementwise and fail on truth-testing them.
@dataclass(frozen=True, eq=False)
class Split:
    """One split of a data set.

    Args:
        x: [N, D] float32 examples, flattened.
        y: [N] int64 labels, or None when the source has none.
    """

    x: Tensor
    y: Tensor | None = None

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True, eq=False)
class Splits:
    """The train, validation and test splits of a data set and how to read them.

    Args:
        train, validation, test: the three splits.
        event_shape: shape of one example before flattening, e.g. (8, 8) for digits.
        binarize: "none", "threshold" or "dynamic"; with "dynamic" the trainer binarizes each train batch.
        levels: pixel values per dimension when the data are discrete (17 for digits, 256 for MNIST).
        dequantize: whether validation and test hold dequantized pixels and each train batch is to be
            dequantized afresh (see ``ppgen.data.dequantize``).
    """

    train: Split
    validation: Split
    test: Split
    event_shape: tuple[int, ...]
    binarize: str
    levels: int | None = None
    dequantize: bool = False

    def batch_transform(self) -> Callable[[Tensor], Tensor] | None:
        """What the trainer applies to every training batch: a fresh binarization or dequantization."""
        if self.binarize == "dynamic":
            return dynamic_binarize
        if self.dequantize:
            return partial(dequantize, levels=self.levels)
        return None

    def fixed_train(self) -> Tensor:
        """The training examples as evaluation sees them: binarized or dequantized once, reproducibly."""
        generator = torch.Generator().manual_seed(0)
        if self.binarize == "dynamic":
            return torch.bernoulli(self.train.x, generator=generator)
        if self.dequantize:
            return dequantize(self.train.x, self.levels, generator)
        return self.train.x

    @property
    def data_dim(self) -> int:
        """D = prod(event_shape), the length of one flattened example."""
        return math.prod(self.event_shape)


def _partition(num_examples: int, sizes: dict[str, int], seed: int, fractions: str) -> tuple[Tensor, ...]:
    """Cut a seeded permutation of range(num_examples) into parts of the given sizes, in order."""
    for part, size in sizes.items():
        if size <= 0:
            raise DataError(
                f"cannot split {num_examples} examples with {fractions}: the {part} split would have {size} examples"
            )
    # A CPU generator gives the same permutation on every machine, whatever the default device.
    generator = torch.Generator(device="cpu").manual_seed(seed)
    permutation = torch.randperm(num_examples, generator=generator, device="cpu")
    return permutation.split(list(sizes.values()))


def split_indices(
    num_examples: int, validation_fraction: float, test_fraction: float, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Shuffled, disjoint and exhaustive train/validation/test indices, the same for the same seed.

    Args:
        num_examples: N, the number of examples to split.
        validation_fraction, test_fraction: the validation and test splits get round(fraction * N) examples;
            train gets the rest.
        seed: seed of the permutation.

    Returns:
        train, validation, test: int64 index tensors.

    Raises:
        DataError: if any split would be empty.
    """
    num_validation = round(validation_fraction * num_examples)
    num_test = round(test_fraction * num_examples)
    sizes = {"train": num_examples - num_validation - num_test, "validation": num_validation, "test": num_test}
    fractions = f"validation_fraction={validation_fraction} and test_fraction={test_fraction}"
    train, validation, test = _partition(num_examples, sizes, seed, fractions)
    return train, validation, test


def holdout_indices(num_examples: int, validation_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Shuffled train/validation indices, for sources that ship their own test set (MNIST).

    Args:
        num_examples: N, the number of examples to split.
        validation_fraction: the validation split gets round(validation_fraction * N) examples; train the rest.
        seed: seed of the permutation.

    Returns:
        train, validation: int64 index tensors.

    Raises:
        DataError: if either split would be empty.
    """
    num_validation = round(validation_fraction * num_examples)
    sizes = {"train": num_examples - num_validation, "validation": num_validation}
    train, validation = _partition(num_examples, sizes, seed, f"validation_fraction={validation_fraction}")
    return train, validation
