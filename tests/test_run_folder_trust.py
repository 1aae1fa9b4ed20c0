"""Run folders a user can trust: no result silently replaced or lost, a resume that continues the run it
resumes, one process per folder, and a broken folder named in one line instead of a traceback."""

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from models_exact import ConjugateNormalMean
from test_cli import PNG_MAGIC, REPO, TINY, VAE, cli, metrics_of
from test_svi import StepHook, _conjugate_model, _store_guide

from ppgen.bayesian_run import compare_runs
from ppgen.errors import PpgenError, TrainingError
from ppgen.evaluate import inference_data
from ppgen.generative_run import folder_spec
from ppgen.infer import fit
from ppgen.run_folder import RunFolder

CVAE = REPO / "models" / "cvae.toml"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny VAE run (K = 8 on all test examples); tests copy it before changing it."""
    folder = tmp_path_factory.mktemp("trust") / "run"
    assert cli("run", VAE, "--out", folder, *TINY).code == 0
    return folder


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def one_line_error(result, *fragments: str) -> None:
    assert result.code == 2, result.err
    assert result.err.startswith("ppgen: error: ") and result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in result.err, result.err


# -- evaluations are kept, keyed by K and example count ---------------------------------------------------------


def test_a_partial_evaluation_is_kept_beside_the_full_one_and_never_replaces_it(run):
    before = metrics_of(run)["test"]
    total = before["num_examples"]
    result = cli("evaluate", run, "--num-samples", 4, "--max-examples", 10)
    assert result.code == 0, result.err
    after = metrics_of(run)["test"]
    assert (after["nll"], after["nll_num_samples"], after["nll_num_examples"]) == (before["nll"], 8, total)
    assert set(after["nll_estimates"]) == {f"K=8, {total} examples", "K=4, 10 examples"}
    assert after["nll_estimates"]["K=4, 10 examples"]["nll_num_examples"] == 10
    # The ELBO over every test example and the NLL over 10 of them are never on one line.
    lines = result.out.splitlines()
    assert lines[2].startswith("      test: ELBO") and "NLL" not in lines[2]
    assert f"first 10 of {total} examples" in lines[3]


def test_a_fuller_evaluation_becomes_the_headline_and_keeps_the_earlier_one(run):
    total = metrics_of(run)["test"]["num_examples"]
    assert cli("evaluate", run, "--num-samples", 12).code == 0
    test = metrics_of(run)["test"]
    assert (test["nll_num_samples"], test["nll_num_examples"]) == (12, total)
    assert set(test["nll_estimates"]) == {f"K=8, {total} examples", f"K=12, {total} examples"}


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("trust") / "cvae"
    result = cli(
        "run", CVAE, "--out", folder, *TINY, "--set", "evaluation.classify_samples=3", "--set",
        "evaluation.max_examples=30",
    )  # fmt: skip
    assert result.code == 0, result.err
    return folder


def test_classify_uses_the_specs_classify_samples_and_keeps_figures_of_another_k(cvae_run, tmp_path):
    folder = Path(shutil.copytree(cvae_run, tmp_path / "cvae"))
    assert metrics_of(folder)["test"]["accuracy_num_samples"] == 3
    result = cli("classify", folder, "--max-examples", 30)
    assert result.code == 0, result.err
    assert "(30 examples, K = 3 per class)" in result.out  # the spec's classify_samples, not 100
    result = cli("classify", folder, "--num-samples", 2, "--max-examples", 30)
    assert "(30 examples, K = 2 per class)" in result.out
    test = metrics_of(folder)["test"]
    assert test["accuracy_num_samples"] == 3  # the larger K stays the headline
    assert set(test["accuracy_estimates"]) == {"K=3, 30 examples", "K=2, 30 examples"}


# -- resume continues the folder's own run ------------------------------------------------------------------------


def test_resume_continues_the_run_its_folder_holds_not_the_spec_files_settings(run):
    """The run had --set inference.epochs=2 and a small model; models/vae.toml says 100 epochs and another size."""
    spec = (run / "spec.toml").read_bytes()
    result = cli("run", VAE, "--out", run, "--resume", "--quiet")
    assert result.code == 0, result.err
    assert metrics_of(run)["training"]["epochs"] == 2
    assert (run / "spec.toml").read_bytes() == spec
    assert not (run / "overrides.json").exists()


def test_changes_on_resume_are_recorded_and_kept_by_later_resumes(run):
    spec = (run / "spec.toml").read_bytes()
    assert cli("run", VAE, "--out", run, "--resume", "--quiet", "--set", "inference.epochs=3").code == 0
    assert (run / "spec.toml").read_bytes() == spec
    assert json.loads((run / "overrides.json").read_text()) == [{"inference.epochs": {"was": 2, "now": 3}}]
    assert folder_spec(run).inference.epochs == 3
    steps = metrics_of(run)["training"]["steps"]
    assert cli("run", VAE, "--out", run, "--resume", "--quiet").code == 0  # goes on to 3 epochs, not back to 2
    assert metrics_of(run)["training"]["steps"] == steps and metrics_of(run)["training"]["epochs"] == 3


def test_resume_refuses_a_setting_the_checkpoint_fixes_and_leaves_the_folder_alone(run):
    spec = (run / "spec.toml").read_bytes()
    result = cli("run", VAE, "--out", run, "--resume", "--quiet", "--set", "inference.lr=1e38")
    one_line_error(result, f"cannot resume {run}: inference.lr was 0.001 and is now 1e+38")
    assert (run / "spec.toml").read_bytes() == spec
    assert not (run / "overrides.json").exists()


# -- one process per folder; dead ends; --force -----------------------------------------------------------------


def test_a_second_run_into_a_folder_in_use_stops_before_any_work(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with RunFolder(out) as holder:
        holder.lock()  # as a ppgen run in another process holds it
        result = cli("run", VAE, "--out", out, *TINY)
        one_line_error(result, f"{out} is in use by another ppgen process")
        assert list(out.iterdir()) == []


def test_two_processes_started_at_once_leave_one_run_and_one_clear_error(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "ppgen", "run", str(VAE), "--out", str(out), *TINY]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"]
    errors = [process.communicate(timeout=300)[1] for process in processes]
    results = sorted((process.returncode, error) for process, error in zip(processes, errors))
    assert [code for code, _ in results] == [0, 2]
    assert re.fullmatch(
        f"ppgen: error: {out} (is in use by another ppgen process|already holds a run).*\n", results[1][1]
    )
    assert metrics_of(out)["training"]["epochs"] == 2


def test_a_folder_killed_before_its_first_checkpoint_starts_over(run, tmp_path):
    folder = tmp_path / "killed"
    folder.mkdir()
    shutil.copy(run / "spec.toml", folder)  # what a run writes before it trains
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale, live = folder / f".checkpoint.pt.{dead.pid}.tmp", folder / ".checkpoint.pt.1.tmp"  # pid 1 lives
    stale.write_bytes(b"half a checkpoint")
    live.write_bytes(b"pid 1 is alive")
    one_line_error(
        cli("run", VAE, "--out", folder, "--resume"),
        f"cannot resume: {folder} has no checkpoint.pt (the run stopped before its first checkpoint: start it again"
        " without --resume)",
    )
    result = cli("run", folder / "spec.toml", "--out", folder, "--quiet")
    assert result.code == 0, result.err
    assert not stale.exists() and live.exists()  # only a dead writer's temporary file is removed


def test_force_replaces_a_run_and_keeps_other_files(run):
    (run / "notes.txt").write_text("mine")
    (run / "overrides.json").write_text("[]")
    one_line_error(cli("run", VAE, "--out", run, *TINY), "or --force to replace it")
    result = cli("run", VAE, "--out", run, *TINY, "--set", "inference.epochs=1", "--force")
    assert result.code == 0, result.err
    assert metrics_of(run)["training"]["epochs"] == 1
    assert (run / "notes.txt").read_text() == "mine" and not (run / "overrides.json").exists()


# -- broken folders: one line each ----------------------------------------------------------------------------


class _Payload:
    """Unpickling it would run code chosen by whoever wrote the file."""


def _architecture_edited(folder: Path) -> None:
    spec = folder / "spec.toml"
    spec.write_text(spec.read_text().replace("latent_dim = 2", "latent_dim = 3"))


BROKEN = {
    "metrics.json not JSON": (
        lambda f: (f / "metrics.json").write_text("{not json"),
        "metrics.json is corrupt: it should hold an object",
    ),
    "metrics.json a list": (lambda f: (f / "metrics.json").write_text("[1, 2]"), "metrics.json is corrupt"),
    "spec.toml of another architecture": (
        _architecture_edited,
        "model.pt does not fit the model {run}/spec.toml describes (was the spec edited after training?): size"
        " mismatch for",
    ),
    "model.pt without a state dict": (
        lambda f: torch.save({"format": 1}, f / "model.pt"),
        "model.pt is corrupt or not a ppgen model: it holds no state dict of tensors",
    ),
    "model.pt holding a list": (
        lambda f: torch.save([1, 2], f / "model.pt"),
        "model.pt is corrupt or not a ppgen file: it holds a list, not a dict",
    ),
    "model.pt cut short": (
        lambda f: (f / "model.pt").write_bytes((f / "model.pt").read_bytes()[:200]),
        "model.pt is corrupt or not a ppgen file: torch cannot read it",
    ),
    "model.pt holding an object": (
        lambda f: torch.save({"state_dict": _Payload()}, f / "model.pt"),
        "model.pt is corrupt or not a ppgen file: it holds objects other than tensors and plain data",
    ),
    "overrides.json not a list of changes": (
        lambda f: (f / "overrides.json").write_text('{"inference.epochs": 3}'),
        "overrides.json is corrupt: it should hold a list of",
    ),
    "the data split changed since training": (
        lambda f: (f / "spec.toml").write_text((f / "spec.toml").read_text().replace("seed = 0", "seed = 7", 1)),
        "split differs from the one the model was trained on",
    ),
}


@pytest.mark.parametrize("damage, message", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_run_folder_is_one_line(run, damage, message):
    damage(run)
    metrics = (run / "metrics.json").read_bytes()
    result = cli("evaluate", run, "--num-samples", 2, "--max-examples", 3)
    one_line_error(result, message.format(run=run))
    assert "weights_only" not in result.err  # torch's advice to unpickle the file must never reach a user
    assert (run / "metrics.json").read_bytes() == metrics


@pytest.mark.parametrize(
    "checkpoint, message",
    [
        (b"\x00" * 64, "checkpoint.pt is corrupt or not a ppgen file: torch cannot read it"),
        ({"format": 2}, "cannot resume from {run}/checkpoint.pt: the checkpoint is corrupt: it has no 'position'"),
    ],
    ids=["not torch", "no training state"],
)
def test_a_broken_checkpoint_on_resume_is_one_line(run, checkpoint, message):
    if isinstance(checkpoint, bytes):
        (run / "checkpoint.pt").write_bytes(checkpoint)
    else:
        torch.save(checkpoint, run / "checkpoint.pt")
    one_line_error(cli("run", VAE, "--out", run, "--resume", "--quiet"), message.format(run=run))


def test_sample_refuses_data_split_otherwise_than_in_training(run):
    BROKEN["the data split changed since training"][0](run)
    one_line_error(cli("sample", run, "-n", 4), "the train split differs from the one the model was trained on")


# -- tracebacks turned into one line; sample's default; what a diverged or NaN run says -------------------------


def test_sample_writes_into_the_run_folder_by_default_and_names_a_missing_folder(run, tmp_path):
    samples = (run / "samples.png").read_bytes()
    result = cli("sample", run, "-n", 4)
    path = run / "samples-n4-seed0-ancestral.png"
    assert (result.code, result.out) == (0, f"wrote {path}\n")
    assert path.read_bytes().startswith(PNG_MAGIC) and (run / "samples.png").read_bytes() == samples
    missing = tmp_path / "missing" / "x.png"
    one_line_error(cli("sample", run, "--out", missing), f"cannot write {missing}: the folder {missing.parent}")


def test_evaluate_on_a_bayesian_run_says_what_the_command_is_for(tmp_path):
    folder = tmp_path / "bayes"
    folder.mkdir()
    shutil.copy(REPO / "models" / "eight_schools.toml", folder / "spec.toml")
    for argv in (
        ["evaluate", folder],
        ["classify", folder],
        ["sample", folder],
        ["run", "x", "--out", folder, "--resume"],
    ):
        one_line_error(cli(*argv), f"{folder} holds a Bayesian run: evaluate, sample, classify and --resume")


def _results(observations: int):
    rng = np.random.default_rng(0)
    draws = {"mu": rng.normal(size=(2, 20))}
    log_likelihood = {"y": rng.normal(size=(2, 20, observations)) - 1.0}
    return inference_data.build_inference_data(posterior=draws, log_likelihood=log_likelihood)


def test_compare_of_runs_on_different_data_is_one_error(tmp_path):
    for name, observations in (("a", 8), ("b", 7)):
        (tmp_path / name).mkdir()
        inference_data.save(_results(observations), tmp_path / name / "posterior.nc")
    with pytest.raises(PpgenError, match=r"different numbers of observations \(a 8, b 7\)"):
        compare_runs([tmp_path / "a", tmp_path / "b"])


def test_a_diverged_run_is_warned_about(tmp_path):
    out = tmp_path / "diverged"
    result = cli("run", VAE, "--out", out, *TINY, "--set", "inference.lr=1e6")
    assert result.code == 0, result.err
    assert result.err.startswith("ppgen: warning: training diverged: the training ELBO ended at")
    assert "lower inference.lr (now 1e+06)" in result.err
    assert metrics_of(out)["warnings"][0].startswith("training diverged")


def test_a_normal_run_has_no_divergence_warning(trained):
    assert "warnings" not in metrics_of(trained)


def test_a_nan_before_the_first_checkpoint_names_its_epoch_and_no_checkpoint(tmp_path):
    x = ConjugateNormalMean().sample(64).float()
    path = tmp_path / "checkpoint.pt"
    pyro.clear_param_store()
    poison = StepHook(lambda t: t, 2, lambda t: t * math.nan)
    with pytest.raises(TrainingError) as error:
        fit(_conjugate_model, _store_guide, x, epochs=2, batch_size=16, checkpoint=path, log_every=4, progress=False,
            batch_transform=poison)  # fmt: skip
    assert str(error.value).startswith("the loss is nan at step 2 (epoch 1); training stopped and no checkpoint was")
    assert not path.exists()
