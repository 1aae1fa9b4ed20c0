"""One loader, one entry point, one run folder: every spec in models/ runs through ``ppgen run`` with a tiny budget
and reports what its kind reports (a generative model: finite ELBOs, test NLL and per-site KL, and its files; a
Bayesian model: a summary and posterior.nc, which for a posteriordb spec holds every parameter of its reference
draws), and the ``spec.toml`` its folder holds, moved and read from another directory, resolves to the same spec.
A few of them (``RERUN``: a generative spec, a Bayesian spec with a CSV and one with a posteriordb data file)
re-run from the moved folder; the others share that code, and a second run each would cost minutes of the suite."""

import json
import math
import shutil
import tomllib
from pathlib import Path

import pytest
from conftest import shared_data_root
from spec_files import ALL_MODEL_SPECS, REPO
from test_cli import cli

import ppgen
from ppgen.errors import SpecError
from ppgen.evaluate import inference_data
from ppgen.evaluate.reference import compare_to_reference, load_reference
from ppgen.models import family_of
from ppgen.run_folder import POSTERIOR_FILE
from ppgen.spec import load as spec_load
from ppgen.spec.bayes_run import BayesRunSpec
from ppgen.spec.schema import RunSpec

# Tiny budgets; the data and the model stay as each spec has them.
GENERATIVE_BUDGET = (
    "inference.epochs=1", "inference.time_limit=1", "inference.device=cpu",
    "evaluation.num_samples=4", "evaluation.max_examples=8",
)  # fmt: skip
# Plots are left out here (tests/test_workflow.py covers them); the PPC, LOO and summary still run. Trees at most
# 2^4 leapfrog steps: 30 warmup steps adapt too little for an ODE model's first trajectories to stay short. A
# diagonal mass matrix: "auto" reads the curvature first, which for a stiff ODE model is 13 s of tracing and
# compiling a Hessian (tests/test_mass_matrix.py and tests/test_remembered.py cover "auto").
BAYES_BUDGET = (
    "inference.num_chains=1", "inference.num_warmup=30", "inference.num_samples=30", "evaluation.plots=false",
    "inference.max_tree_depth=4", "inference.mass=diag",
)  # fmt: skip


def spec_id(path) -> str:
    return str(path.relative_to(REPO))


def budget(path) -> tuple[str, ...]:
    return BAYES_BUDGET if isinstance(ppgen.load_spec(path), BayesRunSpec) else GENERATIVE_BUDGET


def resolved(spec):
    """What must survive a re-run: the validated spec, with a Bayesian model's tables (whose data file is a copy
    in the folder) compared by their data instead of the file's name."""
    if isinstance(spec, RunSpec):
        return spec
    tables = {name: dict(table) for name, table in spec.tables.items()}
    tables["model"].pop("data_file", None)
    data = {name: spec.model.data[name].tolist() for name in sorted(spec.model.data)}
    return spec.model.name, tables, data, spec.settings


RERUN = [REPO / "models" / name for name in ("vae.toml", "logistic_regression.toml")]
RERUN.append(REPO / "models" / "posteriordb" / "kidiq-kidscore_momhs.toml")
GENERATIVE_FILES = ("spec.toml", "checkpoint.pt", "model.pt", "metrics.json", "elbo.png", "samples.png")


@pytest.mark.slow
@pytest.mark.parametrize("path", ALL_MODEL_SPECS, ids=spec_id)
def test_a_run_folder_spec_reruns_as_is(path, tmp_path, monkeypatch, mnist_data):
    first, second = tmp_path / "first", tmp_path / "second"
    overrides = [arg for key in budget(path) for arg in ("--set", key)]
    result = cli("run", path, "--out", first, "--quiet", *overrides)
    assert result.code == 0, result.err
    folder_spec = ppgen.load_spec(first / "spec.toml")
    if isinstance(folder_spec, RunSpec):
        assert_generative_run(folder_spec, first)
    else:
        assert set(json.loads((first / "metrics.json").read_text())["summary"])
        posterior = inference_data.get_group(inference_data.load(first / POSTERIOR_FILE), "posterior")
        reference = shared_data_root()
        if path.parent.name == "posteriordb" and reference is not None:  # every reference parameter is there
            assert compare_to_reference(posterior, load_reference(reference / "posteriordb" / path.stem)).missing == ()
    assert resolved(folder_spec) == resolved(ppgen.load_spec(path, overrides=budget(path)))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # relative paths in the folder's spec.toml must not depend on the directory
    moved = tmp_path / "moved"
    shutil.copytree(first, moved)  # and the folder may move: it holds what its spec names
    assert resolved(ppgen.load_spec(moved / "spec.toml")) == resolved(folder_spec)
    if path in RERUN:
        result = cli("run", moved / "spec.toml", "--out", second, "--quiet")
        assert result.code == 0, result.err
        assert resolved(ppgen.load_spec(second / "spec.toml")) == resolved(folder_spec)


def assert_generative_run(spec, folder: Path) -> None:
    """A generative run's files, finite objectives on every split, its test NLL (or that its family has none) on
    ``evaluation.max_examples`` examples, and the KL of each latent site."""
    assert sorted(file.name for file in folder.iterdir()) == sorted(GENERATIVE_FILES)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["training"]["steps"] >= 1
    family = family_of(spec.model)
    name = metrics["training"].get("objective", "elbo")  # an instance may name its own (an EBM trained by DSM)
    objective = ("elbo", "elbo_bits_per_dim") if name == "elbo" else (name,)
    if name == "elbo":  # the estimator trained, "auto" resolved: the closed-form KL for a VAE's spec
        trained = metrics["training"]["elbo"]
        assert trained in ("trace", "meanfield", "iwae")
        if spec.inference.elbo != "auto":
            assert trained == spec.inference.elbo
        elif spec.model.kind == "vae":
            assert trained == "meanfield"
    figures = [metrics[split][key] for split in ("train", "validation", "test") for key in objective]
    if family.likelihood is None:  # a family without a density says so rather than reporting a figure
        assert metrics["test"]["nll_method"].startswith("none") and "nll" not in metrics["test"]
    else:
        figures += [metrics["test"][key] for key in ("nll", "nll_stderr", "nll_bits_per_dim")]
        assert metrics["test"]["nll_method"] == family.likelihood
        assert metrics["test"]["nll_num_examples"] == spec.evaluation.max_examples
    assert all(math.isfinite(value) for value in figures)
    # Latent-variable models report the KL of each latent site (nats, >= 0 up to Monte-Carlo noise of one draw);
    # flows have no latent site and a diffusion chain's sites are its ELBO terms.
    kl_per_site = metrics["test"].get("kl_per_site", {})
    expected = {"vae": ["z"], "cvae": ["z"], "hvae": ["z_2", "z_1"]}.get(spec.model.kind, [])
    assert sorted(kl_per_site) == sorted(expected)
    assert all(math.isfinite(value) for value in kl_per_site.values())


def test_a_bayesian_folder_spec_writes_every_setting(tmp_path):
    spec = ppgen.load_spec(REPO / "models" / "logistic_regression.toml", overrides=["inference.num_samples=7"])
    from ppgen.spec.bayes_run import dump_bayes_spec

    tables = tomllib.loads(dump_bayes_spec(spec, tmp_path))
    assert tables["inference"]["num_samples"] == 7
    assert tables["inference"]["num_warmup"] == spec.settings.inference.num_warmup  # a default, written out
    assert tables["model"]["data_file"] == "data.csv" and (tmp_path / "data.csv").is_file()
    assert tables["model"]["name"] == "logistic_regression"  # not the stem of the folder's spec.toml


@pytest.mark.parametrize("path", [REPO / "models" / "vae.toml", REPO / "models" / "eight_schools.toml"], ids=spec_id)
def test_the_spec_file_is_read_once_per_run(path, tmp_path, monkeypatch):
    reads = []
    read_toml = spec_load._read_toml
    monkeypatch.setattr(spec_load, "_read_toml", lambda file: reads.append(file) or read_toml(file))
    # Stop right after loading: a bad --out (a file) fails before any work, so the test stays fast.
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = cli("run", path, "--out", blocker / "run", "--quiet")
    assert [Path(file) for file in reads] == [path]
    assert result.code == 2 and result.err.startswith(f"ppgen: error: cannot create the run folder {blocker / 'run'}")


def test_load_spec_tells_the_two_kinds_apart():
    assert isinstance(ppgen.load_spec(REPO / "models" / "vae.toml"), RunSpec)
    assert isinstance(ppgen.load_spec(REPO / "models" / "eight_schools.toml"), BayesRunSpec)


def test_an_inference_table_of_the_other_kind_names_the_file(tmp_path):
    inference = tmp_path / "bad.toml"
    inference.write_text('[sampling]\nsampler = "pc"\n')
    expected = r"bad.toml: \[sampling\] is not an inference spec table \(an inference spec for .*eight_schools.toml"
    with pytest.raises(SpecError, match=expected + r" holds \[inference\], \[guide\], \[evaluation\]\)"):
        ppgen.load_spec(REPO / "models" / "eight_schools.toml", inference=inference)


def test_an_sbc_folder_holds_its_spec_and_is_not_overwritten(tmp_path):
    budget = ("--set", "inference.num_chains=1", "--set", "inference.num_warmup=20", "--set", "inference.num_samples=9")
    first = tmp_path / "sbc"
    args = ("--replicates", 2, "--draws", 9, *budget)
    result = cli("sbc", REPO / "models" / "normal_normal.toml", "--out", first, *args)
    assert result.code in (0, 1), result.err  # 1: ranks judged not uniform, which 2 replicates may well be
    again = cli("sbc", first / "spec.toml", "--out", tmp_path / "again", "--replicates", 2, "--draws", 9)
    assert again.code in (0, 1), again.err
    assert (tmp_path / "again" / "sbc.json").read_text() == (first / "sbc.json").read_text()  # same seeds, same ranks
    refused = cli("sbc", REPO / "models" / "normal_normal.toml", "--out", first, *args)
    assert (refused.code, refused.err) == (
        2,
        f"ppgen: error: {first} already holds a run: pass --out to write elsewhere\n",
    )
