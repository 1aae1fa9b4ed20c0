"""Data files of declarative Bayesian models: a JSON object, an .npz archive or a .csv file, as named arrays."""

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.errors import DataError

__all__ = ["DATA_SUFFIXES", "as_array", "read_data_file"]

DATA_SUFFIXES = (".json", ".npz", ".csv")


def as_array(value: Any, where: str, error: type[Exception] = DataError) -> np.ndarray:
    """Numbers and (nested) lists of them as int64 when every entry is an integer (or a boolean), else float64."""
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError, TypeError) as exception:
        raise error(f"{where}: not a rectangular array of numbers ({exception})") from None
    if array.dtype.kind in "biu":
        return array.astype(np.int64)
    if array.dtype.kind == "f":
        return array.astype(np.float64)
    raise error(f"{where}: expected a number or a (nested) list of numbers, not {str(value)[:60]!r}")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise DataError(f"data file {path}: not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise DataError(f"data file {path}: expected a JSON object of named arrays, not {type(content).__name__}")
    return content


def _read_npz(path: Path) -> dict[str, Any]:
    try:  # allow_pickle=False: opening a user's file must never run code
        with open(path, "rb") as file, np.lib.npyio.NpzFile(file, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as error:
        raise DataError(f"data file {path}: not a readable .npz archive ({error})") from None


def _column(cells: list[str]) -> list[int] | list[float]:
    try:
        return [int(cell) for cell in cells]
    except ValueError:
        return [float(cell) for cell in cells]


def _read_csv(path: Path) -> dict[str, Any]:
    with open(path, newline="") as file:
        rows = [row for row in csv.reader(file) if row]
    if len(rows) < 2:
        raise DataError(f"data file {path}: expected a header row of column names and at least one row")
    header, body = [name.strip() for name in rows[0]], rows[1:]
    if any(len(row) != len(header) for row in body):
        raise DataError(f"data file {path}: every row must have {len(header)} cells, like the header")
    columns = {}
    for index, name in enumerate(header):
        try:
            columns[name] = _column([row[index].strip() for row in body])
        except ValueError:
            raise DataError(f"data file {path}: column {name!r} holds a cell that is not a number") from None
    return columns


def read_data_file(path: Path) -> dict[str, np.ndarray]:
    """A data file as named arrays: a JSON object, an .npz archive, or a .csv file with a header (columns)."""
    path = Path(path)
    if path.suffix not in DATA_SUFFIXES:
        raise DataError(f"data file {path}: unsupported type; use one of {', '.join(DATA_SUFFIXES)}")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    reader = {".json": _read_json, ".npz": _read_npz, ".csv": _read_csv}[path.suffix]
    return {str(key): as_array(value, f"data file {path}: {key!r}") for key, value in reader(path).items()}
