"""Every example script and the README's Python example run, with tiny budgets."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_ARGUMENTS = {
    "custom_model.py": ["--epochs", "2", "--num-samples", "50"],
    "vae_digits.py": ["--epochs", "2", "--num-samples", "20", "--out", "samples.png"],
    "cvae_digits.py": ["--epochs", "2", "--num-samples", "5", "--out", "cvae.png"],
    "hvae_digits.py": ["--epochs", "2", "--num-samples", "10"],
    "flow_guides.py": ["--epochs", "1", "--num-samples", "10"],
    "flow_density.py": ["--epochs", "2", "--out", "flow.png"],
    "ddpm_digits.py": ["--epochs", "1", "--steps", "30", "--out", "ddpm.png"],
    "autoregressive_digits.py": ["--epochs", "1", "--masks", "2", "--out", "autoregressive.png"],
    "gan_digits.py": ["--epochs", "1", "--num-samples", "8", "--out", "gan.png"],
    "mixture_gaussian.py": ["--epochs", "2", "--num-examples", "500", "--out", "mixture.png"],
    "ebm_moons.py": ["--epochs", "1", "--ais-steps", "20", "--out", "ebm.png"],
    "score_moons.py": ["--epochs", "1", "--levels", "5", "--test-points", "5", "--samples", "50", "--out", "score.png"],
}


def test_every_example_has_tiny_arguments():
    assert sorted(path.name for path in (REPO / "examples").glob("*.py")) == sorted(TINY_ARGUMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TINY_ARGUMENTS))
def test_example_runs(name, tmp_path):
    completed = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *TINY_ARGUMENTS[name]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr


def test_custom_model_example_prints_the_bounds_in_order(tmp_path):
    """ELBO <= importance-sampled log p(x), and the estimate is close to the exact value."""
    completed = subprocess.run(
        [sys.executable, str(REPO / "examples" / "custom_model.py"), "--epochs", "20", "--num-samples", "500"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    numbers = [float(m) for m in re.findall(r"^test .*?(-?\d+\.\d+)", completed.stdout, flags=re.M)]
    elbo, estimate, exact = numbers
    assert elbo < estimate and abs(estimate - exact) < 0.5


@pytest.mark.slow
def test_readme_python_examples_run(tmp_path, monkeypatch):
    """The README's Python blocks (test code, not user input): your own model/guide pair, then the Bayesian
    workflow from Python."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert len(blocks) == 2
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], "README.md", "exec"), {"__name__": "readme"})
    assert (tmp_path / "runs" / "fa" / "checkpoint.pt").is_file()
    (tmp_path / "models").symlink_to(REPO / "models")  # the block names specs relative to the repository
    namespace = {"__name__": "readme"}
    exec(compile(blocks[1], "README.md", "exec"), namespace)
    assert namespace["draws"].posterior["mu"].shape == (2, 1000) and namespace["table"].loc["tau", "mean"] > 0
    assert (
        namespace["metrics"]["method"] == "nuts"
        and (tmp_path / "runs" / "eight_schools-python" / "posterior.nc").is_file()
    )
