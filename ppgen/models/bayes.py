"""A declarative Bayesian model (``ppgen.spec.bayes``) compiled to a Pyro and a NumPyro model function.

One walk over the variables (``run_model``) serves both libraries; only the backend differs
(``ppgen.models.backends``). Site names are variable names and plate names are plate names; each plate has
one dim throughout the model (``BayesSpec.plate_dims``). Computed values that depend on stochastic
variables are ``deterministic`` sites; values of the data alone are computed but not recorded.

An observed variable whose data is missing (absent, or None, in the data mapping given to the model) is
sampled instead: that is how prior and posterior predictive draws are made.

A plate can be minibatched (``pyro_model(data, subsample={"obs": 32})``): each run draws fresh indices, the
library scales the plate's log densities by N / B, and the variables in the plate see the minibatch's rows of
their data (``ppgen.spec.subsample`` says which values are indexed and which plates qualify).
"""

import functools
import tomllib
from collections.abc import Iterable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger
from torch.distributions import transform_to

from ppgen.errors import PpgenError, SpecError
from ppgen.models.backends import JaxBackend, TorchBackend
from ppgen.spec.bayes import BayesSpec, Variable, is_bayes_spec, parse_bayes_spec
from ppgen.spec.expr import UnboundName, build_distribution, evaluate
from ppgen.spec.subsample import SubsamplePlan, subsample_plan

__all__ = [
    "BayesModel",
    "load_bayes_model",
    "bayes_model_from_tables",
    "is_bayes_spec",
    "run_model",
    "pyro_init_to_uniform",
]

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


def _environment(data: Mapping[str, Any], backend) -> dict[str, Any]:
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
    backend,
    *,
    explain_errors: bool = False,
    subsample: Iterable[SubsamplePlan] = (),
) -> dict[str, Any]:
    """Run the model's variables in dependency order with ``backend``'s effects; returns every value.

    Args:
        spec: the checked spec.
        data: named arrays; a key that is absent or None is missing (its observed variables are sampled).
        backend: a ``TorchBackend`` (inside Pyro) or ``JaxBackend`` (inside NumPyro).
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
                        plates[plate] = backend.plate(
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


def _run_variable(spec, variable: Variable, env, data, given, sizes, backend, minibatch: _Minibatch | None) -> Any:
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
            backend.deterministic(variable.name, value, event_dim=value.ndim - len(plate_shape))
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
    return backend.sample(variable.name, distribution, obs=obs)


def pyro_init_to_uniform(
    site: dict | None = None,
    radius: float = 2.0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
):
    """Pyro's ``init_to_uniform`` that also initializes improper ``Flat`` sites (which cannot be sampled):
    a uniform draw in (-radius, radius) on the unconstrained scale, mapped onto the site's support, as
    NumPyro's ``init_to_uniform`` does. Pass it as ``init_strategy`` to Pyro's NUTS or HMC; ``device`` is
    where Flat sites start (the model's data device; other sites start where their distribution lives)."""
    if site is None:
        return functools.partial(pyro_init_to_uniform, radius=radius, dtype=dtype, device=device)
    function = site["fn"]
    try:
        value = function.sample().detach()
    except NotImplementedError:
        transform = transform_to(function.support)
        shape = transform.inverse_shape(function.shape())
        return transform(torch.rand(shape, dtype=dtype, device=device) * (2 * radius) - radius)
    transform = transform_to(function.support)
    return transform(torch.rand_like(transform.inv(value)) * (2 * radius) - radius)


class BayesModel:
    """A declarative Bayesian model with a Pyro and a NumPyro model function.

    Attributes:
        name: the model's name.
        spec: the checked spec.
        data: every data array (after loading and merging), int64 or float64.
        latent_names: unobserved stochastic variables, in dependency order.
        deterministic_names: computed values recorded as deterministic sites.
        observed: likelihood terms: observed variable -> the data key (or computed variable) it observes.
        factor_names: observed variables that score a latent variable (prior density terms, not data).
        observed_values: the value each likelihood term observes, as numpy arrays.
        max_plate_nesting: how many batch dims the plates use. Pyro's NUTS must be given it (and
            ``init_strategy=pyro_init_to_uniform``) when the model has an improper ``Flat`` prior, since it
            cannot trace such a model by sampling it.
    """

    def __init__(self, spec: BayesSpec):
        self.spec = spec
        self.name = spec.name
        self.data = spec.data
        self.latent_names = list(spec.latent_names)
        self.deterministic_names = list(spec.deterministic_names)
        self.observed = dict(spec.observed)
        self.factor_names = list(spec.factor_names)
        self.max_plate_nesting = -min(spec.plate_dims.values(), default=0)
        self.observed_values = self._check()
        self._plans: dict[tuple[str, int], SubsamplePlan] = {}

    def _check(self) -> dict[str, np.ndarray]:
        """Run the model once (Pyro, latent values from ``pyro_init_to_uniform``) so that shape errors show
        before inference, naming the variable; returns the observed values."""
        backend = TorchBackend()
        with torch.random.fork_rng(devices=[]), poutine.block(), InitMessenger(pyro_init_to_uniform(radius=1.0)):
            torch.manual_seed(0)
            env = run_model(self.spec, self.torch_data(), backend, explain_errors=True)
        return {name: env[key].detach().cpu().numpy() for name, key in self.observed.items()}

    def __repr__(self) -> str:
        return f"BayesModel({self.name!r}, latent={self.latent_names}, observed={list(self.observed)})"

    # data
    def _data(self, observed: bool) -> dict[str, np.ndarray]:
        dropped = set() if observed else set(self.spec.observed_data_keys)
        return {key: value for key, value in self.data.items() if key not in dropped}

    def torch_data(self, observed: bool = True, device=None) -> dict[str, torch.Tensor]:
        """The data as float64 and int64 tensors; ``observed=False`` drops the data the likelihood observes."""
        backend = TorchBackend(device=device)
        return {key: backend.asarray(value) for key, value in self._data(observed).items()}

    def jax_data(self, observed: bool = True) -> dict[str, Any]:
        """The data as jax arrays (widths as jax's x64 setting allows); ``observed=False`` as for torch_data."""
        backend = JaxBackend()
        return {key: backend.asarray(value) for key, value in self._data(observed).items()}

    # models
    def subsample_plans(self, subsample: Mapping[str, int] | None) -> tuple[SubsamplePlan, ...]:
        """The checked plans for minibatching plates (plate name -> batch size); raises SpecError naming a
        plate that cannot be subsampled (``ppgen.spec.subsample``)."""
        plans = []
        for plate, batch_size in (subsample or {}).items():
            key = (plate, batch_size)
            if key not in self._plans:
                self._plans[key] = subsample_plan(self.spec, plate, batch_size)
            plans.append(self._plans[key])
        return tuple(plans)

    def pyro_model(
        self, data: Mapping[str, torch.Tensor] | None = None, subsample: Mapping[str, int] | None = None
    ) -> None:
        """The Pyro model. ``data`` defaults to ``torch_data()``; floats are computed in the dtype and on the
        device of its first float tensor. ``subsample`` (plate name -> batch size B) minibatches those plates:
        each call draws B fresh indices (the plate's sample site) and Pyro scales their log densities by N / B."""
        data = self.torch_data() if data is None else data
        reference = next((v for v in data.values() if isinstance(v, torch.Tensor) and v.dtype.is_floating_point), None)
        backend = TorchBackend() if reference is None else TorchBackend(reference.dtype, reference.device)
        run_model(self.spec, data, backend, subsample=self.subsample_plans(subsample))

    def numpyro_model(self, data: Mapping[str, Any] | None = None, subsample: Mapping[str, int] | None = None) -> None:
        """The NumPyro model; ``data`` defaults to ``jax_data()``; ``subsample`` as for ``pyro_model``."""
        data = self.jax_data() if data is None else data
        run_model(self.spec, data, JaxBackend(), subsample=self.subsample_plans(subsample))

    # simulation
    def check_proper(self) -> None:
        """SpecError naming the variable unless the prior can be sampled (no Flat priors, no prior terms)."""
        improper = [n for n in self.latent_names if self.spec.variables[n].dist.name.startswith("Flat")]
        if improper or self.factor_names:
            culprit = improper[0] if improper else self.factor_names[0]
            reason = "has an improper flat prior" if improper else "adds a density term to the prior"
            raise SpecError(f"variables.{culprit} {reason}: prior draws of model {self.name!r} cannot be simulated")

    def prior_predictive(self, num_samples: int, seed: int, backend: str = "numpyro") -> dict[str, np.ndarray]:
        """Draws of every latent, deterministic and observed variable from the prior, each [num_samples, ...].

        The data that the likelihood observes is left out, so observed variables are simulated; the rest
        (covariates, sizes) is kept. Computed values that need the left-out data are not in the result.
        """
        self.check_proper()
        sites = [*self.latent_names, *self.deterministic_names, *self.observed]
        if backend == "numpyro":
            import jax
            from numpyro.infer import Predictive

            predictive = Predictive(self.numpyro_model, num_samples=num_samples, return_sites=sites)
            draws = predictive(jax.random.PRNGKey(seed), data=self.jax_data(observed=False))
        elif backend == "pyro":
            data = self.torch_data(observed=False)
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(seed)
                traces = [poutine.trace(self.pyro_model).get_trace(data).nodes for _ in range(num_samples)]
            draws = {
                name: torch.stack([trace[name]["value"] for trace in traces]).cpu()
                for name in sites
                if name in traces[0]
            }
        else:
            raise PpgenError(f"unknown backend {backend!r}; use 'numpyro' or 'pyro'")
        return {name: np.asarray(draws[name]) for name in sites if name in draws}


def bayes_model_from_tables(tables: dict, base_dir: Path, source: str) -> BayesModel:
    """The model that parsed TOML tables describe (``base_dir``: where ``data_file`` is relative to)."""
    return BayesModel(parse_bayes_spec(tables, Path(base_dir), source))


def load_bayes_model(path: Path) -> BayesModel:
    """The model of a TOML spec file."""
    path = Path(path)
    try:
        tables = tomllib.loads(path.read_text())
    except OSError as error:
        raise SpecError(f"{path}: cannot read the spec ({error.strerror})") from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError(f"{path}: invalid TOML ({error})") from None
    if not is_bayes_spec(tables):
        raise SpecError(f"{path}: not a Bayesian model spec (it has no [variables] table)")
    return bayes_model_from_tables(tables, path.parent, str(path))
