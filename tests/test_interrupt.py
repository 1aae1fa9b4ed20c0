"""Ctrl-C during NumPyro's MCMC keeps the draws so far (``ppgen.infer.numpyro_sampler``, ``ppgen.bayesian_run``):
complete chains in posterior.nc, a chain stopped short of them beside it, and metrics.json saying what is partial."""

import contextlib
import json
import subprocess
import sys
import textwrap
import threading

from test_cli import REPO, cli

from ppgen.bayesian_run import PARTIAL_FILE
from ppgen.evaluate import inference_data
from ppgen.infer import numpyro_sampler

NORMAL = REPO / "models" / "normal_normal.toml"


def draws_in(path):
    return inference_data.get_group(inference_data.load(path), "posterior")["mu"].shape


def test_ctrl_c_during_sampling_saves_the_draws_so_far_and_says_they_are_partial(tmp_path):
    # A real SIGINT, sent by a thread once ppgen's handler is in place: the (vectorized) chains stop at the end of
    # their segment (1/20 of warmup + draws), after the first segment at the latest, and before the last.
    out, samples = tmp_path / "run", 400_000
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        from ppgen.cli import main

        def interrupt():
            while signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        sys.exit(main(["run", {str(NORMAL)!r}, "--out", {str(out)!r}, "--quiet", "--set", "inference.num_chains=2",
                       "--set", "inference.chain_method=vectorized", "--set", "inference.num_samples={samples}",
                       "--set", "evaluation.plots=false"]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 130, result.stderr
    assert "all 2 chains stopped after" in result.stderr and "(not checked)" in result.stderr, result.stderr
    chains, kept = draws_in(out / "posterior.nc")
    assert chains == 2 and 0 < kept < samples
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"] == f"all 2 chains stopped after {kept} of {samples} draws"


class StopAfter(threading.Event):
    """A stop flag that reads set from its ``checks``-th look on: a Ctrl-C at a chosen segment, without a signal."""

    def __init__(self, checks: int):
        super().__init__()
        self.checks = checks

    def is_set(self) -> bool:
        self.checks -= 1
        return self.checks < 0


def run_stopped_after(monkeypatch, checks: int, out, *settings):
    @contextlib.contextmanager
    def stop_on_interrupt():
        yield StopAfter(checks)

    monkeypatch.setattr(numpyro_sampler, "_stop_on_interrupt", stop_on_interrupt)
    args = [arg for key in settings for arg in ("--set", key)]
    return cli("run", NORMAL, "--out", out, "--quiet", "--set", "evaluation.plots=false", *args)


def test_sequential_chains_keep_the_complete_ones_and_the_stopped_one_apart(monkeypatch, tmp_path):
    # 20 segments of 15 steps (100 warmup + 200 draws): chain 0 looks 21 times (once per segment, once after the
    # chain); chain 1 stops after its 12th segment, at step 180: 80 draws.
    out = tmp_path / "run"
    settings = ["inference.chain_method=sequential", "inference.num_warmup=100", "inference.num_samples=200"]
    result = run_stopped_after(monkeypatch, 21 + 11, out, "inference.num_chains=2", *settings)
    assert result.code == 130
    assert "1 of 2 chains complete, the next stopped after 80 of 200 draws" in result.err
    assert draws_in(out / "posterior.nc") == (1, 200)
    assert draws_in(out / PARTIAL_FILE) == (1, 80)


def test_a_stop_in_warmup_saves_nothing_and_says_so(monkeypatch, tmp_path):
    out = tmp_path / "run"
    settings = ["inference.num_chains=1", "inference.num_warmup=1000", "inference.num_samples=100"]
    result = run_stopped_after(monkeypatch, 2, out, *settings)  # 3 segments of 55 steps
    assert result.code == 130
    assert "the chain stopped in warmup, at step 165 of 1000" in result.err and "no draws to save" in result.err
    assert not (out / "posterior.nc").exists()
    assert json.loads((out / "metrics.json").read_text())["saved"] == []
