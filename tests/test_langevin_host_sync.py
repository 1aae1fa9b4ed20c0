"""A Langevin MCMC step reads nothing back from the chain's device (checked on the CPU with ``host_reads``): a chain
twice as long makes the same reads. The summaries are read every ``log_every`` steps, which is also when a
non-finite log density is reported, naming its first step."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from host_reads import round_trips
from pyro.infer import MCMC

from ppgen.errors import SpecError, TrainingError
from ppgen.infer.langevin_kernels import MALA, SGLD, ULA
from ppgen.infer.langevin_stats import LangevinInfoRecorder
from ppgen.samplers.step_size import PolynomialDecay


@pytest.fixture(autouse=True)
def one_thread():
    """Short chains on tiny tensors: intra-op threads only contend on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gaussian(loc):
    """x ~ N(loc, I_3); the scale is a tensor, since Normal(loc, 1.0) makes a tensor from the number at every call."""
    pyro.sample("x", dist.Normal(loc, torch.ones(3)).to_event(1))


DESIGN = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
RESPONSE = DESIGN @ torch.tensor([1.0, -1.0, 0.5]) + torch.randn(40, generator=torch.Generator().manual_seed(1))


def regression(x, y):
    """A linear regression whose data plate draws minibatches of 10 of 40 at every step (SGLD's model)."""
    w = pyro.sample("w", dist.Normal(torch.zeros(3), torch.ones(3)).to_event(1))
    with pyro.plate("data", len(x), subsample_size=10) as idx:
        pyro.sample("y", dist.Normal(x[idx] @ w, torch.ones(())), obs=y[idx])


# log_every beyond the longest chain: the summaries are read only at the end of warm-up and in diagnostics().
KERNELS = {
    "ULA": (lambda: ULA(gaussian, step_size=0.1, log_every=1000), (torch.zeros(3),)),
    "MALA": (lambda: MALA(gaussian, log_every=1000), (torch.zeros(3),)),  # adapting its step size in warm-up
    "SGLD": (lambda: SGLD(regression, step_size=PolynomialDecay(1e-3), log_every=1000), (DESIGN, RESPONSE)),
}


def run_chain(kernel, num_steps: int, args: tuple) -> None:
    """num_steps warm-up steps and num_steps draws, their statistics and MCMC's diagnostics."""
    pyro.set_rng_seed(0)
    recorder = LangevinInfoRecorder()
    mcmc = MCMC(kernel, num_steps, num_steps, hook_fn=recorder, disable_progbar=True)
    mcmc.run(*args)
    recorder.sample_stats()
    mcmc.get_samples()


@pytest.mark.parametrize("name", KERNELS)
def test_a_langevin_chain_reads_the_same_whatever_its_length(name):
    make_kernel, args = KERNELS[name]
    short, long = (round_trips(run_chain, make_kernel(), num_steps, args) for num_steps in (50, 100))
    assert short == long


def test_the_summaries_are_read_once_per_logging_interval():
    """40 more steps at log_every = 10: four more refreshes, each reading the summaries in at most two reads."""
    kernel_args = (torch.zeros(3),)
    short, long = (round_trips(run_chain, MALA(gaussian, log_every=10), n, kernel_args) for n in (20, 40))
    extra = long - short
    assert long >= short and 0 < extra.total() <= 2 * 4, extra


def test_logging_is_refreshed_every_interval_and_at_the_end_of_warm_up():
    kernel = MALA(gaussian, log_every=20)
    logged = []
    pyro.set_rng_seed(0)
    MCMC(kernel, 25, 30, disable_progbar=True, hook_fn=lambda k, *_: logged.append(dict(k.logging()))).run(
        torch.zeros(3)
    )
    assert all(entry == {"step size": "1.00e+00"} for entry in logged[:19])  # the initial step, until step 20
    assert "acc. prob" in logged[19]
    # Step 30 ends warm-up: the adapted step size is shown from then on, until the refresh at step 40.
    assert logged[29]["step size"] == f"{kernel.step_size:.2e}" != "1.00e+00"
    assert all(entry == logged[29] for entry in logged[30:39])


class CountingPotential:
    """-log N(x; 0, I): a step size of 10 multiplies the distance to the mode by -9 each step, so the log density
    overflows after a few dozen steps. Counts its calls; with ``strict`` it raises on a non-finite input, as a model
    that validates its arguments does."""

    def __init__(self, strict: bool = False):
        self.strict = strict
        self.calls = 0

    def __call__(self, params: dict) -> torch.Tensor:
        self.calls += 1
        if self.strict and not torch.isfinite(params["x"]).all():
            raise ValueError("x is not finite")
        return 0.5 * (params["x"] ** 2).sum()


def diverge(kernel_class, log_every: int, num_samples: int = 200, strict: bool = False) -> tuple[str, int]:
    """(the TrainingError's message, the number of steps run) of a chain with a step size far too large."""
    potential = CountingPotential(strict)
    kernel = kernel_class(potential_fn=potential, step_size=10.0, log_every=log_every)
    pyro.set_rng_seed(0)
    with pytest.raises(TrainingError, match="non-finite") as error:
        MCMC(kernel, num_samples, 0, initial_params={"x": torch.ones(1, 3)}, disable_progbar=True).run()
    return str(error.value), potential.calls - 1  # one call sets the chain up


@pytest.mark.parametrize("kernel_class", [ULA, SGLD])
def test_a_nonfinite_log_density_is_reported_with_its_step_within_one_interval(kernel_class):
    # Checked after every step, the chain stops at the first non-finite step, as it did when each step read back.
    message, first = diverge(kernel_class, log_every=1)
    assert f"at step {first};" in message and 10 < first < 100
    # Every 16 steps: the same step is named, at the end of its interval.
    message, steps = diverge(kernel_class, log_every=16)
    assert f"at step {first};" in message and steps == 16 * math.ceil(first / 16)
    # Never within the chain's 200 steps: diagnostics() reports it at the end.
    message, steps = diverge(kernel_class, log_every=1000)
    assert f"at step {first};" in message and steps == 200


def test_a_model_failing_on_the_nan_that_follows_is_reported_as_the_nonfinite_step():
    message, first = diverge(ULA, log_every=1, strict=True)
    potential = CountingPotential(strict=True)
    kernel = ULA(potential_fn=potential, step_size=10.0)  # log_every = 100
    pyro.set_rng_seed(0)
    with pytest.raises(TrainingError) as error:
        MCMC(kernel, 200, 0, initial_params={"x": torch.ones(1, 3)}, disable_progbar=True).run()
    assert str(error.value) == message
    assert isinstance(error.value.__cause__, ValueError)  # the model's own error, chained
    assert first < potential.calls - 1 < 100  # it stopped at the model's error, before the interval's end


@pytest.mark.parametrize("log_every", [0, 2.5, True])
def test_log_every_must_be_a_positive_integer(log_every):
    with pytest.raises(SpecError, match="MALA: log_every must be a positive integer"):
        MALA(gaussian, log_every=log_every)
