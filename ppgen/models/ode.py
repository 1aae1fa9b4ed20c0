"""Solving an ODE variable (``ppgen.spec.ode.OdeSpec``): diffrax on NumPyro, torchdiffeq on Pyro.

Both integrate d y / dt = f(t, y) from ``t0`` with an adaptive solver and report y at ``times``, stepping onto
each of them (a stiff solver's large steps would otherwise leave the error of its low-order interpolant); gradients
flow through the solver's steps (diffrax: ``DirectAdjoint``, autodiff through the steps; torchdiffeq:
autograd through ``odeint``), as NUTS needs. torchdiffeq has no stiff solver: on Pyro, a solver it lacks runs forward
only, in scipy (BDF for a stiff one), which serves the construction check; inference with it needs NumPyro.

A failed solve (``max_steps`` reached, a step size underflow, a non-finite solution) is reported two ways:
- with ``explain=True`` and concrete values (the model's construction check), a one-line SpecError naming the
  variable and the fix;
- otherwise (inference: jax tracing, torch taking gradients, a sampler's initial point), a NaN solution: the log
  density is then NaN, which NUTS counts as a divergent transition (and rejects), its initialization as a point to
  retry (as Stan's), and SVI as a non-finite loss. Raising there would end the run at the first wild warmup step.
"""

import os
from collections.abc import Mapping
from typing import Any

from ppgen.errors import SpecError
from ppgen.spec.expr import evaluate
from ppgen.spec.ode import SOLVERS, OdeSpec

__all__ = ["solve_ode"]


def solve_ode(ode: OdeSpec, env: Mapping[str, Any], backend, *, explain: bool = False) -> Any:
    """The ODE's solution at its times.

    Args:
        ode: the parsed ODE variable.
        env: names -> the backend's arrays (data, values of other variables).
        backend: ``ppgen.models.backends.ArrayBackend`` (``name`` "pyro" or "numpyro").
        explain: raise a SpecError for a failed solve with concrete values, rather than return NaN.

    Returns:
        [N, S, ...]: the states (in the order of ``ode.states``) at each of the N ``times``.

    Raises:
        SpecError: a solver torchdiffeq lacks on Pyro, under autograd; with concrete values, times not increasing
            after t0; with ``explain``, a failed solve.
    """
    where = f"variables.{ode.name}"
    y0 = backend.floating(evaluate(ode.initial, env, backend))
    if y0.ndim == 0:
        y0 = y0 * backend.xp.ones(len(ode.states), dtype=y0.dtype)  # one value for every state
    if y0.shape[0] != len(ode.states):
        raise SpecError(
            f"{where}.initial: shape {tuple(y0.shape)}, but the ODE has {len(ode.states)} states"
            f" ({', '.join(ode.states)}): give them along the first dim"
        )
    t0 = backend.floating(evaluate(ode.t0, env, backend))
    times = backend.floating(evaluate(ode.times, env, backend))
    if t0.ndim != 0 or times.ndim != 1 or times.shape[0] == 0:
        raise SpecError(
            f"{where}: t0 must be a scalar and times a non-empty vector, not shapes {tuple(t0.shape)}"
            f" and {tuple(times.shape)}"
        )
    field = _vector_field(ode, env, backend)
    solve = _solve_numpyro if backend.name == "numpyro" else _solve_pyro
    return solve(ode, field, y0, t0, times, explain)


def _vector_field(ode: OdeSpec, env: Mapping[str, Any], backend):
    """f(t, y): the derivatives evaluated with each state y[i] and the time bound to their names, [S, ...]."""
    xp = backend.xp

    def field(t, y):
        local = {**env, ode.time_name: t, **{state: y[i] for i, state in enumerate(ode.states)}}
        rates = [backend.floating(evaluate(derivative, local, backend)) for derivative in ode.derivatives]
        return xp.stack([xp.broadcast_to(rate, y.shape[1:]) for rate in rates])

    return field


def _failure(ode: OdeSpec, reason: str) -> SpecError:
    fix = "raise 'max_steps', loosen 'rtol'/'atol'"
    fix += (
        ", or check that the parameters keep the solution finite"
        if ode.stiff
        else (", or, if the problem is stiff, use an implicit solver ('kvaerno5', NumPyro backend)")
    )
    return SpecError(f"variables.{ode.name}: the ODE solver {ode.solver!r} failed ({reason}); {fix}")


def _check_times(ode: OdeSpec, t0, times) -> None:
    if not (float(times[0]) > float(t0) and bool((times[1:] > times[:-1]).all())):
        raise SpecError(f"variables.{ode.name}.times: the times must be increasing and after t0 = {float(t0)}")


def _solve_numpyro(ode: OdeSpec, field, y0, t0, times, explain: bool):
    # Equinox's runtime checks (an implicit step's linear solve meeting a non-finite Jacobian at wild warmup
    # parameters) give NaN instead of raising when set before its first import: a NaN solution, a rejected step.
    os.environ.setdefault("EQX_ON_ERROR", "nan")
    import diffrax
    import jax
    import jax.numpy as jnp

    if not any(isinstance(v, jax.core.Tracer) for v in (t0, times)):
        _check_times(ode, t0, times)

    def guarded(t, state, args):
        """The field where it is finite, else 0 (an implicit solver's Newton step raises on a non-finite Jacobian)
        with a flag state that grows wherever it was not: a flagged solution is a failed one."""
        y, _ = state
        rates = field(t, y)
        finite = jnp.isfinite(rates).all()
        return jnp.where(finite, rates, 0.0), jnp.where(finite, 0.0, 1.0)

    solution = diffrax.diffeqsolve(
        diffrax.ODETerm(guarded),
        getattr(diffrax, SOLVERS[ode.solver].diffrax)(),
        t0,
        times[-1],
        None,  # the first step size: chosen by the controller
        (y0, jnp.zeros((), dtype=y0.dtype)),
        saveat=diffrax.SaveAt(ts=times),
        stepsize_controller=diffrax.ClipStepSizeController(
            diffrax.PIDController(rtol=ode.rtol, atol=ode.atol), step_ts=times
        ),
        max_steps=ode.max_steps,
        # Differentiating the steps directly: diffrax's default, RecursiveCheckpointAdjoint, fails under pmap
        # (chains in parallel) in NumPyro's search for an initial point (equinox: "Closure-converted function
        # called with different dynamic arguments"); DirectAdjoint does not, and NUTS ran as fast with it.
        adjoint=diffrax.DirectAdjoint(),
        throw=False,  # under jit a failure cannot raise: a NaN solution instead (see the module's docstring)
    )
    ys, flags = solution.ys
    finite = jnp.isfinite(ys).all() & (flags[-1] == 0)
    ok = (solution.result == diffrax.RESULTS.successful) & finite
    if explain and not isinstance(ok, jax.core.Tracer):
        if not bool(ok):
            if solution.result == diffrax.RESULTS.max_steps_reached:
                raise _failure(ode, f"max_steps = {ode.max_steps} reached")
            successful = solution.result == diffrax.RESULTS.successful
            raise _failure(ode, "the solution is not finite" if successful else str(diffrax.RESULTS[solution.result]))
    return jnp.where(ok, ys, jnp.nan)


def _solve_pyro(ode: OdeSpec, field, y0, t0, times, explain: bool):
    import torch
    from torchdiffeq import odeint

    _check_times(ode, t0, times)
    probe = field(t0, y0).sum() + y0.sum()  # depends on every tensor the solution does
    differentiating = torch.is_grad_enabled() and probe.requires_grad
    method = SOLVERS[ode.solver].torchdiffeq
    if method is None and differentiating:
        kind = "stiff (implicit)" if ode.stiff else "not in torchdiffeq"
        raise SpecError(
            f"variables.{ode.name}.solver: {ode.solver!r} is {kind}, and inference with it needs the NumPyro"
            f" backend (inference.backend = 'numpyro'); on Pyro use one of"
            f" {', '.join(name for name, s in SOLVERS.items() if s.torchdiffeq)}"
        )
    if method is None:
        ys, reason = _solve_scipy(ode, field, y0, t0, times)
    else:
        grid = torch.cat([t0.reshape(1), times])  # torchdiffeq reports the solution at the grid's first time too
        try:
            options = {"max_num_steps": ode.max_steps, "step_t": times}
            ys = odeint(field, y0, grid, rtol=ode.rtol, atol=ode.atol, method=method, options=options)[1:]
            reason = None
        except AssertionError as error:  # torchdiffeq's way of failing: max_num_steps exceeded, underflow in dt
            message = str(error).split("\n")[0]
            ys, reason = None, f"max_steps = {ode.max_steps} reached" if "max_num_steps" in message else message
    if reason is None and not bool(torch.isfinite(ys).all()):
        reason = "the solution is not finite"
    if reason is None:
        return ys
    if explain:
        raise _failure(ode, reason)
    nan = torch.full((len(times), *y0.shape), float("nan"), dtype=y0.dtype, device=y0.device)
    return nan * probe  # NaN, still connected to the parameters, so that autograd runs


def _solve_scipy(ode: OdeSpec, field, y0, t0, times):
    """A forward solve (no gradients) with scipy, for solvers torchdiffeq lacks: BDF for stiff ones, else RK45.

    Returns the solution [N, S, ...] (or None) and the reason of a failure (or None)."""
    import numpy as np
    import torch
    from scipy.integrate import solve_ivp

    def rates(t, y):
        state = torch.as_tensor(y, dtype=y0.dtype, device=y0.device).reshape(y0.shape)
        return field(torch.as_tensor(t, dtype=y0.dtype, device=y0.device), state).cpu().numpy().reshape(-1)

    grid = times.cpu().numpy()
    solution = solve_ivp(
        rates,
        (float(t0), float(grid[-1])),
        y0.cpu().numpy().reshape(-1),
        method="BDF" if ode.stiff else "RK45",
        t_eval=grid,
        rtol=ode.rtol,
        atol=ode.atol,
    )
    if not solution.success:
        return None, solution.message.rstrip(".")
    ys = np.moveaxis(solution.y, -1, 0).reshape(len(grid), *y0.shape)
    return torch.as_tensor(ys, dtype=y0.dtype, device=y0.device), None
