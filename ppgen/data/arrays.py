"""User data from .npz, .npy or .csv files, checked and flattened to [N, D] float32."""

import csv
import math
import os
import tokenize
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ppgen.errors import DataError

__all__ = ["SUPPORTED_SUFFIXES", "load_array_file"]

SUPPORTED_SUFFIXES = (".npz", ".npy", ".csv")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    # allow_pickle=False: a user's file must never run code when it is opened. Opening the file here,
    # not in np.load, closes it even when the archive turns out to be corrupt.
    with open(path, "rb") as file, np.lib.npyio.NpzFile(file, allow_pickle=False) as archive:
        keys = archive.files
        if "x" in keys:
            return archive["x"], archive["y"] if "y" in keys else None
        if len(keys) == 1:
            return archive[keys[0]], None
    raise DataError(f"data file {path}: no array named 'x' among its arrays {keys} (needs 'x', or exactly one array)")


def _read_npy(path: Path) -> tuple[np.ndarray, None]:
    with open(path, "rb") as file:
        return np.lib.format.read_array(file, allow_pickle=False), None


def _parse_numbers(row: list[str]) -> list[float | None]:
    """Each cell as a float, or None where it is not a finite number."""
    values = []
    for cell in row:
        try:
            value = float(cell)
        except ValueError:
            value = math.nan
        values.append(value if math.isfinite(value) else None)
    return values


def _read_csv(path: Path) -> tuple[np.ndarray, None]:
    rows = []
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        nonblank = (row for row in reader if "".join(row).strip())
        for index, row in enumerate(nonblank):
            values = _parse_numbers(row)
            if index == 0 and all(value is None for value in values):
                continue  # header: a first row with no number in it
            if None in values:
                column = values.index(None)
                raise DataError(
                    f"data file {path}: line {reader.line_num}, column {column + 1}: "
                    f"{row[column]!r} is not a finite number"
                )
            if rows and len(values) != len(rows[0]):
                raise DataError(
                    f"data file {path}: line {reader.line_num} has {len(values)} values, expected {len(rows[0])}"
                )
            rows.append(values)
    if not rows:
        raise DataError(f"data file {path}: no rows of numbers")
    return np.array(rows, dtype=np.float64), None


_READERS = {".npz": _read_npz, ".npy": _read_npy, ".csv": _read_csv}


def _check_x(path: Path, x: np.ndarray) -> np.ndarray:
    """x flattened to a contiguous [N, D] float32 array, after checking that it holds finite numbers."""
    if x.dtype.kind not in "biuf":
        raise DataError(f"data file {path}: x has dtype {x.dtype}, expected real numbers")
    if x.ndim < 2:
        raise DataError(f"data file {path}: x has shape {x.shape}, expected [N, ...] with at least 2 dimensions")
    if x.size == 0:
        raise DataError(f"data file {path}: x has shape {x.shape}, which holds no values")
    # Overflow to inf is reported below, with the value that caused it.
    with np.errstate(over="ignore"):
        flat = x.reshape(x.shape[0], -1).astype(np.float32)
    finite = np.isfinite(flat)
    if not finite.all():
        index = np.unravel_index(np.argmin(finite), x.shape)
        where = ", ".join(str(i) for i in index)
        raise DataError(f"data file {path}: x[{where}] = {x[index]} is not a finite float32")
    return flat


def _check_y(path: Path, y: np.ndarray, num_examples: int) -> np.ndarray:
    """y as an [N] int64 array, after checking that it holds one non-negative integer label per example."""
    if y.shape != (num_examples,):
        raise DataError(f"data file {path}: y has shape {y.shape}, expected ({num_examples},), one label per example")
    if y.dtype.kind not in "biuf":
        raise DataError(f"data file {path}: y has dtype {y.dtype}, expected integer labels")
    bad = y < 0
    if y.dtype.kind == "f":
        bad |= ~np.isfinite(y) | (y != np.round(y))
    if bad.any():
        index = int(np.argmax(bad))
        raise DataError(f"data file {path}: y[{index}] = {y[index]} is not a non-negative integer label")
    return y.astype(np.int64)


def load_array_file(path: str | os.PathLike) -> tuple[Tensor, Tensor | None, tuple[int, ...]]:
    """Read a user's data set from a .npz, .npy or .csv file.

    A .npz file holds an array "x" and optionally integer labels "y", or exactly one array, used as x.
    A .npy file holds x. A .csv file holds x as comma-separated numbers, one example a row, after an
    optional header row (recognised by holding no number). Files are never unpickled.

    Args:
        path: the file; its suffix picks the format.

    Returns:
        x: [N, D] float32, each example flattened.
        y: [N] int64 labels, or None.
        event_shape: the shape of one example before flattening, x's trailing shape ((D,) for csv).

    Raises:
        DataError: naming the file and the key, line or index at fault.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in _READERS:
        raise DataError(f"data file {path}: unsupported suffix {suffix!r} (supported: {', '.join(SUPPORTED_SUFFIXES)})")
    try:
        x, y = _READERS[suffix](path)
    # SyntaxError and TokenError come through numpy's parser of a truncated .npy header.
    except (OSError, EOFError, ValueError, SyntaxError, tokenize.TokenError, zipfile.BadZipFile, csv.Error) as error:
        reason = " ".join(str(error).split())  # one line, whatever the library wrote
        raise DataError(f"data file {path}: cannot be read as {suffix} ({reason})") from error
    flat = _check_x(path, x)
    labels = None if y is None else torch.from_numpy(_check_y(path, y, flat.shape[0]))
    return torch.from_numpy(flat), labels, tuple(int(size) for size in x.shape[1:])
