"""Every shipped spec validates, alone and with every inference spec (each runs in tests/test_rerun.py)."""

import tomllib
from pathlib import Path

import pytest
from spec_files import INFERENCE_SPECS, MODEL_SPECS, REPO

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
