"""One entry point from a data set's name to its train/validation/test splits, binarized as asked."""

import os
from pathlib import Path

import torch
from torch import Tensor

from ppgen.data.arrays import load_array_file
from ppgen.data.binarize import BINARIZE_MODES, check_unit_interval, threshold_binarize
from ppgen.data.binarized_mnist import BINARIZED_MNIST_FILE, load_binarized_mnist
from ppgen.data.dequantize import DATASET_LEVELS
from ppgen.data.dequantize import dequantize as dequantize_pixels
from ppgen.data.digits import load_digits
from ppgen.data.mnist import load_mnist
from ppgen.data.splits import Split, Splits, holdout_indices, split_indices
from ppgen.data.toy import TOY_SETS, make_toy
from ppgen.errors import DataError

__all__ = ["DATASET_NAMES", "load_data"]

DATASET_NAMES = ("digits", "mnist", "binarized_mnist", "file", *TOY_SETS)


def _take(x: Tensor, y: Tensor | None, index: Tensor) -> Split:
    return Split(x[index], None if y is None else y[index])


def _split_by_fractions(
    x: Tensor, y: Tensor | None, validation_fraction: float, test_fraction: float, seed: int
) -> tuple[Split, Split, Split]:
    train, validation, test = split_indices(len(x), validation_fraction, test_fraction, seed)
    return _take(x, y, train), _take(x, y, validation), _take(x, y, test)


def _mnist_directory(path: str | os.PathLike | None) -> Path:
    if path is not None:
        return Path(path)
    if os.environ.get("PPGEN_DATA"):
        return Path(os.environ["PPGEN_DATA"]) / "mnist"
    raise DataError(
        "MNIST needs the directory of its IDX files: set data.path, or PPGEN_DATA to a folder holding mnist/"
    )


def _binarized_mnist_file(path: str | os.PathLike | None) -> Path:
    """data.path (the .npz, or a folder holding binarized_mnist.npz), else $PPGEN_DATA/binarized_mnist/."""
    if path is not None:
        path = Path(path)
        return path / BINARIZED_MNIST_FILE if path.is_dir() else path
    if os.environ.get("PPGEN_DATA"):
        return Path(os.environ["PPGEN_DATA"]) / "binarized_mnist" / BINARIZED_MNIST_FILE
    raise DataError(
        f"binarized MNIST needs its .npz file: set data.path, or PPGEN_DATA to a folder holding"
        f" binarized_mnist/{BINARIZED_MNIST_FILE}"
    )


def _load_splits(
    name: str,
    path: str | os.PathLike | None,
    validation_fraction: float,
    test_fraction: float,
    num_examples: int,
    noise: float | None,
    seed: int,
) -> tuple[tuple[Split, Split, Split], tuple[int, ...]]:
    """The unbinarized splits of a named data set and its event shape."""
    if name == "digits":
        x, y = load_digits()
        return _split_by_fractions(x, y, validation_fraction, test_fraction, seed), (8, 8)
    if name == "mnist":
        train_x, train_y, test_x, test_y = load_mnist(_mnist_directory(path))
        train, validation = holdout_indices(len(train_x), validation_fraction, seed)
        splits = _take(train_x, train_y, train), _take(train_x, train_y, validation), Split(test_x, test_y)
        return splits, (28, 28)
    if name == "binarized_mnist":
        train, validation, test = load_binarized_mnist(_binarized_mnist_file(path))
        return (Split(train, None), Split(validation, None), Split(test, None)), (28, 28)
    if name == "file":
        if path is None:
            raise DataError("data.path is required when data.name = 'file'")
        x, y, event_shape = load_array_file(path)
        return _split_by_fractions(x, y, validation_fraction, test_fraction, seed), event_shape
    x = make_toy(name, num_examples, noise=noise, seed=seed)
    return _split_by_fractions(x, None, validation_fraction, test_fraction, seed), (2,)


def load_data(
    name: str,
    *,
    path: str | os.PathLike | None = None,
    binarize: str = "none",
    threshold: float = 0.5,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    num_examples: int = 10000,
    noise: float | None = None,
    dequantize: bool = False,
    seed: int = 0,
) -> Splits:
    """Load a data set by name and split it into train, validation and test sets.

    Args:
        name: "digits" (scikit-learn's 8x8 digits), "mnist" (IDX files), "binarized_mnist" (the fixed binarization
            of Larochelle & Murray 2011, with its official 50,000/10,000/10,000 splits and no labels), "file" (a
            user's .npz/.npy/.csv) or a toy set from TOY_SETS.
        path: the MNIST directory (default $PPGEN_DATA/mnist), the binarized MNIST .npz or its folder (default
            $PPGEN_DATA/binarized_mnist/binarized_mnist.npz) or the user's file; unused otherwise.
        binarize: "none"; "threshold" (every split becomes x > threshold); or "dynamic" (train keeps its
            intensities for the trainer to binarize afresh on each batch; validation and test are binarized
            once, by a generator seeded with `seed`, so they are fixed). Not for toy sets. Binarized MNIST is
            binary already, which every mode leaves as it is: none is applied.
        threshold: the threshold of "threshold" binarization.
        validation_fraction: share of the examples (for MNIST, of the 60,000 training images) held out;
            binarized MNIST keeps its official validation split.
        test_fraction: share of the examples in the test split; MNIST and binarized MNIST use their official
            10,000 test images.
        num_examples: number of points drawn from a toy set.
        noise: noise of a toy set (None: its default).
        dequantize: keep discrete pixels for the trainer to dequantize afresh on each batch, and dequantize
            validation and test once, by a generator seeded with `seed` (digits and MNIST only).
        seed: seed of the split, of a toy set's points and of the fixed binarization or dequantization.

    Returns:
        Splits of [N, D] float32 CPU tensors (with [N] int64 labels for digits, MNIST and files with "y").

    Raises:
        DataError: for an unknown name or mode, a missing path, a bad file, an empty split, or intensities
            outside [0, 1] when binarizing.
    """
    if name not in DATASET_NAMES:
        raise DataError(f"unknown data set {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if binarize not in BINARIZE_MODES:
        raise DataError(f"unknown binarize mode {binarize!r}; valid modes: {', '.join(BINARIZE_MODES)}")
    if dequantize and (binarize != "none" or name not in DATASET_LEVELS):
        raise DataError(
            f"dequantization needs unbinarized data with known pixel levels ({', '.join(DATASET_LEVELS)}),"
            f" not data set {name!r} with binarize = {binarize!r}"
        )
    if name in TOY_SETS and binarize != "none":
        raise DataError(f"toy data set {name!r} is continuous 2-D data: binarize must be 'none', not {binarize!r}")
    (train, validation, test), event_shape = _load_splits(
        name, path, validation_fraction, test_fraction, num_examples, noise, seed
    )
    if name == "binarized_mnist":
        binarize = "none"
    if binarize != "none":
        source = str(path) if name == "file" else name
        for split in (train, validation, test):
            check_unit_interval(split.x, source)
    if binarize == "threshold":
        train, validation, test = (
            Split(threshold_binarize(split.x, threshold), split.y) for split in (train, validation, test)
        )
    if binarize == "dynamic":
        # A private generator: the evaluation sets stay fixed across runs and the global RNG is left alone.
        generator = torch.Generator(device="cpu").manual_seed(seed)
        validation, test = (
            Split(torch.bernoulli(split.x, generator=generator), split.y) for split in (validation, test)
        )
    levels = DATASET_LEVELS.get(name)
    if dequantize:
        generator = torch.Generator(device="cpu").manual_seed(seed)
        validation, test = (
            Split(dequantize_pixels(split.x, levels, generator), split.y) for split in (validation, test)
        )
    return Splits(
        train, validation, test, event_shape=event_shape, binarize=binarize, levels=levels, dequantize=dequantize
    )
