"""A run folder: the one place that decides where a run's files go and writes them, each atomically.

Every kind of run writes ``spec.toml`` (the resolved spec, which re-runs as is: ``ppgen run FOLDER/spec.toml``)
and ``metrics.json``. A generative run adds ``checkpoint.pt`` and ``model.pt``, and ``overrides.json`` when it was
resumed with changed settings; a Bayesian run ``posterior.nc`` and ``summary.txt``; simulation-based calibration
``sbc.json``; each adds its PNG plots. A run holds a lock on its folder while it writes, so that a second process
given the same folder stops before doing any work.
"""

import fcntl
import json
import os
import re
from pathlib import Path

from ppgen.errors import PpgenError
from ppgen.files import write_text_atomic

__all__ = [
    "RunFolder",
    "SPEC_FILE",
    "METRICS_FILE",
    "CHECKPOINT_FILE",
    "MODEL_FILE",
    "POSTERIOR_FILE",
    "SUMMARY_FILE",
    "SBC_FILE",
    "OVERRIDES_FILE",
]

SPEC_FILE, METRICS_FILE, SUMMARY_FILE = "spec.toml", "metrics.json", "summary.txt"
CHECKPOINT_FILE, MODEL_FILE = "checkpoint.pt", "model.pt"  # generative runs
POSTERIOR_FILE = "posterior.nc"  # Bayesian runs: ArviZ results
SBC_FILE = "sbc.json"  # simulation-based calibration: ranks and uniformity tests
OVERRIDES_FILE = "overrides.json"  # the settings each resume changed, in order (spec.toml stays as the run began)
# A folder holding any of these holds a run's results, which a new run must not mix its files into. A folder
# with spec.toml alone holds a run stopped before its first checkpoint: a new run starts over in it.
RUN_FILES = (METRICS_FILE, CHECKPOINT_FILE, MODEL_FILE, POSTERIOR_FILE, SBC_FILE)
# What ``start(force=True)`` removes: every file a run writes (and its PNG plots and NetCDF results); anything
# else stays.
WRITTEN_FILES = (*RUN_FILES, SPEC_FILE, SUMMARY_FILE, OVERRIDES_FILE, "plots.log")
STALE_TEMPORARY = re.compile(r"\..+\.(\d+)\.tmp")  # ppgen.files.atomic_open's, named by the writing process


class RunFolder:
    """The folder of one run; as a context manager it releases the lock ``start`` or ``lock`` took.

    Args:
        path: the folder; created by ``start``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock: int | None = None

    def __enter__(self) -> "RunFolder":
        return self

    def __exit__(self, *exc) -> None:
        self.unlock()

    def __del__(self) -> None:  # a caller without ``with`` holds the lock as long as it holds the folder
        self.unlock()

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def holds_run(self) -> bool:
        return any((self.path / name).exists() for name in RUN_FILES)

    def start(
        self, *, resume: bool = False, resumable: bool = True, create: bool = True, force: bool | None = None
    ) -> None:
        """Check that a new run may write here (a folder holding a run is refused unless ``resume``, or emptied of
        its run's files with ``force``; None: the caller has no --force), create the folder and lock it (see
        ``lock``). ``resumable``: whether the run could continue from a checkpoint (the message says so);
        ``create``: False in the processes of a distributed run other than the first, which neither create nor
        lock it."""
        if resume:
            if not (self.path / CHECKPOINT_FILE).is_file():
                stopped = " (the run stopped before its first checkpoint: start it again without --resume)"
                raise PpgenError(
                    f"cannot resume: {self.path} has no {CHECKPOINT_FILE}"
                    + (stopped if (self.path / SPEC_FILE).is_file() else "")
                )
            if create:
                self.lock()
            return
        if not create:  # another process of a distributed run: the first one creates, locks and replaces
            if self.holds_run() and not force:
                self._refuse(resumable, force)
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PpgenError(f"cannot create the run folder {self.path}: {error.strerror}") from None
        self.lock()
        if force:
            self._remove_run_files()
        elif self.holds_run():
            self.unlock()
            self._refuse(resumable, force)
        (self.path / OVERRIDES_FILE).unlink(missing_ok=True)  # a run that starts over has no resumes yet

    def _refuse(self, resumable: bool, force: bool | None) -> None:
        hints = ["--resume to continue it"] * resumable + ["--out to write elsewhere"]
        hints += ["--force to replace it"] * (force is not None)
        choices = ", or ".join([", ".join(hints[:-1]), hints[-1]] if len(hints) > 1 else hints)
        raise PpgenError(f"{self.path} already holds a run: pass {choices}")

    def lock(self) -> None:
        """Take the folder's lock (released by ``unlock``, or when the process ends) and remove the temporary files
        of writers that died; another process holding it is one clear error."""
        if self._lock is not None:
            return
        try:
            descriptor = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise PpgenError(f"{self.path} does not exist") from None
        except OSError as error:
            raise PpgenError(f"cannot open the run folder {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            raise PpgenError(
                f"{self.path} is in use by another ppgen process: wait for it to end, or pass --out to write elsewhere"
            ) from None
        self._lock = descriptor
        self._remove_stale_temporaries()

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the lock
            self._lock = None

    def _remove_stale_temporaries(self) -> None:
        for path in self.path.iterdir():
            match = STALE_TEMPORARY.fullmatch(path.name)
            if match and not _alive(int(match[1])):
                path.unlink(missing_ok=True)

    def _remove_run_files(self) -> None:
        for path in self.path.iterdir():
            if path.is_file() and (path.name in WRITTEN_FILES or path.suffix in (".png", ".nc")):
                path.unlink()

    def write_spec(self, text: str) -> None:
        """``spec.toml``: the resolved spec (TOML text)."""
        write_text_atomic(self.path / SPEC_FILE, text)

    def read_metrics(self) -> dict:
        """``metrics.json`` as written so far ({} before the first write)."""
        return self._read_json(METRICS_FILE, {}, lambda value: isinstance(value, dict), "an object of figures")

    def read_overrides(self) -> list[dict]:
        """``overrides.json``: per resume that changed settings, {dotted key: {"was": value, "now": value}}."""
        return self._read_json(OVERRIDES_FILE, [], _is_overrides, 'a list of {key: {"was", "now"}}')

    def record_overrides(self, changes: dict) -> None:
        """Add one resume's changed settings (dotted key -> {"was", "now"}) to ``overrides.json``."""
        self.write_json(OVERRIDES_FILE, [*self.read_overrides(), changes])

    def _read_json(self, name: str, missing, valid, holds: str):
        """A JSON file of the folder (``missing`` when there is none); one that is not JSON, or fails ``valid``,
        is an error naming it and what it should hold."""
        path = self.path / name
        if not path.is_file():
            return missing
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            value = valid = None
        if valid is None or not valid(value):
            raise PpgenError(f"{path} is corrupt: it should hold {holds} in JSON; move it away to write a new one")
        return value

    def write_metrics(self, metrics: dict) -> None:
        """Replace ``metrics.json`` (numpy scalars written as floats)."""
        self.write_json(METRICS_FILE, metrics)

    def write_json(self, name: str, value) -> None:
        write_text_atomic(self.path / name, json.dumps(value, indent=2, default=_plain) + "\n")

    def write_text(self, name: str, text: str) -> None:
        write_text_atomic(self.path / name, text)


def _is_overrides(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(resume, dict) and all(isinstance(change, dict) and "now" in change for change in resume.values())
        for resume in value
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process
        return True
    return True


def _plain(value):
    """JSON for numpy values: arrays as lists, scalars as floats."""
    return value.tolist() if hasattr(value, "tolist") else float(value)
