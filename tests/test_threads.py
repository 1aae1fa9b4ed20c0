"""ppgen's CPU thread policy (ppgen.threads): one thread for small models, short OpenMP spinning, and a user's
explicit setting always wins. bench/threads.py measures what the policy buys; these tests check the decisions."""

import json
import os
import subprocess
import sys

import pytest
import torch

from ppgen.errors import SpecError
from ppgen.infer import fit
from ppgen.models import VAE
from ppgen.spec.load import load_spec
from ppgen.threads import SMALL_STEP_FLOPS, physical_cores, step_flops, training_threads, using_threads


@pytest.fixture
def torch_default_threads(monkeypatch):
    """torch at its default count (one per physical core), with no thread variables in the environment."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(physical_cores())
    yield
    torch.set_num_threads(before)


def test_a_small_model_trains_on_one_thread_and_a_large_one_keeps_torchs_count(torch_default_threads):
    assert training_threads("auto", SMALL_STEP_FLOPS / 2) == 1
    assert training_threads("auto", SMALL_STEP_FLOPS * 2) is None


def test_an_explicit_count_wins(torch_default_threads, monkeypatch):
    assert training_threads(3, 1.0) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert training_threads("auto", 1.0) is None


@pytest.mark.skipif(physical_cores() == 1, reason="a one-core machine has no other count to choose")
def test_a_torch_set_num_threads_call_wins(torch_default_threads):
    torch.set_num_threads(physical_cores() + 1)
    assert training_threads("auto", 1.0) is None


def test_the_thread_count_is_restored_after_the_block(torch_default_threads):
    with using_threads(1) as count:
        assert count == torch.get_num_threads() == 1
    assert torch.get_num_threads() == physical_cores()


def test_fit_reports_the_count_it_trained_with_and_restores_the_callers(torch_default_threads):
    x = torch.bernoulli(torch.full((32, 8), 0.3))
    vae = VAE(8, hidden=[4], latent_dim=2)
    assert step_flops(sum(p.numel() for p in vae.parameters()), 16) < SMALL_STEP_FLOPS
    assert fit(vae.model, vae.guide, x, epochs=1, batch_size=16, progress=False).threads == 1
    assert torch.get_num_threads() == physical_cores()
    assert fit(vae.model, vae.guide, x, epochs=1, batch_size=16, progress=False, threads=2).threads == 2


def test_the_spec_key_takes_a_count_or_auto(tmp_path):
    spec = tmp_path / "vae.toml"
    spec.write_text('[model]\nkind = "vae"\n[inference]\nthreads = 2\n')
    assert load_spec(spec).inference.threads == 2
    spec.write_text('[model]\nkind = "vae"\n[inference]\nthreads = "many"\n')
    with pytest.raises(SpecError, match="inference.threads"):
        load_spec(spec)


def _spin_count_after_import(first: str, **environment: str) -> str:
    """GOMP_SPINCOUNT as seen after importing ``first`` and then ppgen in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")} | environment
    code = f"import {first}, ppgen, os; print(os.environ.get('GOMP_SPINCOUNT', 'unset'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_import_ppgen_shortens_openmp_spinning_before_torch_loads_unless_the_user_chose():
    assert _spin_count_after_import("json").strip() == "10000"
    assert _spin_count_after_import("json", OMP_WAIT_POLICY="ACTIVE").strip() == "unset"
    assert _spin_count_after_import("json", GOMP_SPINCOUNT="5").strip() == "5"
    assert _spin_count_after_import("torch").strip() == "unset"  # too late: OpenMP has read its settings


def test_the_threads_key_through_the_command_line(tmp_path):
    # `ppgen run models/vae.toml --set inference.threads=2` trains on 2 threads and records it; by default the
    # small digits VAE trains on one.
    from test_cli import REPO, cli

    short = ["inference.epochs=1", "evaluation.num_samples=5", "evaluation.max_examples=10"]
    for threads, expected in (("2", 2), ("auto", 1)):
        sets = [arg for key in [*short, f"inference.threads={threads}"] for arg in ("--set", key)]
        out = tmp_path / threads
        assert cli("run", REPO / "models" / "vae.toml", "--out", out, "--quiet", *sets).code == 0
        assert json.loads((out / "metrics.json").read_text())["training"]["threads"] == expected
