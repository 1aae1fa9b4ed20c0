"""The command line for the model zoo: classification by likelihood, diffusion samplers, and the mistakes
each family makes possible."""

import json
from pathlib import Path

import pytest
from test_cli import PNG_MAGIC, REPO, cli

MODELS = REPO / "models"
TINY = ("--set", "inference.epochs=1", "--set", "inference.device=cpu", "--quiet")


@pytest.fixture(scope="module")
def cvae_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cvae") / "run"
    sizes = ("--set", "model.hidden=[16]", "--set", "model.latent_dim=2", "--set", "evaluation.num_samples=4")
    result = cli("run", MODELS / "cvae.toml", "--out", out, *TINY, *sizes, "--set", "evaluation.classify_samples=3")
    assert result.code == 0, result.err
    return out


@pytest.fixture(scope="module")
def ddpm_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddpm") / "run"
    sizes = ("--set", "model.num_steps=60", "--set", "model.hidden=[16]", "--set", "evaluation.num_samples=2",
             "--set", "evaluation.max_examples=4")  # fmt: skip
    result = cli("run", MODELS / "ddpm.toml", "--out", out, *TINY, *sizes)
    assert result.code == 0, result.err
    return out


def test_a_cvae_run_reports_its_accuracy_and_classify_recomputes_it(cvae_run):
    test = json.loads((cvae_run / "metrics.json").read_text())["test"]
    assert 0 <= test["accuracy"] <= 1 and test["accuracy_num_samples"] == 3
    result = cli("classify", cvae_run, "--num-samples", 5, "--max-examples", 20)
    assert result.code == 0, result.err
    test = json.loads((cvae_run / "metrics.json").read_text())["test"]
    accuracy = test["accuracy_estimates"]["K=5, 20 examples"]["accuracy"]  # filed beside the run's own figure
    assert result.out.startswith(f"test accuracy {accuracy:.4f} (20 examples, K = 5 per class)")


@pytest.mark.parametrize("sampler", ["ancestral", "pc", "langevin"])
def test_a_diffusion_run_samples_with_each_sampler(ddpm_run, sampler, tmp_path):
    out = tmp_path / f"{sampler}.png"
    result = cli("sample", ddpm_run, "-n", 4, "--sampler", sampler, "--out", out)
    assert result.code == 0, result.err
    assert out.read_bytes().startswith(PNG_MAGIC)


def test_the_diffusion_run_reports_the_closed_form_elbo(ddpm_run):
    test = json.loads((ddpm_run / "metrics.json").read_text())["test"]
    assert test["elbo"] < 0 and test["elbo_bits_per_dim"] > 0 and test["nll_num_examples"] == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("classify", "{ddpm}"), "{ddpm} holds a 'ddpm', which has no labels to classify (use a 'cvae')"),
        (
            ("sample", "{cvae}", "--sampler", "pc"),
            "sampler 'pc' does not apply to {cvae}'s 'cvae' (its samplers: 'ancestral')",
        ),
        (
            ("run", str(MODELS / "cvae.toml"), "--set", "data.name=moons", "--set", "data.binarize=none",
             "--set", "model.likelihood=gaussian", "--out", "{tmp}/moons"),
            "model.kind = 'cvae' needs labelled data; data.name = 'moons' has no labels",
        ),
        (
            ("run", str(MODELS / "ddpm.toml"), "--set", "model.num_steps=10", "--out", "{tmp}/short"),
            "--set model.num_steps=10: model.num_steps = 10 is too few for the linear schedule with beta_end = 0.02:"
            " it scales beta_end by 1000 / T, which must stay below 1",
        ),
    ],
    ids=["classify without labels", "sampler for a cvae", "cvae without labels", "too short a linear schedule"],
)  # fmt: skip
def test_zoo_mistakes_are_one_line_errors(cvae_run, ddpm_run, tmp_path, argv, message):
    names = {"cvae": cvae_run, "ddpm": ddpm_run, "tmp": tmp_path}
    result = cli(*(part.format(**names) for part in argv))
    assert result.code == 2
    assert result.err == f"ppgen: error: {message.format(**names)}\n"


def test_samples_of_a_conditional_model_are_shown_a_row_per_class(cvae_run, tmp_path):
    from types import SimpleNamespace

    import torch

    from ppgen.generative_run import _by_class

    model, sampling = SimpleNamespace(num_classes=3), SimpleNamespace(label=None)
    samples = torch.arange(6.0).unsqueeze(-1)  # sample i is of class i mod 3
    (title, rows, labels), columns = _by_class("6 samples", samples, model, sampling)
    assert rows.squeeze(-1).tolist() == [0, 3, 1, 4, 2, 5] and labels == ["class 0", "class 1", "class 2"]
    assert columns == 2 and title.endswith("a row per class")
    (title, rows), columns = _by_class("7 samples", torch.zeros(7, 1), model, sampling)
    assert title.endswith("classes 0-2 in turn") and columns is None
    result = cli("sample", cvae_run, "-n", 20, "--out", tmp_path / "grid.png")
    assert result.code == 0, result.err
    assert (tmp_path / "grid.png").read_bytes().startswith(PNG_MAGIC)
