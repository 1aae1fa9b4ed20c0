"""Every shipped spec validates, alone and with every inference spec, and every model spec runs."""

import math
import tomllib
from pathlib import Path

import pytest
from spec_files import INFERENCE_SPECS, MODEL_SPECS, REPO

from ppgen.models import family_of
from ppgen.runner import run
from ppgen.spec.load import load_spec
from ppgen.spec.schema import EvaluationSpec, SVISpec

RUN_FILES = ("spec.toml", "checkpoint.pt", "model.pt", "metrics.json", "elbo.png", "samples.png")
# A tiny budget for any spec: the model is left as the spec has it; the time limit caps large data sets.
BUDGET = (
    "inference.epochs=1", "inference.time_limit=1", "inference.device=cpu",
    "evaluation.num_samples=8", "evaluation.max_examples=20",
)  # fmt: skip


def spec_id(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_there_are_specs():
    assert MODEL_SPECS and INFERENCE_SPECS


@pytest.mark.parametrize("path", MODEL_SPECS, ids=spec_id)
def test_model_spec_gives_the_values_it_writes(path):
    """Every key the file sets reaches the spec unchanged (nothing dropped, renamed or coerced)."""
    spec = load_spec(path).model_dump(mode="json")
    for table, values in tomllib.loads(path.read_text()).items():
        assert {key: spec[table][key] for key in values} == values


DIGITS_SPECS = [path for path in MODEL_SPECS if tomllib.loads(path.read_text()).get("data", {}).get("name") == "digits"]


@pytest.mark.parametrize("path", DIGITS_SPECS, ids=spec_id)
def test_every_digits_spec_takes_mnist(path):
    """The README's promise: any digits spec runs on MNIST with --set data.name=mnist (which has its test split)."""
    spec = load_spec(path, overrides=["data.name='mnist'"])
    assert spec.data.name == "mnist" and spec.data.test_fraction is None


@pytest.mark.parametrize("inference", INFERENCE_SPECS, ids=spec_id)
@pytest.mark.parametrize("model", MODEL_SPECS, ids=spec_id)
def test_model_spec_with_inference_spec(model, inference):
    alone, combined = load_spec(model), load_spec(model, inference=inference)
    tables = tomllib.loads(inference.read_text())
    assert (combined.data, combined.model) == (alone.data, alone.model)
    assert combined.inference == SVISpec.model_validate(tables.get("inference", {}))
    assert combined.evaluation == EvaluationSpec.model_validate(tables.get("evaluation", {}))


@pytest.mark.slow
@pytest.mark.parametrize("path", MODEL_SPECS, ids=spec_id)
def test_model_spec_runs(path, mnist_data, tmp_path):
    spec = load_spec(path, overrides=BUDGET)
    metrics = run(spec, tmp_path / "run", progress=False)
    assert sorted(file.name for file in (tmp_path / "run").iterdir()) == sorted(RUN_FILES)
    assert metrics["training"]["steps"] >= 1
    family = family_of(spec.model)
    splits = ("train", "validation", "test")
    name = metrics["training"].get("objective", "elbo")  # an instance may name its own (an EBM trained by DSM)
    objective = ("elbo", "elbo_bits_per_dim") if name == "elbo" else (name,)
    figures = [metrics[split][key] for split in splits for key in objective]
    if family.likelihood is None:  # a family without a density says so rather than reporting a figure
        assert metrics["test"]["nll_method"].startswith("none") and "nll" not in metrics["test"]
    else:
        figures += [metrics["test"][key] for key in ("nll", "nll_stderr", "nll_bits_per_dim")]
        assert metrics["test"]["nll_method"] == family.likelihood and metrics["test"]["nll_num_examples"] == 20
    assert all(math.isfinite(value) for value in figures)
    # Latent-variable models report the KL of each latent site (nats, >= 0 up to Monte-Carlo noise of one
    # draw); flows have no latent site and a diffusion chain's sites are its ELBO terms.
    kl_per_site = metrics["test"].get("kl_per_site", {})
    expected = {"vae": ["z"], "cvae": ["z"], "hvae": ["z_2", "z_1"]}.get(spec.model.kind, [])
    assert sorted(kl_per_site) == sorted(expected)
    assert all(math.isfinite(value) for value in kl_per_site.values())
