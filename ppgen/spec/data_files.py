"""Data files of declarative Bayesian models: a JSON object, an .npz archive or a .csv file, as named arrays."""

import csv
import json
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.errors import DataError
from ppgen.spec.memory import format_bytes, memory_budget

__all__ = ["DATA_SUFFIXES", "as_array", "read_data_file"]

DATA_SUFFIXES = (".json", ".npz", ".csv")
MISSING_CELLS = ("", "NA", "NaN", "nan")  # a CSV cell that marks a missing value


def as_array(value: Any, where: str, error: type[Exception] = DataError) -> np.ndarray:
    """Numbers and (nested) lists of them as int64 when every entry is an integer (or a boolean), else float64."""
    if isinstance(value, list):  # JSON null is a missing value, NaN
        value = _nulls_as_nan(value)
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError, TypeError) as exception:
        raise error(f"{where}: not a rectangular array of numbers ({exception})") from None
    if array.dtype.kind in "biu":
        return array.astype(np.int64)
    if array.dtype.kind == "f":
        return array.astype(np.float64)
    raise error(f"{where}: expected a number or a (nested) list of numbers, not {str(value)[:60]!r}")


def _nulls_as_nan(value: Any) -> Any:
    """A (nested) list with None (JSON null) as NaN; iterative, so that deep nesting is no RecursionError."""
    if not any(item is None or isinstance(item, list) for item in value):
        return value
    out: list = []
    stack = [(value, out)]
    while stack:
        source, target = stack.pop()
        for item in source:
            if isinstance(item, list):
                target.append([])
                stack.append((item, target[-1]))
            else:
                target.append(float("nan") if item is None else item)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as error:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"data file {path}: not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise DataError(f"data file {path}: expected a JSON object of named arrays, not {type(content).__name__}")
    return content


def _read_npz(path: Path) -> dict[str, Any]:
    try:  # allow_pickle=False: opening a user's file must never run code
        with open(path, "rb") as file, np.lib.npyio.NpzFile(file, allow_pickle=False) as archive:
            _check_unpacked_size(path, sum(member.file_size for member in archive.zip.infolist()))
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as error:
        raise DataError(f"data file {path}: not a readable .npz archive ({error})") from None


def _check_unpacked_size(path: Path, size: int) -> None:
    """DataError before unpacking an archive whose contents would not fit the memory budget."""
    budget = memory_budget()
    if budget is not None and size > budget:
        raise DataError(
            f"data file {path}: its arrays take {format_bytes(size)} unpacked, more than the {format_bytes(budget)}"
            " of memory a run may plan for"
        )


def _column(cells: list[str]) -> list[int] | list[float]:
    """A CSV column's numbers: ints, or floats with an empty cell (or NA) as NaN, a missing value."""
    try:
        return [int(cell) for cell in cells]
    except ValueError:
        return [float("nan") if cell in MISSING_CELLS else float(cell) for cell in cells]


def _read_csv(path: Path) -> dict[str, Any]:
    try:
        with open(path, newline="", encoding="utf-8") as file:
            rows = [row for row in csv.reader(file) if row]
    except (UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"data file {path}: not a UTF-8 CSV file ({error})") from None
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
