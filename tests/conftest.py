"""Shared fixtures: where the shared test data lives, and full-size synthetic MNIST files."""

import gzip
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

from ppgen.data.mnist import IMAGE_MAGIC, LABEL_MAGIC

REPO = Path(__file__).resolve().parents[1]

# JAX's compilation cache and the samplers' remembered choices (ppgen.infer.remembered) live in a folder of this
# session, as on a fresh CI machine: a choice remembered by an earlier session, made by other code, cannot leak in.
_OWN_CACHE = "PPGEN_JAX_CACHE" not in os.environ
if _OWN_CACHE:
    os.environ["PPGEN_JAX_CACHE"] = tempfile.mkdtemp(prefix="ppgen-test-cache-")


def pytest_sessionfinish(session, exitstatus):
    if _OWN_CACHE:
        shutil.rmtree(os.environ["PPGEN_JAX_CACHE"], ignore_errors=True)


def shared_data_root() -> Path | None:
    """../shared/data beside the repository (or beside the repository this one was cloned from, as for a
    CI clone in /tmp), or $PPGEN_SHARED_DATA; None when none exists."""
    candidates = [os.environ.get("PPGEN_SHARED_DATA"), REPO.parent / "shared" / "data"]
    origin = subprocess.run(
        ["git", "-C", str(REPO), "config", "--get", "remote.origin.url"], capture_output=True, text=True
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        candidates.append(Path(origin).resolve().parent / "shared" / "data")
    return next((Path(c) for c in candidates if c and Path(c).is_dir()), None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if root is None:
        pytest.skip("shared data not found: set PPGEN_SHARED_DATA to the folder holding mnist/ and posteriordb/")
    return root


def write_idx(path: Path, magic: int, array: np.ndarray, payload_bytes: int | None = None) -> Path:
    """Write an unsigned-byte IDX file, gzipped if the name ends in .gz, keeping payload_bytes of the payload."""
    header = magic.to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in array.shape)
    data = header + array.astype(np.uint8).tobytes()[:payload_bytes]
    path.write_bytes(gzip.compress(data, compresslevel=1) if path.suffix == ".gz" else data)
    return path


def synthetic_mnist_part(num_examples: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose first two pixels encode the example's index (high byte, low byte), labels index % 10."""
    index = np.arange(num_examples)
    images = np.zeros((num_examples, 28, 28), dtype=np.uint8)
    images[:, 0, 0], images[:, 0, 1] = index // 256, index % 256
    return images, (index % 10).astype(np.uint8)


@pytest.fixture(scope="session")
def synthetic_mnist(tmp_path_factory) -> Path:
    """A folder of full-size synthetic MNIST IDX files (mostly zeros, so gzip keeps them small)."""
    directory = tmp_path_factory.mktemp("data") / "mnist"
    directory.mkdir()
    for prefix, num_examples in (("train", 60000), ("t10k", 10000)):
        images, labels = synthetic_mnist_part(num_examples)
        write_idx(directory / f"{prefix}-images-idx3-ubyte.gz", IMAGE_MAGIC, images)
        write_idx(directory / f"{prefix}-labels-idx1-ubyte.gz", LABEL_MAGIC, labels)
    return directory


@pytest.fixture
def mnist_data(request, monkeypatch):
    """PPGEN_DATA set to the shared data folder when it exists, else to a folder of synthetic MNIST files."""
    try:
        root = request.getfixturevalue("shared_data")
    except pytest.skip.Exception:
        root = request.getfixturevalue("synthetic_mnist").parent
    monkeypatch.setenv("PPGEN_DATA", str(root))


@pytest.fixture(autouse=True)
def _background_plots_finish_within_the_test(monkeypatch):
    """``ppgen run`` draws a Bayesian run's figures in a background process; in tests each such process is
    waited for, and must succeed, before the test goes on (so its files can be checked, and plot processes do not
    pile up on the test machine's cores)."""
    from ppgen.evaluate import check_plots

    start = check_plots.plot_in_background

    def start_and_wait(folder, results_file):
        process = start(folder, results_file)
        assert process.wait(timeout=600) == 0, (Path(folder) / check_plots.PLOT_LOG).read_text()[-3000:]
        return process

    monkeypatch.setattr(check_plots, "plot_in_background", start_and_wait)
