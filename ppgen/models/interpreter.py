"""The interpreter of declarative Bayesian models: one walk over a spec's variables with a backend's effects.

``run_model`` serves Pyro and NumPyro alike; only the backend differs (``ppgen.models.backends``). Site names
are variable names and plate names are plate names; each plate has one dim throughout the model
(``BayesSpec.plate_dims``). Computed values that depend on stochastic variables are ``deterministic`` sites;
values of the data alone are computed but not recorded.

An observed variable whose data is missing (absent, or None, in the data mapping) is sampled instead: that is
how prior and posterior predictive draws are made.

A subsampled plate draws fresh indices on each run, the library scales its log densities by N / B, and the
variables in the plate see the minibatch's rows of their data (``ppgen.spec.subsample`` says which values are
indexed and which plates qualify).
"""

from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from typing import Any

import numpy as np

from ppgen.errors import SpecError
from ppgen.models.backends import ArrayBackend
from ppgen.spec.bayes import BayesSpec, Variable
from ppgen.spec.expr import UnboundName, build_distribution, evaluate
from ppgen.spec.subsample import SubsamplePlan

__all__ = ["run_model"]

# What a model's own expressions may raise on bad shapes or values; during the construction check these
# become a SpecError naming the variable. In inference they pass through untouched (Pyro's HMC, for one,
# turns a singular-matrix RuntimeError into a divergence).
_EXPRESSION_ERRORS = (
    ValueError,
    TypeError,
    RuntimeError,
    IndexError,
    ZeroDivisionError,
    OverflowError,
    MemoryError,
    AttributeError,
)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def _as_int(value: Any, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        raise SpecError(f"{where}: expected an integer size, got {value!r}") from None
    if number != value or number < 0:
        raise SpecError(f"{where}: expected a non-negative integer size, got {value!r}")
    return number


def _environment(data: Mapping[str, Any], backend: ArrayBackend) -> dict[str, Any]:
    """The data as the backend's arrays; integer scalars as Python ints (for sizes, slices and eye(n))."""
    env = {}
    for key, value in data.items():
        if value is None:
            continue
        array = backend.asarray(value)
        env[key] = int(array) if array.ndim == 0 and backend.is_integer(array) else array
    return env


def _plate_shape(spec: BayesSpec, variable: Variable, sizes: dict[str, int]) -> tuple[int, ...]:
    """The batch shape a variable's plates give it: each plate's size at its dim, 1 at the dims between."""
    if not variable.plates:
        return ()
    shape = [1] * -min(spec.plate_dims[p] for p in variable.plates)
    for plate in variable.plates:
        shape[spec.plate_dims[plate]] = sizes[plate]
    return tuple(shape)


def _describe_plates(spec: BayesSpec, variable: Variable, sizes: dict[str, int]) -> str:
    return ", ".join(f"{p} (size {sizes[p]}, dim {spec.plate_dims[p]})" for p in variable.plates)


class _Minibatch:
    """The rows of one subsampled plate's data that a variable in it sees: ``take`` indexes an array along its
    first axis when that axis has the plate's full size N (already-minibatched values and scalars pass through)."""

    def __init__(self, plan: SubsamplePlan, size: int, indices):
        self.plan, self.size, self.indices = plan, size, indices

    def take(self, value: Any) -> Any:
        shape = getattr(value, "shape", ())
        return value[self.indices] if len(shape) >= 1 and shape[0] == self.size else value

    def environment(self, variable: Variable, env: dict[str, Any]) -> dict[str, Any]:
        names = [name for name in self.plan.reads[variable.name] if name in env]
        return {**env, **{name: self.take(env[name]) for name in names}} if names else env


def run_model(
    spec: BayesSpec,
    data: Mapping[str, Any],
    backend: ArrayBackend,
    *,
    explain_errors: bool = False,
    subsample: Iterable[SubsamplePlan] = (),
) -> dict[str, Any]:
    """Run the model's variables in dependency order with ``backend``'s effects; returns every value.

    Args:
        spec: the checked spec.
        data: named arrays; a key that is absent or None is missing (its observed variables are sampled).
        backend: ``pyro_backend()`` (inside Pyro) or ``numpyro_backend()`` (inside NumPyro).
        explain_errors: turn exceptions raised by a variable's expressions into a SpecError naming it
            (for the construction check; inference wants the original exceptions).
        subsample: plans (``ppgen.spec.subsample.subsample_plan``) of the plates to minibatch in this run. The
            values of a subsampled plate's variables have B, not N, entries along its dim.
    """
    env = _environment(data, backend)
    given = {key for key, value in data.items() if value is not None}
    sizes = {}
    for plate, size in spec.plates.items():
        try:
            sizes[plate] = _as_int(evaluate(size, env, backend), f"plates.{plate}")
        except UnboundName as error:
            raise SpecError(f"plates.{plate}: needs data {error.name!r}, which was not given") from None
    plans = {plan.plate: plan for plan in subsample}
    # B >= N means the whole plate: Pyro and NumPyro then take every index, unscaled.
    batch_sizes = {plate: min(plans[plate].batch_size, n) if plate in plans else n for plate, n in sizes.items()}
    plates = {}  # each plate is made once per run: Pyro records a site for it (and draws its minibatch then)
    missing: dict[str, str] = {}  # value variables that could not be computed -> the data they lacked
    for variable in spec.variables.values():
        try:
            with ExitStack() as stack:
                minibatch = None
                for plate in variable.plates:
                    if plate not in plates:
                        subsample_size = batch_sizes[plate] if plate in plans else None
                        plates[plate] = backend.effects.plate(
                            plate, sizes[plate], dim=spec.plate_dims[plate], subsample_size=subsample_size
                        )
                    indices = stack.enter_context(plates[plate])
                    if plate in plans:
                        minibatch = _Minibatch(plans[plate], sizes[plate], indices)
                local = env if minibatch is None else minibatch.environment(variable, env)
                value = _run_variable(spec, variable, local, data, given, batch_sizes, backend, minibatch)
        except UnboundName as error:
            lacking = missing.get(error.name, error.name)
            if variable.value is not None:
                missing[variable.name] = lacking
                continue
            raise SpecError(f"variables.{variable.name}.dist: needs data {lacking!r}, which was not given") from None
        except _EXPRESSION_ERRORS as error:
            if not explain_errors:
                raise
            key = "value" if variable.value is not None else "dist"
            raise SpecError(f"variables.{variable.name}.{key}: {_first_line(error)}") from None
        env[variable.name] = value
    return env


def _subsampled_hint(minibatch: _Minibatch | None) -> str:
    if minibatch is None:
        return ""
    return (
        f"; plate {minibatch.plan.plate!r} is subsampled, and its variables see only data and values of the data"
        " indexed by the minibatch: compute per-element values of the parameters inside the plate"
    )


def _run_variable(
    spec: BayesSpec,
    variable: Variable,
    env: dict[str, Any],
    data: Mapping[str, Any],
    given: set[str],
    sizes: dict[str, int],
    backend: ArrayBackend,
    minibatch: _Minibatch | None,
) -> Any:
    plate_shape = _plate_shape(spec, variable, sizes)
    if variable.value is not None:
        value = evaluate(variable.value, env, backend)
        value = backend.asarray(value) if isinstance(value, int | float | list) else value
        if tuple(value.shape[: len(plate_shape)]) != plate_shape:
            raise SpecError(
                f"variables.{variable.name}.value: shape {tuple(value.shape)} does not start with {plate_shape},"
                f" the shape of its plates {_describe_plates(spec, variable, sizes)}{_subsampled_hint(minibatch)}"
            )
        if variable.name in spec.deterministic_names:
            backend.effects.deterministic(variable.name, value, event_dim=value.ndim - len(plate_shape))
        return value
    distribution = build_distribution(variable.dist, env, backend)
    if variable.shape:
        shape = tuple(_as_int(evaluate(e, env, backend), e.where) for e in variable.shape)
        try:
            batch_shape = np.broadcast_shapes(tuple(distribution.batch_shape), shape)
        except ValueError:
            raise SpecError(
                f"variables.{variable.name}.shape: {list(shape)} does not fit the distribution's batch shape"
                f" {tuple(distribution.batch_shape)}"
            ) from None
        distribution = distribution.expand(batch_shape).to_event(len(shape))
    batch_shape = tuple(distribution.batch_shape)
    try:
        full = np.broadcast_shapes(batch_shape, plate_shape)
    except ValueError:
        full = None
    if full is None or any(full[spec.plate_dims[p]] != sizes[p] for p in variable.plates):
        raise SpecError(
            f"variables.{variable.name}.dist: batch shape {batch_shape} does not fit its plates"
            f" {_describe_plates(spec, variable, sizes)}{_subsampled_hint(minibatch)}"
        )
    obs = None
    if variable.observed is not None:
        if variable.observed in spec.data:
            obs = data.get(variable.observed) if variable.observed in given else None
            obs = None if obs is None else backend.asarray(obs)
        else:
            obs = env.get(variable.observed)
        if obs is not None and minibatch is not None and variable.name in minibatch.plan.observed:
            obs = minibatch.take(obs)
    if obs is not None:
        expected = tuple(full) + tuple(distribution.event_shape)
        if tuple(obs.shape) != expected:
            raise SpecError(
                f"variables.{variable.name}.observed: {variable.observed!r} has shape {tuple(obs.shape)}, but the"
                f" distribution (with its plates and shape) gives {expected}{_subsampled_hint(minibatch)}"
            )
    return backend.effects.sample(variable.name, distribution, obs=obs)
