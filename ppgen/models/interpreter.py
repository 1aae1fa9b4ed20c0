"""The interpreter of declarative Bayesian models: one walk over a spec's variables with a backend's effects.

``run_model`` serves Pyro and NumPyro alike; only the backend differs (``ppgen.models.backends``). Site names
are variable names and plate names are plate names; each plate has one dim throughout the model
(``BayesSpec.plate_dims``). Computed values that depend on stochastic variables are ``deterministic`` sites;
values of the data alone are computed but not recorded.

An observed variable whose data is missing (absent, or None, in the data mapping) is sampled instead: that is
how prior predictive draws are made. With ``predict=True`` every observed variable is sampled while the data stays
in place: the posterior predictive, one step ahead from the observed history where the likelihood reads the data.

A time plate's variables run one step at a time (``Effects.scan``: NumPyro's ``scan``, or a loop under
``pyro.markov``), carrying the values that the next step reads as ``v[t - 1]``. A latent variable with a finite
discrete distribution is a site marked for parallel enumeration: the samplers marginalize it.

A subsampled plate draws fresh indices on each run, the library scales its log densities by N / B, and the
variables in the plate see the minibatch's rows of their data (``ppgen.spec.subsample`` says which values are
indexed and which plates qualify).
"""

import math
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from typing import Any

import numpy as np

from ppgen.errors import SpecError
from ppgen.models.backends import ArrayBackend
from ppgen.models.value_checks import check_parameters, is_checked
from ppgen.spec.bayes import BayesSpec, Variable
from ppgen.spec.expr import UnboundName, build_distribution, evaluate
from ppgen.spec.subsample import SubsamplePlan
from ppgen.spec.time_plates import previous_name

__all__ = ["run_model", "plate_sizes", "value_sizes", "check_constant_parameters"]

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
        value = value.item() if hasattr(value, "item") else value  # a Python number: compared exactly, however big
        number = int(value)
    except (TypeError, ValueError, OverflowError, RuntimeError):
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


def _plate_sizes(spec: BayesSpec, env: Mapping[str, Any], backend: ArrayBackend) -> dict[str, int]:
    sizes = {}
    for plate, size in spec.plates.items():
        try:
            sizes[plate] = _as_int(evaluate(size, env, backend), f"plates.{plate}")
        except UnboundName as error:
            raise SpecError(f"plates.{plate}: needs data {error.name!r}, which was not given") from None
        except _EXPRESSION_ERRORS as error:
            raise SpecError(f"plates.{plate}: {_first_line(error)}") from None
        if sizes[plate] == 0:
            raise SpecError(f"plates.{plate}: the size is 0; a plate needs at least one element")
    return sizes


def plate_sizes(spec: BayesSpec, data: Mapping[str, Any], backend: ArrayBackend) -> dict[str, int]:
    """Each plate's size, given the data (which must hold what the sizes read)."""
    return _plate_sizes(spec, _environment(data, backend), backend)


def value_sizes(spec: BayesSpec, data: Mapping[str, Any], backend: ArrayBackend) -> dict[str, int]:
    """How many numbers each variable's value holds at least, known before the model runs: the product of its
    plates' sizes (a time plate's included) and of its ``shape`` (event shapes that a distribution's parameters
    give are not counted). Only the data that sizes read is converted to ``backend``'s arrays."""
    keys = {n for size in spec.plates.values() for n in size.names}
    keys |= {n for variable in spec.variables.values() for entry in variable.shape for n in entry.names}
    env = _environment({key: data[key] for key in keys if key in data}, backend)
    sizes = _plate_sizes(spec, env, backend)
    counts = {}
    for variable in spec.variables.values():
        count = math.prod(sizes[plate] for plate in variable.plates)
        for entry in variable.shape:
            try:
                count *= _as_int(evaluate(entry, env, backend), entry.where)
            except _EXPRESSION_ERRORS as error:
                raise SpecError(f"{entry.where}: {_first_line(error)}") from None
        counts[variable.name] = count
    return counts


def check_constant_parameters(spec: BayesSpec, data: Mapping[str, Any], backend: ArrayBackend) -> None:
    """SpecError naming the variable and parameter for a distribution parameter that is a constant or computed from
    the data alone and lies outside its domain (``ppgen.models.value_checks``), before the model runs."""
    env = None
    for variable in spec.variables.values():
        dist = variable.dist
        if dist is None or any(name not in spec.data for name in dist.names):
            continue
        env = _environment(data, backend) if env is None else env
        try:
            params = {
                param: np.asarray(evaluate(expression, env, backend))
                for param, expression in dist.params.items()
                if is_checked(dist.name, param)
            }
        except _EXPRESSION_ERRORS as error:
            raise SpecError(f"variables.{variable.name}.dist: {_first_line(error)}") from None
        check_parameters(variable.name, dist.name, params)


def _ordinary_plates(spec: BayesSpec, variable: Variable) -> list[str]:
    return [plate for plate in variable.plates if plate in spec.plate_dims]


def _plate_shape(spec: BayesSpec, variable: Variable, sizes: dict[str, int]) -> tuple[int, ...]:
    """The batch shape a variable's plates give it (at one step of its time plate): each plate's size at its dim,
    1 at the dims between."""
    plates = _ordinary_plates(spec, variable)
    if not plates:
        return ()
    shape = [1] * -min(spec.plate_dims[p] for p in plates)
    for plate in plates:
        shape[spec.plate_dims[plate]] = sizes[plate]
    return tuple(shape)


def _describe_plates(spec: BayesSpec, variable: Variable, sizes: dict[str, int]) -> str:
    return ", ".join(f"{p} (size {sizes[p]}, dim {spec.plate_dims[p]})" for p in _ordinary_plates(spec, variable))


def _cast_like(value: Any, like: Any) -> Any:
    """``value`` in the dtype of ``like`` (a scan's carry keeps its dtype from step to step)."""
    if value.dtype == like.dtype:
        return value
    return value.astype(like.dtype) if hasattr(value, "astype") else value.to(like.dtype)


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
    predict: bool = False,
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
        predict: sample every observed variable, with the data still in place (the posterior predictive).
    """
    run = _Run(spec, data, backend, explain_errors, tuple(subsample), predict)
    finished = set()
    for variable in spec.variables.values():
        plate = spec.time_plate_of(variable.name)
        if plate is None:
            run.variable(variable, run.env, run.plates)
        elif plate not in finished:
            run.time_plate(plate)
            finished.add(plate)
    return run.env


class _Run:
    """One run of a model: its environment of values, sizes, plates and what is missing."""

    def __init__(self, spec, data, backend, explain_errors, subsample, predict):
        self.spec, self.data, self.backend = spec, data, backend
        self.explain_errors, self.predict = explain_errors, predict
        self.env = _environment(data, backend)
        self.given = {key for key, value in data.items() if value is not None}
        self.sizes = _plate_sizes(spec, self.env, backend)
        self.plans = {plan.plate: plan for plan in subsample}
        # B >= N means the whole plate: Pyro and NumPyro then take every index, unscaled.
        self.batch_sizes = {
            p: min(self.plans[p].batch_size, n) if p in self.plans else n for p, n in self.sizes.items()
        }
        self.plates = {}  # each plate is made once per run: Pyro records a site for it (and draws its minibatch then)
        self.missing: dict[str, str] = {}  # value variables that could not be computed -> the data they lacked
        self.enumerating = False  # a discrete site was enumerated: values carry its dims, so shapes are not checked
        self.deterministic, self.discrete = set(spec.deterministic_names), set(spec.discrete_names)

    def variable(self, variable: Variable, env: dict, plates: dict, step: Any = None) -> Any:
        """Run one variable in ``env`` (which it extends with its value), entering its ordinary plates; returns the
        value (None for a factor, or a value whose data is missing)."""
        spec, backend = self.spec, self.backend
        imputed = None
        if variable.name in spec.missing and not self.predict and variable.observed in self.given:
            from ppgen.models.missing import sample_missing  # outside the variable's plates: one site [missing]

            imputed = sample_missing(backend, variable.name, variable.dist.name, spec.data[variable.observed])
        try:
            with ExitStack() as stack:
                minibatch = None
                for plate in _ordinary_plates(spec, variable):
                    if plate not in plates:
                        subsample_size = self.batch_sizes[plate] if plate in self.plans else None
                        plates[plate] = backend.effects.plate(
                            plate, self.sizes[plate], dim=spec.plate_dims[plate], subsample_size=subsample_size
                        )
                    indices = stack.enter_context(plates[plate])
                    if plate in self.plans:
                        minibatch = _Minibatch(self.plans[plate], self.sizes[plate], indices)
                local = env if minibatch is None else minibatch.environment(variable, env)
                value = self.value_of(variable, local, minibatch, step, imputed)
        except UnboundName as error:
            lacking = self.missing.get(error.name, error.name)
            if variable.is_computed:
                self.missing[variable.name] = lacking
                return None
            key = "factor" if variable.factor is not None else "dist"
            raise SpecError(f"variables.{variable.name}.{key}: needs data {lacking!r}, which was not given") from None
        except _EXPRESSION_ERRORS as error:
            if not self.explain_errors:
                raise
            key = next(
                k for k in ("value", "factor", "ode", "dist", "lower", "upper") if getattr(variable, k) is not None
            )
            raise SpecError(f"variables.{variable.name}.{key}: {_first_line(error)}") from None
        if variable.factor is None and variable.name not in spec.data:  # an observed y = data y keeps the data
            env[variable.name] = value
        return value

    def time_plate(self, plate: str) -> None:
        """Run a time plate's variables step by step; their stacked values [T, ...] join the environment."""
        spec, backend = self.spec, self.backend
        time_plate = spec.time_plates[plate]
        members = [spec.variables[name] for name in time_plate.members]
        init = {}
        for name in time_plate.carried:
            variable = spec.variables[name]
            try:
                value = evaluate(variable.init, self.env, backend)
            except UnboundName as error:
                raise SpecError(f"variables.{name}.init: needs data {error.name!r}, which was not given") from None
            value = backend.asarray(value) if isinstance(value, int | float) else value
            init[name] = value if variable.is_discrete else backend.floating(value)

        def step(carry: dict, t: Any) -> tuple[dict, dict]:
            env = {**self.env, time_plate.step: t, **{previous_name(n): carry[n] for n in time_plate.carried}}
            plates, outputs = {}, {}
            for variable in members:
                value = self.variable(variable, env, plates, step=t)
                if value is not None and not self._enumerated(variable, value):
                    outputs[variable.name] = value
            following = {}
            for name in time_plate.carried:
                value = env[name] if name in env else self.data[name]
                if self.explain_errors and tuple(value.shape) != tuple(carry[name].shape):
                    raise SpecError(
                        f"variables.{name}.init: shape {tuple(carry[name].shape)}, but {name} has shape"
                        f" {tuple(value.shape)} at each step of plate {plate!r}"
                    )
                following[name] = _cast_like(value, carry[name])
            return following, outputs

        stacked = backend.effects.scan(step, init, self.sizes[plate])
        for name, value in stacked.items():
            if name not in spec.data:
                self.env[name] = value
            if name in self.deterministic:
                backend.effects.deterministic(name, value, event_dim=value.ndim - 1)

    def _enumerated(self, variable: Variable, value: Any) -> bool:
        """Whether a discrete latent site's value is its enumerated support (dims left of the plates')."""
        if variable.name not in self.discrete:
            return False
        return value.ndim > self.spec.max_plate_nesting + len(variable.shape)

    def value_of(
        self, variable: Variable, env: dict, minibatch: "_Minibatch | None", step: Any, imputed: Any = None
    ) -> Any:
        spec, backend, sizes = self.spec, self.backend, self.batch_sizes
        plate_shape = _plate_shape(spec, variable, sizes)
        if variable.factor is not None:
            backend.effects.factor(variable.name, backend.floating(evaluate(variable.factor, env, backend)))
            return None
        if variable.is_computed:
            if variable.ode is not None:
                from ppgen.models.ode import solve_ode

                value = solve_ode(variable.ode, env, backend, explain=self.explain_errors)
            else:
                value = evaluate(variable.value, env, backend)
                value = backend.asarray(value) if isinstance(value, int | float | list) else value
            if not self.enumerating and tuple(value.shape[: len(plate_shape)]) != plate_shape:
                raise SpecError(
                    f"variables.{variable.name}.value: shape {tuple(value.shape)} does not start with {plate_shape},"
                    f" the shape of its plates {_describe_plates(spec, variable, sizes)}{_subsampled_hint(minibatch)}"
                )
            if variable.name in self.deterministic and step is None:
                backend.effects.deterministic(variable.name, value, event_dim=value.ndim - len(plate_shape))
            return value
        distribution = None
        if variable.dist is not None:
            check = self._parameter_check(variable) if self.explain_errors and backend.name == "pyro" else None
            distribution = build_distribution(variable.dist, env, backend, check)
        shape = tuple(_as_int(evaluate(e, env, backend), e.where) for e in variable.shape)
        if distribution is not None and shape:
            try:
                batch_shape = np.broadcast_shapes(tuple(distribution.batch_shape), shape)
            except ValueError:
                raise SpecError(
                    f"variables.{variable.name}.shape: {list(shape)} does not fit the distribution's batch shape"
                    f" {tuple(distribution.batch_shape)}"
                ) from None
            distribution = distribution.expand(batch_shape).to_event(len(shape))
        if variable.is_constrained:
            return self.constrained(variable, distribution, env, plate_shape, shape)
        batch_shape = tuple(distribution.batch_shape)
        try:
            full = np.broadcast_shapes(batch_shape, plate_shape)
        except ValueError:
            full = None
        plates = _ordinary_plates(spec, variable)
        if not self.enumerating and (full is None or any(full[spec.plate_dims[p]] != sizes[p] for p in plates)):
            raise SpecError(
                f"variables.{variable.name}.dist: batch shape {batch_shape} does not fit its plates"
                f" {_describe_plates(spec, variable, sizes)}{_subsampled_hint(minibatch)}"
            )
        obs = self.observation(variable, env, minibatch, step)
        if obs is not None and not self.enumerating:
            expected = tuple(full) + tuple(distribution.event_shape)
            if tuple(obs.shape) != expected:
                raise SpecError(
                    f"variables.{variable.name}.observed: {variable.observed!r} has shape {tuple(obs.shape)}, but the"
                    f" distribution (with its plates and shape) gives {expected}{_subsampled_hint(minibatch)}"
                )
        if obs is not None and imputed is not None:  # its NaNs are a latent site's values (ppgen.models.missing)
            from ppgen.models.missing import complete

            obs = complete(backend, variable.name, obs, self.spec.data[variable.observed], imputed)
        infer = None
        if obs is None and variable.name in self.discrete:
            infer = {"enumerate": "parallel"}  # marginalized by the samplers, recovered by infer_discrete
        value = backend.effects.sample(variable.name, distribution, obs=obs, infer=infer)
        if infer is not None and self._enumerated(variable, value):
            self.enumerating = True
        return value

    def _parameter_check(self, variable: Variable):
        """A check of a distribution's parameters (concrete torch values) in the spec's terms, before torch's own,
        whose message names no variable. Parameters of latent variables take their check-run values."""

        def check(params: dict) -> None:
            values = {k: np.asarray(v.detach().cpu()) if hasattr(v, "detach") else v for k, v in params.items()}
            check_parameters(variable.name, variable.dist.name, values, note=" at the model's check values")

        return check

    def observation(self, variable: Variable, env: dict, minibatch: "_Minibatch | None", step: Any) -> Any:
        """The value an observed variable scores (its step's, in a time plate), or None to sample it."""
        if variable.observed is None or (self.predict and variable.name in self.spec.observed):
            return None
        if variable.observed in self.spec.data:
            obs = self.data.get(variable.observed) if variable.observed in self.given else None
            obs = None if obs is None else self.backend.asarray(obs)
        else:
            obs = env.get(variable.observed)
        if obs is not None and minibatch is not None and variable.name in minibatch.plan.observed:
            obs = minibatch.take(obs)
        per_step = variable.observed not in self.spec.data and self.spec.time_plate_of(variable.observed) is not None
        if obs is not None and step is not None and not per_step:
            obs = obs[step]
        return obs

    def constrained(self, variable: Variable, distribution, env: dict, plate_shape: tuple, shape: tuple) -> Any:
        """A parameter on its support (``constraint``, ``lower``, ``upper``), its density ``distribution`` or flat."""
        from ppgen.models.constraints import constrained_site

        backend = self.backend
        lower = None if variable.lower is None else backend.floating(evaluate(variable.lower, env, backend))
        upper = None if variable.upper is None else backend.floating(evaluate(variable.upper, env, backend))
        if distribution is not None:
            batch_shape = np.broadcast_shapes(tuple(distribution.batch_shape), plate_shape)
            event_shape = tuple(distribution.event_shape)
        else:
            batch_shape, event_shape = plate_shape, shape
        return constrained_site(
            backend,
            variable.name,
            distribution,
            variable.constraint,
            lower,
            upper,
            batch_shape,
            event_shape,
            dependent_bounds=variable.name in self.spec.moving_bounds,
        )


def _subsampled_hint(minibatch: _Minibatch | None) -> str:
    if minibatch is None:
        return ""
    return (
        f"; plate {minibatch.plan.plate!r} is subsampled, and its variables see only data and values of the data"
        " indexed by the minibatch: compute per-element values of the parameters inside the plate"
    )
