"""The step-size rules (``ppgen.samplers.step_size``): pure init/update pairs, each against its formula; dual
averaging against Pyro's ``DualAveraging`` and the step size it is meant to find."""

import math

import pytest
import torch
from pyro.ops.dual_averaging import DualAveraging

from ppgen.errors import SpecError
from ppgen.samplers.step_size import ConstantStepSize, DualAveragingStepSize, PolynomialDecay, ScheduledStepSize

POSITION = torch.zeros(2, dtype=torch.float64)  # the chain's dtype and device


def test_polynomial_decay_and_its_checks():
    schedule = PolynomialDecay(a=0.5, b=10.0, gamma=0.55)
    assert schedule(0) == 0.5 * 10.0**-0.55 and schedule(90) == 0.5 * 100.0**-0.55
    for bad in ({"a": 0.0}, {"a": 1.0, "b": 0.0}, {"a": 1.0, "gamma": 1.5}, {"a": 1.0, "gamma": -0.1}):
        with pytest.raises(SpecError, match="PolynomialDecay"):
            PolynomialDecay(**bad)


def test_dual_averaging_finds_the_step_size_of_the_target_acceptance():
    """With a deterministic acceptance exp(-h) the root of exp(-h) = 0.574 is h* = -log 0.574 = 0.555; dual averaging
    converges to it (its averaged iterate's error shrinks like t^-1/2; 2000 steps leave well under 5%)."""
    adaptation = DualAveragingStepSize(initial_step_size=5.0, target_accept_prob=0.574)
    state = adaptation.init(torch.zeros(1, dtype=torch.float64), num_warmup=2000)
    for _ in range(2000):
        state = adaptation.update(state, torch.exp(-state.step_size))
    assert float(state.step_size) == pytest.approx(-math.log(0.574), rel=0.05)


def test_a_constant_step_size_never_changes():
    rule = ConstantStepSize(0.25)
    state = rule.init(POSITION)
    for _ in range(3):
        state = rule.update(state, torch.tensor(0.1))
    assert state.step == 3 and state.step_size.item() == 0.25 and state.step_size.dtype == torch.float64


def test_a_scheduled_step_size_follows_its_schedule_through_warm_up_and_sampling():
    schedule = PolynomialDecay(a=0.5, b=10.0, gamma=0.55)
    rule = ScheduledStepSize(schedule)
    state = rule.init(POSITION, num_warmup=2)
    sizes = [state.step_size.item()]
    for _ in range(5):
        state = rule.update(state, torch.tensor(float("nan")))
        sizes.append(state.step_size.item())
    assert sizes == [schedule(t) for t in range(6)]


def test_dual_averaging_is_pyros_dual_averaging_then_its_average_then_fixed():
    """During warm-up the step size is exp(x_t) of Pyro's ``DualAveraging`` fed target - accept_prob (NaN as 0); the
    last warm-up step switches to exp(average of x_t); sampling steps leave it; the rule's state is not mutated."""
    rule = DualAveragingStepSize(initial_step_size=0.5, target_accept_prob=0.6)
    reference = DualAveraging(prox_center=math.log(10 * 0.5))
    accept_probs = torch.tensor([0.9, 0.1, float("nan"), 0.7, 0.3, 0.5, 0.2], dtype=torch.float64)
    state = rule.init(POSITION, num_warmup=5)
    assert state.step_size.item() == 0.5
    for step, accept_prob in enumerate(accept_probs, start=1):
        before = state
        state = rule.update(state, accept_prob)
        assert torch.equal(rule.update(before, accept_prob).step_size, state.step_size)  # pure: same in, same out
        if step <= 5:
            reference.step(0.6 - torch.nan_to_num(accept_prob, nan=0.0))
            x_t, x_avg = reference.get_state()
            torch.testing.assert_close(state.step_size, (x_avg if step == 5 else x_t).exp())
    torch.testing.assert_close(state.step_size, reference.get_state()[1].exp())


def test_dual_averaging_without_warm_up_keeps_the_initial_step_size():
    rule = DualAveragingStepSize(initial_step_size=0.5, target_accept_prob=0.6)
    state = rule.update(rule.init(POSITION, num_warmup=0), torch.tensor(0.0))
    assert state.step_size.item() == 0.5
