"""Choices a sampler makes for itself at a cost, remembered across processes.

NUTS's ``mass = "auto"`` reads the posterior's curvature before sampling (``ppgen.infer.numpyro_sampler``): for
eight schools about a second of tracing and compiling, as long as the sampling itself. The choice depends only on
the model, its data and a few settings, so it is kept in a small JSON file next to JAX's compilation cache
(``ppgen.infer.compile_cache``), keyed by a digest of all of those and of the library versions; a repeated run
reads it back. ``PPGEN_JAX_CACHE=""`` turns both caches off, and then every run decides afresh.
"""

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import numpy as np

from ppgen.infer.compile_cache import enable_compilation_cache

__all__ = ["remembered", "data_digest", "CHOICES_FILE"]

CHOICES_FILE = "ppgen-choices.json"
_KEPT = 1000  # entries; the oldest go first


def remembered(parts: Iterable[str], decide: Callable[[], bool | int | float | str]):
    """The value ``decide()`` gave for the key ``parts`` in an earlier run, or ``decide()`` now (then stored).

    ``parts`` must name everything the choice depends on; the versions of ppgen, NumPyro and JAX are added. A
    missing, unreadable or unwritable file only means deciding again."""
    folder = enable_compilation_cache()
    if folder is None:
        return decide()
    import jax
    import numpyro

    from ppgen import __version__

    versions = (f"ppgen {__version__}", f"numpyro {numpyro.__version__}", f"jax {jax.__version__}")
    key = hashlib.sha256("\0".join((*parts, *versions)).encode()).hexdigest()
    path = Path(folder) / CHOICES_FILE
    choices = _read(path)
    if key in choices:
        return choices[key]
    value = decide()
    choices = _read(path)  # another process may have added its own meanwhile
    choices[key] = value
    _write(path, dict(list(choices.items())[-_KEPT:]))
    return value


def data_digest(arrays: Mapping) -> str:
    """A digest of named arrays (nested mappings allowed): names, dtypes, shapes and values."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = arrays[name]
        digest.update(name.encode() + b"\0")
        if isinstance(value, Mapping):
            digest.update(data_digest(value).encode())
            continue
        array = np.ascontiguousarray(np.asarray(value))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _read(path: Path) -> dict:
    try:
        choices = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return choices if isinstance(choices, dict) else {}


def _write(path: Path, choices: dict) -> None:
    """Replace the file in one step (a reader sees the old or the new file, never half of one)."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".choices-", delete=False) as file:
            temporary = file.name
            json.dump(choices, file)
        os.replace(temporary, path)
    except OSError:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
