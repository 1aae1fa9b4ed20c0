import contextlib
import io
import json
import math
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import pyro
import pytest
import torch

from ppgen.cli import main
from ppgen.evaluate import elbo
from ppgen.generative_run import load_run
from ppgen.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]
VAE, MNIST = REPO / "models" / "vae.toml", REPO / "models" / "vae-mnist.toml"
RUN_FILES = ("spec.toml", "checkpoint.pt", "model.pt", "metrics.json", "elbo.png", "samples.png")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DIGITS_EXAMPLES, DIGITS_DIM = 1797, 64  # scikit-learn's bundled 8x8 digits
EPOCHS, BATCH_SIZE, NUM_SAMPLES = 2, 64, 8
TINY = (
    "--set", f"inference.epochs={EPOCHS}", "--set", f"inference.batch_size={BATCH_SIZE}",
    "--set", "model.hidden=[16]", "--set", "model.latent_dim=2", "--set", f"evaluation.num_samples={NUM_SAMPLES}",
    "--set", "inference.device=cpu", "--quiet",
)  # fmt: skip


@dataclass
class Result:
    code: int
    out: str
    err: str


def cli(*argv) -> Result:
    """Run the command line in this process (capsys cannot serve the module-scoped runs)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return Result(code, out.getvalue(), err.getvalue())


def metrics_of(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def digits_train_size(folder: Path) -> int:
    """The training split's size from the run's fractions: the other splits get round(fraction * N)."""
    data = load_spec(folder / "spec.toml").data
    held_out = round(data.validation_fraction * DIGITS_EXAMPLES) + round(data.test_fraction * DIGITS_EXAMPLES)
    return DIGITS_EXAMPLES - held_out


def without_timings(metrics: dict) -> dict:
    """Metrics with the wall-clock figures, which differ from run to run, left out."""
    drop = {"seconds", "evaluation_seconds"}
    return {k: without_timings(v) if isinstance(v, dict) else v for k, v in metrics.items() if k not in drop}


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> tuple[Path, Result]:
    """A finished tiny run of models/vae.toml and what the command printed; tests copy it before changing it."""
    folder = tmp_path_factory.mktemp("cli") / "run"
    return folder, cli("run", VAE, "--out", folder, *TINY)


@pytest.fixture
def run_folder(digits_run, tmp_path) -> Path:
    return Path(shutil.copytree(digits_run[0], tmp_path / "run"))


def test_run_writes_a_run_folder(digits_run):
    folder, result = digits_run
    assert (result.code, result.err) == (0, "")
    assert sorted(path.name for path in folder.iterdir()) == sorted(RUN_FILES)
    assert all((folder / name).read_bytes().startswith(PNG_MAGIC) for name in ("elbo.png", "samples.png"))
    metrics = metrics_of(folder)
    lines = result.out.splitlines()
    assert lines[-1] == f"run folder: {folder}"
    for line, split in zip(lines, ("train", "validation", "test")):
        assert line.startswith(f"{split:>10}: ELBO {metrics[split]['elbo']:.3f} nats")


def test_run_metrics(digits_run):
    folder = digits_run[0]
    metrics = metrics_of(folder)
    train_size = digits_train_size(folder)
    assert metrics["train"]["num_examples"] == train_size
    assert metrics["training"]["steps"] == EPOCHS * (train_size // BATCH_SIZE)
    assert metrics["training"]["epochs"] == EPOCHS
    assert metrics["device"] == metrics["training"]["device"] == "cpu"
    for split in ("train", "validation", "test"):
        figures = metrics[split]
        assert math.isfinite(figures["elbo"])
        assert figures["elbo_bits_per_dim"] == pytest.approx(-figures["elbo"] / (DIGITS_DIM * math.log(2)), rel=1e-12)
    test = metrics["test"]
    assert test["nll_num_samples"] == NUM_SAMPLES and test["nll_num_examples"] == test["num_examples"]
    assert math.isfinite(test["nll"]) and math.isfinite(test["nll_stderr"]) and test["nll_stderr"] >= 0
    assert test["nll_bits_per_dim"] == pytest.approx(test["nll"] / (DIGITS_DIM * math.log(2)), rel=1e-12)


def elbo_mean_stderr(folder: Path, repeats: int = 16) -> float:
    """Monte-Carlo standard error of the 1-particle test ELBO mean, from repeated draws per example."""
    _, model, splits = load_run(folder)
    pyro.set_rng_seed(0)
    draws = torch.stack([elbo(model.model, model.guide, splits.test.x) for _ in range(repeats)])  # [repeats, N]
    return (draws.var(dim=0).sum().sqrt() / draws.shape[1]).item()


def test_test_elbo_is_below_the_importance_sampled_log_likelihood(digits_run):
    test = metrics_of(digits_run[0])["test"]
    # E[1-particle ELBO] = L_1 <= E[L_K] = -E[nll] (Burda et al. 2015, arXiv:1509.00519, Theorem 1), both
    # means over the same test examples; the difference of the two estimates has a standard error of at
    # most the sum of theirs, so it may exceed 0 by 4 of those only by chance (p < 1e-4).
    margin = 4 * (test["nll_stderr"] + elbo_mean_stderr(digits_run[0]))
    assert test["elbo"] <= -test["nll"] + margin


def test_saved_spec_reruns_to_the_same_numbers(digits_run, tmp_path):
    folder = digits_run[0]
    result = cli("run", folder / "spec.toml", "--out", tmp_path / "again", "--quiet")
    assert result.code == 0
    assert (tmp_path / "again" / "spec.toml").read_text() == (folder / "spec.toml").read_text()
    assert without_timings(metrics_of(tmp_path / "again")) == without_timings(metrics_of(folder))


def test_evaluate_updates_the_metrics(run_folder):
    before = metrics_of(run_folder)
    result = cli("evaluate", run_folder, "--num-samples", 16, "--max-examples", 20)
    assert (result.code, result.err) == (0, "")
    # The NLL over 20 examples is not on the line of the ELBO over all of them.
    total = before["test"]["num_examples"]
    assert result.out.splitlines()[2].endswith(f"bits/dim) over {total} examples")
    assert f"(K = 16, first 20 of {total} examples" in result.out.splitlines()[3]
    after = metrics_of(run_folder)
    assert after["test"]["nll_estimates"]["K=16, 20 examples"]["nll_num_examples"] == 20
    assert (after["training"], after["versions"]) == (before["training"], before["versions"])
    assert f"  training: {json.dumps(before['training'])}" in result.out


def test_sample_writes_a_png(run_folder, tmp_path):
    path = tmp_path / "grid.png"
    result = cli("sample", run_folder, "-n", 9, "--out", path)
    assert (result.code, result.out, result.err) == (0, f"wrote {path}\n", "")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_resume_with_more_epochs_continues_training(run_folder):
    spec = run_folder / "spec.toml"
    result = cli("run", spec, "--out", run_folder, "--resume", "--set", "inference.epochs=4", "--quiet")
    assert result.code == 0
    training = metrics_of(run_folder)["training"]
    assert (training["epochs"], training["steps"]) == (4, 4 * (digits_train_size(run_folder) // BATCH_SIZE))


# (argv, the error message); {run} is a finished run, {tmp} an empty folder that is the current directory.
USER_ERRORS = {
    "unknown key": (
        ["run", VAE, *TINY, "--set", "model.latnt_dim=3", "--out", "{tmp}/out"],
        "--set model.latnt_dim=3: model.latnt_dim: unknown key (did you mean 'latent_dim'?)",
    ),
    "bad value": (
        ["run", VAE, *TINY, "--set", "inference.lr=-1", "--out", "{tmp}/out"],
        "--set inference.lr=-1: inference.lr: input should be greater than 0 (got -1)",
    ),
    "missing spec file": (
        ["run", "{tmp}/missing.toml", "--out", "{tmp}/out"],
        "spec file not found: {tmp}/missing.toml",
    ),
    "same --out twice": (
        ["run", "{run}/spec.toml", "--out", "{run}", "--quiet"],
        "{run} already holds a run: pass --resume to continue it, --out to write elsewhere, or --force to replace it",
    ),
    "--resume into an empty folder": (
        ["run", VAE, *TINY, "--out", "{tmp}", "--resume"],
        "cannot resume: {tmp} has no checkpoint.pt",
    ),
    "--resume with a changed model": (
        ["run", "{run}/spec.toml", "--out", "{run}", "--resume", "--set", "model.latent_dim=3", "--quiet"],
        "cannot resume {run}: model.latent_dim was 2 and is now 3 (a resume may change [evaluation], [sampling] and"
        " inference's epochs, time_limit, patience, validation_particles, keep_best, checkpoint_every, log_every,"
        " device, threads, jit, precision; the others need a new run: --out elsewhere or --force)",
    ),
    "evaluate a folder that is not a run": (["evaluate", "{tmp}"], "{tmp} is not a run folder (no spec.toml)"),
    "MNIST without a data path": (
        ["run", MNIST, *TINY, "--out", "{tmp}/out"],
        "MNIST needs the directory of its IDX files: set data.path, or PPGEN_DATA to a folder holding mnist/",
    ),
    "missing data file": (  # a relative data.path given with --set is relative to the current directory
        ["run", VAE, *TINY, "--set", "data.name=file", "--set", "data.path=missing.npz", "--out", "out"],
        "data file {tmp}/missing.npz does not exist",
    ),
}


@pytest.mark.parametrize("argv, message", USER_ERRORS.values(), ids=USER_ERRORS.keys())
def test_user_errors_print_one_line_and_exit_2(run_folder, tmp_path, monkeypatch, argv, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    monkeypatch.delenv("PPGEN_DATA", raising=False)
    places = {"run": run_folder, "tmp": empty}
    result = cli(*(arg.format(**places) if isinstance(arg, str) else arg for arg in argv))
    assert (result.code, result.err) == (2, f"ppgen: error: {message.format(**places)}\n")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["sample", "run", "-n", "0"], "ppgen sample: error: argument -n: expected a positive whole number, got '0'"),
        # Sampling seeds numpy's legacy generator, which takes [0, 2**32).
        (
            ["sample", "run", "--seed", "-1"],
            "ppgen sample: error: argument --seed: expected a whole number from 0 to 2**32 - 1, got '-1'",
        ),
        (
            ["evaluate", "run", "--num-samples", "-3"],
            "ppgen evaluate: error: argument --num-samples: expected a positive whole number, got '-3'",
        ),
        (
            ["evaluate", "run", "--max-examples", "2.5"],
            "ppgen evaluate: error: argument --max-examples: expected a positive whole number, got '2.5'",
        ),
        (["run"], "ppgen run: error: the following arguments are required: spec"),
        # The list of choices that follows is worded differently across Python versions.
        (["train", "models/vae.toml"], "ppgen: error: argument COMMAND: invalid choice: 'train'"),
    ],
)
def test_argument_errors_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith(message)


def only_warnings(err: str) -> bool:
    """Nothing but warnings on stderr: a run whose 1-second budget (a loaded machine trains fewer steps) leaves
    a guide too poor for K = 4 importance samples is warned about, rightly."""
    return all(line.startswith("ppgen: warning: ") for line in err.splitlines())


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory, synthetic_mnist) -> tuple[Path, Result]:
    folder = tmp_path_factory.mktemp("cli") / "mnist"
    # The time limit caps training: one epoch of 54,000 images takes long on a CPU.
    budget = ("--set", f"data.path={synthetic_mnist}", "--set", "evaluation.max_examples=20",
              "--set", "inference.time_limit=1")  # fmt: skip
    return folder, cli("run", MNIST, "--out", folder, *TINY, *budget)


@pytest.mark.slow
def test_mnist_run(mnist_run):
    folder, result = mnist_run
    assert result.code == 0 and only_warnings(result.err), result.err
    assert sorted(path.name for path in folder.iterdir()) == sorted(RUN_FILES)
    metrics = metrics_of(folder)
    # The official 60,000/10,000 split, with validation_fraction = 0.1 of the training images held out.
    sizes = [metrics[split]["num_examples"] for split in ("train", "validation", "test")]
    assert sizes == [54000, 6000, 10000]
    assert (metrics["test"]["nll_num_samples"], metrics["test"]["nll_num_examples"]) == (NUM_SAMPLES, 20)
    assert metrics["training"]["steps"] >= 1
    assert all(math.isfinite(metrics[split]["elbo"]) for split in ("train", "validation", "test"))


@pytest.mark.slow
def test_mnist_run_folder_can_be_evaluated(mnist_run, tmp_path):
    folder = Path(shutil.copytree(mnist_run[0], tmp_path / "mnist"))
    result = cli("evaluate", folder, "--num-samples", 4, "--max-examples", 5)
    assert result.code == 0 and only_warnings(result.err), result.err
    assert metrics_of(folder)["test"]["nll_estimates"]["K=4, 5 examples"]["nll_num_examples"] == 5


@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "ppgen"], [str(Path(sysconfig.get_path("scripts")) / "ppgen")]],
    ids=["python -m ppgen", "console script"],
)
def test_entry_points(command):
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("usage: ppgen [-h] COMMAND ...")
    assert all(f"    {name}" in result.stdout for name in ("run", "evaluate", "sample"))


def test_a_bayesian_spec_under_torchrun_is_refused(monkeypatch, tmp_path):
    """torchrun trains model/guide pairs; a declarative Bayesian run would repeat itself in every process."""
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    spec = Path(__file__).parents[1] / "models" / "eight_schools.toml"
    result = cli("run", spec, "--out", tmp_path / "out")
    assert result.code == 2
    assert result.err == (
        f"ppgen: error: {spec}: torchrun trains model/guide pairs; a Bayesian spec runs in one process"
        " (its chains run in parallel with inference.chain_method)\n"
    )
    assert not (tmp_path / "out").exists()
