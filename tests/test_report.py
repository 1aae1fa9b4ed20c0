"""What a generative run shows beside metrics.json: a CVAE's classification accuracy, a warning when the
importance-sampled NLL's effective sample size is too small for its standard error to mean anything, and a sample
grid whose rows say what they are."""

import json
from pathlib import Path

from test_cli import cli

from ppgen import generative_run
from ppgen.plots import plot_examples

REPO = Path(__file__).resolve().parents[1]
TINY_CVAE = (
    "--set", "inference.epochs=1", "--set", "inference.device=cpu", "--set", "model.hidden=[16]",
    "--set", "model.latent_dim=2", "--set", "evaluation.num_samples=4", "--set", "evaluation.classify_samples=3",
    "--quiet",
)  # fmt: skip


def test_a_cvae_run_prints_its_accuracy_and_a_tiny_ess_warns(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(generative_run, "plot_examples", lambda *args, **kw: figures.append(plot_examples(*args, **kw)))
    result = cli("run", REPO / "models" / "cvae.toml", "--out", tmp_path / "run", *TINY_CVAE)
    assert result.code == 0, result.err
    # the sample grid says which class each row is, and which rows are reconstructions
    samples, reconstructions = (axes for axes in figures[0].axes if axes.get_title())
    assert [label.get_text() for label in samples.get_yticklabels()] == [f"class {c}" for c in range(10)]
    assert [label.get_text() for label in reconstructions.get_yticklabels()] == ["test", "reconstruction"] * 4
    test = json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    line = f"  classification accuracy {test['accuracy']:.4f} ({test['num_examples']} test examples, K = 3 per class)"
    assert line in result.out.splitlines()
    # One importance sample has an effective sample size of 1: its +- is no error bar.
    result = cli("evaluate", tmp_path / "run", "--num-samples", 1)
    assert result.code == 0, result.err
    assert "ppgen: warning: the importance-sampled NLL has a median effective sample size of 1.0 of K = 1" in result.err
