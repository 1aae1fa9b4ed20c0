"""A run folder: the one place that decides where a run's files go and writes them, each atomically.

Every kind of run writes ``spec.toml`` (the resolved spec, which re-runs as is: ``ppgen run FOLDER/spec.toml``)
and ``metrics.json``. A generative run adds ``checkpoint.pt`` and ``model.pt``; a Bayesian run ``posterior.nc``
and ``summary.txt``; simulation-based calibration ``sbc.json``; each adds its PNG plots.
"""

import json
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
]

SPEC_FILE, METRICS_FILE, SUMMARY_FILE = "spec.toml", "metrics.json", "summary.txt"
CHECKPOINT_FILE, MODEL_FILE = "checkpoint.pt", "model.pt"  # generative runs
POSTERIOR_FILE = "posterior.nc"  # Bayesian runs: ArviZ results
SBC_FILE = "sbc.json"  # simulation-based calibration: ranks and uniformity tests
# A folder holding any of these holds a run, which a new run must not mix its files into.
RUN_FILES = (SPEC_FILE, METRICS_FILE, CHECKPOINT_FILE, POSTERIOR_FILE, SBC_FILE)


class RunFolder:
    """The folder of one run.

    Args:
        path: the folder; created by ``start``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def holds_run(self) -> bool:
        return any((self.path / name).exists() for name in RUN_FILES)

    def start(self, *, resume: bool = False, resumable: bool = True, create: bool = True) -> None:
        """Check that a new run may write here (a folder holding a run is refused unless ``resume``), and create
        the folder. ``resumable``: whether the run could continue from a checkpoint (the message says so);
        ``create``: False in the processes of a distributed run other than the first."""
        if resume:
            if not (self.path / CHECKPOINT_FILE).is_file():
                raise PpgenError(f"cannot resume: {self.path} has no {CHECKPOINT_FILE}")
            return
        if self.holds_run():
            hint = "--resume to continue it, or --out to write elsewhere" if resumable else "--out to write elsewhere"
            raise PpgenError(f"{self.path} already holds a run: pass {hint}")
        if create:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise PpgenError(f"cannot create the run folder {self.path}: {error.strerror}") from None

    def write_spec(self, text: str) -> None:
        """``spec.toml``: the resolved spec (TOML text)."""
        write_text_atomic(self.path / SPEC_FILE, text)

    def read_metrics(self) -> dict:
        """``metrics.json`` as written so far ({} before the first write)."""
        path = self.path / METRICS_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def write_metrics(self, metrics: dict) -> None:
        """Replace ``metrics.json`` (numpy scalars written as floats)."""
        self.write_json(METRICS_FILE, metrics)

    def write_json(self, name: str, value) -> None:
        write_text_atomic(self.path / name, json.dumps(value, indent=2, default=_plain) + "\n")

    def write_text(self, name: str, text: str) -> None:
        write_text_atomic(self.path / name, text)


def _plain(value):
    """JSON for numpy values: arrays as lists, scalars as floats."""
    return value.tolist() if hasattr(value, "tolist") else float(value)
