"""Progress when stderr is not a terminal: a line at a time for training, sampling and evaluation, none when quiet."""

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

from ppgen.cli import main
from ppgen.evaluate.sbc import run_sbc
from ppgen.progress import ProgressLog, default_progress, progress_mode, reporter

REPO = Path(__file__).resolve().parents[1]
TINY_VAE = (
    "--set", "inference.epochs=2", "--set", "inference.batch_size=64", "--set", "model.hidden=[16]",
    "--set", "model.latent_dim=2", "--set", "evaluation.num_samples=8", "--set", "inference.device=cpu",
    "--set", "inference.log_every=10",
)  # fmt: skip
LINE = re.compile(
    r"^(?P<label>[^:]+): (?P<n>\d+)/(?P<total>\d+) (?P<unit>\w+) \(\d+%\)(?P<fields>[^;]*); (?P<timing>.*)$"
)


def cli(*argv) -> tuple[int, str]:
    """Exit code and stderr of the command line run in this process (stderr a StringIO: not a terminal)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, err.getvalue()


def progress_lines(err: str, label: str) -> list[re.Match]:
    return [match for line in err.splitlines() if (match := LINE.match(line)) and match["label"] == label]


def test_the_progress_mode_follows_the_argument_the_run_and_the_terminal(capsys):
    assert progress_mode(False) is None and progress_mode(True) == "bar"
    assert progress_mode(None) == "log"  # pytest's captured stderr is not a terminal
    with default_progress(False):
        assert progress_mode(None) is None and progress_mode(True) == "bar"
    assert isinstance(reporter("x", 10, progress=None), ProgressLog)


def test_a_progress_log_writes_position_fields_rate_and_eta(capsys, monkeypatch):
    monkeypatch.setenv("PPGEN_PROGRESS_SECONDS", "0")
    with ProgressLog("training", 1000, "step") as log:
        log.update(10, epoch="1/10")
        log.update(500, epoch="5/10", elbo="-23.100")
        log.update(1000)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "training: 10/1000 steps (1%), epoch 1/10; 0s elapsed"
    assert re.fullmatch(
        r"training: 500/1000 steps \(50%\), epoch 5/10, elbo -23.100; [\d.e+]+ steps/s, 0s elapsed, ETA 0s", lines[1]
    )
    assert lines[2].startswith("training: 1000/1000 steps (100%)") and "ETA" not in lines[2]
    assert len(lines) == 3  # closing at the position last written adds nothing


def test_a_short_phase_writes_no_line(capsys):
    with ProgressLog("evaluation", 10, "sample") as log:
        for n in range(1, 11):
            log.update(n)
    assert capsys.readouterr().err == ""  # the first line is due after 10 s


def test_a_redirected_training_run_logs_its_progress_and_evaluation(tmp_path, monkeypatch):
    monkeypatch.setenv("PPGEN_PROGRESS_SECONDS", "0")
    code, err = cli("run", REPO / "models" / "vae.toml", "--out", tmp_path / "run", *TINY_VAE)
    assert code == 0, err
    training = progress_lines(err, "training")
    assert training and training[-1]["n"] == training[-1]["total"] and training[-1]["unit"] == "steps"
    assert all("epoch" in line["fields"] and "elbo" in line["fields"] for line in training)
    assert any("steps/s" in line["timing"] and "ETA" in line["timing"] for line in training)
    assert progress_lines(err, "log-likelihood (K = 8)")
    code, err = cli("run", REPO / "models" / "vae.toml", "--out", tmp_path / "quiet", *TINY_VAE, "--quiet")
    assert (code, err) == (0, "")


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_a_redirected_bayesian_run_logs_each_chain(backend, tmp_path, monkeypatch):
    monkeypatch.setenv("PPGEN_PROGRESS_SECONDS", "0")
    # Chains one after another: "auto" would depend on how many JAX devices this process got, which depends on
    # whether an earlier test started JAX before ppgen could ask for one per core (vectorized chains share one log).
    budget = ("inference.num_warmup=40", "inference.num_samples=40", "inference.num_chains=2", "evaluation.plots=false")
    budget += ("inference.chain_method=sequential",)
    overrides = [arg for setting in (*budget, f"inference.backend='{backend}'") for arg in ("--set", setting)]
    code, err = cli("run", REPO / "models" / "normal_normal.toml", "--out", tmp_path / "run", *overrides)
    assert code == 0, err
    for chain in (1, 2):
        lines = progress_lines(err, f"sampling chain {chain}/2")
        assert lines and lines[-1]["n"] == lines[-1]["total"] == "80", err
        assert "phase warmup" in lines[0]["fields"] and "phase sampling" in lines[-1]["fields"]


def simulate(seed: int):
    return {"mu": float(seed % 7)}, {}


def fit(data, seed: int):
    return {"mu": np.arange(9.0)}


def test_sbc_replicates_are_counted_in_lines(capsys, monkeypatch):
    monkeypatch.setenv("PPGEN_PROGRESS_SECONDS", "0")
    run_sbc(simulate, fit, 3, 9, seed=0, progress=None)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(";")[0] for line in lines] == [
        f"SBC replicates: {n}/3 fits ({100 * n / 3:.0f}%)" for n in (1, 2, 3)
    ]
