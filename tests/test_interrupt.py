"""Ctrl-C during MCMC keeps the draws so far (NumPyro: ``ppgen.infer.numpyro_sampler``; Pyro: ``ppgen.infer.mcmc``;
written by ``ppgen.bayesian_run``): complete chains in posterior.nc, a chain stopped short of them beside it, and
metrics.json saying what is partial."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from test_cli import REPO, cli

from ppgen.bayesian_run import PARTIAL_FILE
from ppgen.errors import SamplingInterrupted
from ppgen.evaluate import inference_data
from ppgen.infer import mcmc, numpyro_sampler
from ppgen.infer.draws import Draws, interruption
from ppgen.models.reparam import DECENTERED_SUFFIX
from ppgen.posterior import infer
from ppgen.spec.load import load_spec

NORMAL = REPO / "models" / "normal_normal.toml"


def draws_in(path):
    return inference_data.get_group(inference_data.load(path), "posterior")["mu"].shape


@pytest.mark.parametrize("chain_method", ["vectorized", "parallel"])
def test_ctrl_c_during_sampling_saves_the_draws_so_far_and_says_they_are_partial(tmp_path, chain_method):
    # A real SIGINT, sent by a thread once ppgen's handler is in place: the chains (in one program, or one a JAX
    # device) stop at the end of the segment (1/20 of warmup + draws) after the one running when they look, here the
    # first (the signal comes while they compile). Parallel chains once ran whole and finished first.
    out, samples = tmp_path / "run", 100_000
    script = textwrap.dedent(f"""
        import os, signal, sys, threading, time
        from ppgen.cli import main

        def interrupt():
            while signal.getsignal(signal.SIGINT) is signal.default_int_handler:
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=interrupt, daemon=True).start()
        sys.exit(main(["run", {str(NORMAL)!r}, "--out", {str(out)!r}, "--quiet", "--set", "inference.num_chains=2",
                       "--set", "inference.chain_method={chain_method}", "--set", "inference.num_samples={samples}",
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
    def stop_on_interrupt(*message):
        yield StopAfter(checks)

    monkeypatch.setattr(numpyro_sampler, "stop_on_interrupt", stop_on_interrupt)
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


def test_kept_draws_name_the_variables_as_the_spec_writes_them(monkeypatch, tmp_path):
    # The eight schools sample theta non-centred (its standardized site theta_decentered); draws kept by a Ctrl-C
    # hold theta as a finished run's do, without the sampler's own site.
    out = tmp_path / "run"
    spec = REPO / "models" / "posteriordb" / "eight_schools-eight_schools_centered.toml"
    monkeypatch.setattr(numpyro_sampler, "stop_on_interrupt", lambda *message: contextlib.nullcontext(StopAfter(12)))
    settings = ["inference.num_chains=1", "inference.num_warmup=100", "inference.num_samples=200"]
    args = [arg for key in settings for arg in ("--set", key)]
    result = cli("run", spec, "--out", out, "--quiet", "--set", "evaluation.plots=false", *args)
    assert result.code == 130
    posterior = inference_data.get_group(inference_data.load(out / "posterior.nc"), "posterior")
    assert "theta" in posterior and not any(name.endswith(DECENTERED_SUFFIX) for name in posterior)


def test_a_stop_in_warmup_saves_nothing_and_says_so(monkeypatch, tmp_path):
    out = tmp_path / "run"
    settings = ["inference.num_chains=1", "inference.num_warmup=1000", "inference.num_samples=100"]
    result = run_stopped_after(monkeypatch, 2, out, *settings)  # 3 segments of 55 steps
    assert result.code == 130
    assert "the chain stopped in warmup, at step 165 of 1000" in result.err and "no draws to save" in result.err
    assert not (out / "posterior.nc").exists()
    assert json.loads((out / "metrics.json").read_text())["saved"] == []


# Pyro's chains run in this process one after another, ppgen's hook seeing each step: a wrapped MCMC sends a real
# SIGINT from within the hook of chain 1's draw DRAWN (0-based), after chain 0's 120 draws, and ppgen's hook stops the
# chain at its next step, before recording it: DRAWN + 1 draws kept, whatever the machine's speed.
PYRO_SCRIPT = """
import itertools, os, signal, sys
import pyro.infer
from ppgen.cli import main

seen = itertools.count()

class Interrupting(pyro.infer.MCMC):
    def __init__(self, kernel, hook_fn, **options):
        def hook(kernel, params, stage, index):
            hook_fn(kernel, params, stage, index)
            if stage.startswith("Sample") and next(seen) == 120 + {drawn}:
                os.kill(os.getpid(), signal.SIGINT)
        super().__init__(kernel, hook_fn=hook, **options)

pyro.infer.MCMC = Interrupting
sys.exit(main(["run", {spec!r}, "--out", {out!r}, "--quiet", "--set", "evaluation.plots=false",
               *[arg for setting in {settings!r} for arg in ("--set", setting)]]))
"""


@pytest.mark.parametrize("method", ["nuts", "mala"])
def test_ctrl_c_during_pyro_sampling_keeps_the_complete_chain_and_the_stopped_ones_draws(tmp_path, method):
    out, drawn = tmp_path / "run", 20
    settings = [f"inference.method={method}", "inference.num_chains=2", "inference.chain_method=sequential"]
    settings += ["inference.num_warmup=20", "inference.num_samples=120"]
    if method == "nuts":
        settings.append("inference.backend=pyro")
    script = PYRO_SCRIPT.format(drawn=drawn, spec=str(NORMAL), out=str(out), settings=settings)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 130, result.stderr
    assert f"1 of 2 chains complete, the next stopped after {drawn + 1} of 120 draws" in result.stderr, result.stderr
    assert draws_in(out / "posterior.nc") == (1, 120)
    assert draws_in(out / PARTIAL_FILE) == (1, drawn + 1)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["interrupted"].startswith("1 of 2 chains complete") and len(metrics["saved"]) == 2


def test_a_stopped_pyro_chain_keeps_the_draws_an_uninterrupted_run_makes(monkeypatch):
    # Chain c is seeded with seed + c, so the stopped chain's draws are the first draws of the same chain run whole,
    # mapped to the constrained space as Pyro maps them (tau > 0 in eight schools). MALA: 2 x 70 quick steps.
    loaded = load_spec(
        REPO / "models" / "eight_schools.toml", overrides=["inference.method=mala", "inference.num_chains=2"]
    )
    spec = loaded.settings.model_copy(
        update={"inference": loaded.settings.inference.model_copy(update={"num_warmup": 20, "num_samples": 50})}
    )
    whole = infer(loaded.model, spec)

    @contextlib.contextmanager
    def stop_on_interrupt(*message):
        # each step looks once, and the loop after each chain: chain 0's 70 and 1, chain 1's warmup and 15 draws
        yield StopAfter(70 + 1 + 20 + 15)

    monkeypatch.setattr(mcmc, "stop_on_interrupt", stop_on_interrupt)
    with pytest.raises(
        SamplingInterrupted, match="1 of 2 chains complete, the next stopped after 15 of 50 draws"
    ) as info:
        infer(loaded.model, spec)
    stopped = info.value
    for name in ("tau", "mu", "theta_raw"):
        np.testing.assert_array_equal(stopped.draws.posterior[name], whole.posterior[name][:1])
        np.testing.assert_array_equal(stopped.partial.posterior[name], whole.posterior[name][1:, :15])
    for name, value in whole.sample_stats.items():
        np.testing.assert_array_equal(stopped.partial.sample_stats[name], value[1:, :15], err_msg=name)
    assert (stopped.partial.posterior["tau"] > 0).all()


def one_chain(draws: int) -> Draws:
    return Draws({"mu": np.arange(draws, dtype=float)[None]}, {"acceptance_rate": np.ones((1, draws))})


def test_chains_stopped_apart_are_kept_cut_to_the_fewest_draws():
    # Chains in worker processes each stop at their own step: the complete one is kept whole, the stopped ones cut
    # to the fewest draws among them (10 warmup steps, 100 draws; 40 and 25 draws made), and the message says so.
    runs, done = [one_chain(100), one_chain(40), one_chain(25)], [110, 50, 35]
    stopped = interruption(runs, done, num_warmup=10, num_samples=100, chains=3, seconds=1.0)
    assert (
        str(stopped)
        == "1 of 3 chains complete, 2 others stopped after 25 of 100 draws (the fewest among them: all cut to that)"
    )
    assert stopped.draws.posterior["mu"].shape == (1, 100)
    np.testing.assert_array_equal(stopped.partial.posterior["mu"], np.stack([np.arange(25.0)] * 2))
    assert stopped.partial.sample_stats["acceptance_rate"].shape == (2, 25)
    assert str(interruption([one_chain(40), one_chain(0)], [50, 5], 10, 100, 2, 1.0)) == (
        "all 2 chains stopped in warmup, at step 5 of 10 (the earliest among them)"
    )


def _spawned_workers(pid: int) -> list[int]:
    """The pids of ``pid``'s worker processes (multiprocessing's spawned children; Linux's /proc)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [child for child in map(int, children) if b"spawn_main" in _cmdline(child)]


def _cmdline(pid: int) -> bytes:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    return b""


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the worker processes through Linux's /proc")
def test_ctrl_c_as_chains_in_worker_processes_start_stops_them_with_one_line(tmp_path):
    # A terminal's Ctrl-C reaches every process of its group. Sent as soon as the two worker processes exist (they
    # are still importing torch), it once killed them: BrokenProcessPool and a traceback. Now each worker remembers
    # it, its chain stops at its first step, and ppgen says so in one line.
    out = tmp_path / "run"
    settings = ["inference.method=mala", "inference.num_chains=2", "inference.chain_method=parallel"]
    settings += ["inference.num_warmup=100", "inference.num_samples=100000", "evaluation.plots=false"]
    command = [sys.executable, "-m", "ppgen", "run", str(NORMAL), "--out", str(out), "--quiet"]
    command += [arg for setting in settings for arg in ("--set", setting)]
    process = subprocess.Popen(command, start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while len(_spawned_workers(process.pid)) < 2 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=600)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1] == "ppgen: interrupted: all 2 chains stopped in warmup, at step 0 of 100; no draws to save", stderr
    assert json.loads((out / "metrics.json").read_text())["saved"] == []
