"""MNIST from the four original IDX files (LeCun et al., 1998), read and checked without a download."""

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ppgen.errors import DataError

__all__ = ["IMAGE_MAGIC", "LABEL_MAGIC", "parse_idx", "load_mnist"]

IMAGE_MAGIC = 2051  # 0x0803: unsigned bytes, 3 dimensions
LABEL_MAGIC = 2049  # 0x0801: unsigned bytes, 1 dimension
_KINDS = {IMAGE_MAGIC: "an image file", LABEL_MAGIC: "a label file"}
_IMAGE_SIDE = 28
_NUM_CLASSES = 10


def _read_bytes(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of the file, decompressed when it is gzipped: a file that decompresses to far more
    than an IDX file of the expected shape (a gzip bomb) is never decompressed in full."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as stream:
            return stream.read(limit)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"MNIST file {path}: cannot be read ({error})") from error


def parse_idx(path: str | os.PathLike, expected_magic: int, expected_shape: tuple[int, ...]) -> np.ndarray:
    """Read one unsigned-byte IDX file (gzipped when its name ends in .gz) and check its header.

    Args:
        path: the IDX file.
        expected_magic: IMAGE_MAGIC or LABEL_MAGIC (in general 0x0800 + number of dimensions).
        expected_shape: the dimensions the header must state, e.g. (10000, 28, 28).

    Returns:
        The payload as a read-only uint8 array of shape expected_shape.

    Raises:
        DataError: naming the file, if it cannot be read, its magic number or dimensions differ from the
            expected ones, or its payload is not exactly as long as the header says.
    """
    path = Path(path)
    header_length = 4 * (1 + len(expected_shape))
    data = _read_bytes(path, header_length + math.prod(expected_shape) + 1)  # one byte more tells it is too long
    magic = int.from_bytes(data[:4], "big")
    if len(data) >= 4 and magic != expected_magic:
        kind = _KINDS.get(expected_magic, "this file")
        raise DataError(f"MNIST file {path}: bad magic number {magic} (expected {expected_magic} for {kind})")
    if len(data) < header_length:
        raise DataError(f"MNIST file {path}: {len(data)} bytes is too short for an IDX header of {header_length} bytes")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=len(expected_shape), offset=4))
    if shape != tuple(expected_shape):
        raise DataError(f"MNIST file {path}: header dimensions {shape} (expected {tuple(expected_shape)})")
    payload_length = len(data) - header_length
    if payload_length > math.prod(shape):
        raise DataError(
            f"MNIST file {path}: longer than the {math.prod(shape)} bytes of payload its header's dimensions {shape}"
            " need (padded, or not an IDX file)"
        )
    if payload_length != math.prod(shape):
        raise DataError(
            f"MNIST file {path}: payload of {payload_length} bytes (the header's dimensions {shape} "
            f"need exactly {math.prod(shape)}; the file is truncated or padded)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_length).reshape(shape)


def _find(directory: Path, name: str) -> Path:
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"MNIST file {name}.gz (or {name}) not found in directory {directory}")


def _load_part(directory: Path, prefix: str, num_examples: int) -> tuple[Tensor, Tensor]:
    """Images and labels of one part, "train" or "t10k", as [N, 784] float32 in [0, 1] and [N] int64."""
    images = parse_idx(
        _find(directory, f"{prefix}-images-idx3-ubyte"), IMAGE_MAGIC, (num_examples, _IMAGE_SIDE, _IMAGE_SIDE)
    )
    labels_path = _find(directory, f"{prefix}-labels-idx1-ubyte")
    labels = parse_idx(labels_path, LABEL_MAGIC, (num_examples,))
    if labels.max() >= _NUM_CLASSES:
        raise DataError(f"MNIST file {labels_path}: label {labels.max()} is not a digit 0..9")
    x = images.reshape(num_examples, -1).astype(np.float32)
    x /= 255.0
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


def load_mnist(directory: str | os.PathLike) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The 60,000 training and 10,000 test images of MNIST from a directory of the original IDX files.

    The files are train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and
    t10k-labels-idx1-ubyte, each gzipped (.gz, as distributed) or not.

    Args:
        directory: the folder holding the four files.

    Returns:
        train_x: [60000, 784] float32 in [0, 1] (event shape (28, 28)).
        train_y: [60000] int64 labels 0..9.
        test_x: [10000, 784] float32 in [0, 1].
        test_y: [10000] int64 labels 0..9.

    Raises:
        DataError: naming the directory or file at fault. Each file is checked against the official counts,
            so the image and label counts of a part always agree.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"MNIST directory {directory} does not exist")
    train_x, train_y = _load_part(directory, "train", 60000)
    test_x, test_y = _load_part(directory, "t10k", 10000)
    return train_x, train_y, test_x, test_y
