"""Data-parallel training under torch.distributed: two gloo processes on the CPU against one process.

The two-process work happens once per module, in two launches: a torch.multiprocessing session that calls
``fit`` and ``run`` in each process (``_process`` below), and ``torchrun -m ppgen run`` for the command line.
"""

import math
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.multiprocessing as mp
from pyro.infer import RenyiELBO
from torch import nn

from ppgen.data import dynamic_binarize
from ppgen.errors import SpecError, TrainingError
from ppgen.infer import fit
from ppgen.infer.checkpoint import load_checkpoint
from ppgen.infer.objectives import make_objective
from ppgen.models import VAE
from ppgen.runner import run
from ppgen.spec.load import load_spec

REPO = Path(__file__).resolve().parents[1]
VAE_SPEC = REPO / "models" / "vae.toml"
RUN_FILES = {"spec.toml", "checkpoint.pt", "model.pt", "metrics.json", "elbo.png", "samples.png"}
Z = 4.0
TINY_RUN = [
    "inference.epochs=2", "inference.batch_size=32", "inference.log_every=1", "inference.device=cpu",
    "model.hidden=[16]", "model.latent_dim=2", "evaluation.num_samples=4", "evaluation.max_examples=50",
]  # fmt: skip


# -- a model/guide pair without random draws --------------------------------------------------------------
class DeterministicPair(nn.Module):
    """z_i = encoder(x_i) + shift, and optionally a global w = w_loc, both point masses, with a Gaussian
    decoder: nothing is drawn at random, so a step's loss and gradient are functions of its batch, and two
    processes can match one process up to rounding. ``shift`` and ``w_loc`` live in Pyro's parameter store."""

    def __init__(self, dim: int, global_latent: bool):
        super().__init__()
        self.encoder, self.decoder = nn.Linear(dim, 1), nn.Linear(1, dim)
        self.global_latent = global_latent

    def model(self, x):
        w = pyro.sample("w", dist.Normal(0.0, 1.0)) if self.global_latent else 0.0
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z) + w, 1.0).to_event(1), obs=x)

    def guide(self, x):
        shift = pyro.param("shift", torch.zeros(1))
        if self.global_latent:
            pyro.sample("w", dist.Delta(pyro.param("w_loc", torch.tensor(0.0))))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Delta(self.encoder(x) + shift, event_dim=1))


DETERMINISTIC = {
    "trace-global-latent": dict(elbo="trace", global_latent=True),
    "iwae": dict(elbo="iwae", num_particles=2, global_latent=False),
}


def _deterministic_data():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(90, 4, generator=generator), torch.randn(13, 4, generator=generator)  # 13: 7 + 6 rows


def _fit_deterministic(case: str, checkpoint: Path | None, **overrides):
    options = {**DETERMINISTIC[case], **overrides}
    pyro.clear_param_store()
    torch.manual_seed(0)
    pair = DeterministicPair(4, options.pop("global_latent"))
    settings = dict(epochs=3, batch_size=10, lr=0.05, log_every=2, checkpoint_every=5, device="cpu")
    train, validation = _deterministic_data()
    return fit(
        pair.model,
        pair.guide,
        train,
        validation,
        checkpoint=checkpoint,
        progress=False,
        **{**settings, **options},
    )


# -- a VAE on random data, interrupted and resumed ------------------------------------------------------------
class Crash(Exception):
    pass


class CrashAt:
    """Dynamic binarization that raises Crash in training step ``step`` (fit calls it once before training)."""

    def __init__(self, step: int | None = None):
        self.step, self.calls = step, 0

    def __call__(self, x):
        self.calls += 1
        if self.step is not None and self.calls == self.step + 1:
            raise Crash
        return dynamic_binarize(x)


def _vae_fit(checkpoint: Path, transform, resume: bool = False):
    generator = torch.Generator().manual_seed(0)
    train, validation = torch.rand(300, 16, generator=generator), torch.rand(60, 16, generator=generator).round()
    pyro.set_rng_seed(0)
    vae = VAE(data_dim=16, latent_dim=2, hidden=[12])
    settings = dict(epochs=3, batch_size=32, checkpoint_every=7, log_every=5, schedule="exponential", lr_decay=0.9)
    fit(vae.model, vae.guide, train, validation, checkpoint=checkpoint, resume=resume, batch_transform=transform,
        progress=False, device="cpu", **settings)  # fmt: skip
    return vae


# -- the two-process session ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _process(rank: int, port: int, folder: Path) -> None:
    """One of two processes: what torchrun would set up, then every two-process job; results to rank{r}.pt."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2")
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    report = {}
    with warnings.catch_warnings():  # as pyproject's filterwarnings does for the test process
        warnings.simplefilter("error")
        for case in DETERMINISTIC:
            result = _fit_deterministic(case, folder / f"{case}.pt")
            report[case] = {"train": result.train_elbo, "validation": result.validation_elbo}
        errors = []
        for options in (dict(global_latent=True), dict(batch_size=11)):
            with pytest.raises(SpecError) as error:
                _fit_deterministic("iwae", None, **options)
            errors.append(str(error.value))
        report["errors"] = errors

        calls = []

        def nan_in_process_1(x):  # a non-finite batch in process 1 only, at step 3
            calls.append(x)
            return x * math.nan if rank == 1 and len(calls) == 4 else x

        with pytest.raises(TrainingError) as error:
            _fit_deterministic("trace-global-latent", None, batch_transform=nan_in_process_1, log_every=4)
        report["nan"] = str(error.value)

        report["uninterrupted"] = _vae_fit(folder / "vae-uninterrupted.pt", CrashAt()).state_dict()
        with pytest.raises(Crash):
            _vae_fit(folder / "vae-interrupted.pt", CrashAt(20))
        report["interrupted_at"] = load_checkpoint(folder / "vae-interrupted.pt")["position"]["step"]
        if rank == 0:
            shutil.copy(folder / "vae-interrupted.pt", folder / "vae-step-14.pt")
        report["resumed"] = _vae_fit(folder / "vae-interrupted.pt", CrashAt(), resume=True).state_dict()

        writes = []
        if rank:  # record every file process 1 writes, renames or creates in the run folder
            sys.addaudithook(lambda event, args: _record_write(event, args, folder / "run", writes))
        spec = load_spec(VAE_SPEC, overrides=TINY_RUN)
        report["metrics"] = run(spec, folder / "run", progress=False)
        report["writes"] = writes
    torch.save(report, folder / f"rank{rank}.pt")


def _record_write(event: str, args: tuple, folder: Path, writes: list) -> None:
    if event == "open" and isinstance(args[0], str | Path):
        path, mode, flags = args
        writing = any(c in (mode or "") for c in "wax+") or (mode is None and flags & (os.O_WRONLY | os.O_RDWR))
        if writing and Path(path).resolve().is_relative_to(folder):
            writes.append((event, str(path)))
    elif event in ("os.rename", "os.replace", "os.mkdir", "os.remove", "os.symlink"):
        if any(isinstance(a, str | Path) and Path(a).resolve().is_relative_to(folder) for a in args[:2]):
            writes.append((event, str(args[0])))


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two-processes")
    mp.spawn(_process, args=(_free_port(), folder), nprocs=2)
    return folder, [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(2)]


# -- tests ------------------------------------------------------------------------------------------------------
def test_the_differentiable_iwae_loss_has_renyi_elbos_loss_and_gradient():
    pyro.set_rng_seed(0)
    vae = VAE(data_dim=20, latent_dim=3, hidden=[16])
    x = torch.bernoulli(torch.full((8, 20), 0.3), generator=torch.Generator().manual_seed(0))
    objective = make_objective(
        vae.model, vae.guide, [vae], elbo="iwae", num_particles=4, num_data=8, max_plate_nesting=1
    )
    results = []
    for loss_and_gradients in (
        lambda: RenyiELBO(alpha=0, num_particles=4, vectorize_particles=True, max_plate_nesting=2).loss_and_grads(
            objective.model, objective.guide, x
        ),
        lambda: objective.loss_and_backward(x),
    ):
        vae.zero_grad(set_to_none=True)
        pyro.set_rng_seed(1)
        loss = torch.as_tensor(loss_and_gradients())
        results.append((loss, [p.grad.clone() for p in vae.parameters()]))
    (expected_loss, expected), (loss, gradients) = results
    torch.testing.assert_close(loss, expected_loss)  # the same draws: equal up to rounding
    for gradient, expected_gradient in zip(gradients, expected):
        torch.testing.assert_close(gradient, expected_gradient)


@pytest.mark.slow
@pytest.mark.parametrize("case", DETERMINISTIC)
def test_two_processes_take_the_steps_of_one_process_with_the_same_global_batch(two_processes, tmp_path, case):
    """Without random draws, the mean of the processes' gradients is the one-process gradient exactly; Adam's
    moment estimates in the checkpoint are the gradients' history, so they compare gradients with their scale
    (to which Adam's steps are blind). Module parameters and Pyro-store parameters are both checked."""
    folder, reports = two_processes
    one = _fit_deterministic(case, tmp_path / "one.pt")
    # Equal up to float32 rounding: the processes add their shards' terms in another order.
    tolerance = dict(rtol=1e-4, atol=1e-6)
    for report in reports:  # every process logs the same reduced figures
        assert [s for s, _ in report[case]["train"]] == [s for s, _ in one.train_elbo] == [*range(2, 27, 2), 27]
        torch.testing.assert_close(report[case]["train"], one.train_elbo, **tolerance)
        torch.testing.assert_close(report[case]["validation"], one.validation_elbo, **tolerance)
    expected, actual = load_checkpoint(tmp_path / "one.pt"), load_checkpoint(folder / f"{case}.pt")
    assert len(actual["rng"]) == 2 and len(expected["rng"]) == 1
    assert set(actual["parameters"]["store"]) == ({"shift", "w_loc"} if "global" in case else {"shift"})
    torch.testing.assert_close(actual["parameters"], expected["parameters"], **tolerance)
    torch.testing.assert_close(actual["optimizer"]["state"], expected["optimizer"]["state"], **tolerance)


@pytest.mark.slow
def test_two_processes_refuse_what_they_cannot_split(two_processes):
    _, reports = two_processes
    for report in reports:
        iwae_global, odd_batch = report["errors"]
        assert "inference.elbo = 'iwae' with minibatches or several processes" in iwae_global
        assert odd_batch == "inference.batch_size = 11 does not split evenly across 2 processes"


@pytest.mark.slow
def test_a_non_finite_loss_in_one_process_stops_every_process(two_processes):
    _, reports = two_processes
    for report in reports:
        assert report["nan"].startswith("the loss is nan at step 3 (epoch 1)")


@pytest.mark.slow
def test_an_interrupted_two_process_run_resumed_ends_in_the_same_parameters(two_processes):
    _, reports = two_processes
    for report in reports:
        assert report["interrupted_at"] == 14  # the crash came in step 20; the checkpoint of step 14 survived
        for name, expected in report["uninterrupted"].items():
            assert torch.equal(report["resumed"][name], expected), name
    for name, expected in reports[0]["resumed"].items():  # DDP keeps the processes' parameters equal
        assert torch.equal(reports[1]["resumed"][name], expected), name


@pytest.mark.slow
def test_resuming_with_another_number_of_processes_reseeds_with_a_warning(two_processes, tmp_path):
    folder, _ = two_processes
    checkpoint = shutil.copy(folder / "vae-step-14.pt", tmp_path / "vae.pt")
    with pytest.warns(UserWarning, match="random state of 2 processes and this run has 1: each process is reseeded"):
        _vae_fit(checkpoint, CrashAt(), resume=True)
    assert load_checkpoint(checkpoint)["position"]["step"] == 27


@pytest.mark.slow
def test_only_process_0_writes_the_run_folder_and_every_process_returns_its_metrics(two_processes):
    folder, (first, second) = two_processes
    assert {path.name for path in (folder / "run").iterdir()} == RUN_FILES
    assert second["writes"] == []
    assert first["metrics"] == second["metrics"]
    steps_per_epoch = (1797 - 180 - 359) // 32  # digits less the validation and test splits, in global batches
    assert first["metrics"]["training"]["steps"] == 2 * steps_per_epoch


@pytest.mark.slow
def test_torchrun_trains_like_one_process(tmp_path):
    """``torchrun -m ppgen run`` with two processes against ``run`` in this process, same global batch.

    The processes draw other random numbers than one process does, so the runs are two independent draws of
    the same stochastic process (the same gradient estimator, the same batches in the same order). The
    per-step differences d_t of the logged train ELBO then have mean zero; |mean d| < Z * MCSE, with the MCSE
    from d's effective sample size (the runs' parameters drift apart, so d is autocorrelated).
    """
    overrides = [arg for override in TINY_RUN for arg in ("--set", override)]
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "ppgen", "run", str(VAE_SPEC), *overrides, "--out", str(tmp_path / "two"), "--quiet"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert {path.name for path in (tmp_path / "two").iterdir()} == RUN_FILES
    run(load_spec(VAE_SPEC, overrides=TINY_RUN), tmp_path / "one", progress=False)

    two, one = (load_checkpoint(tmp_path / name / "checkpoint.pt")["train_elbo"] for name in ("two", "one"))
    assert [step for step, _ in two] == [step for step, _ in one] == list(range(1, len(one) + 1))
    difference = torch.tensor([a - b for (_, a), (_, b) in zip(two, one)], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arviz's import-time notice
        import arviz

    mcse = difference.std().item() / math.sqrt(arviz.ess(difference.numpy()))
    assert abs(difference.mean().item()) < Z * mcse
