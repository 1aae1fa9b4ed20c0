"""A declarative Bayesian model (``ppgen.spec.bayes``) with a Pyro and a NumPyro model function, and its loaders.

Both model functions run the same interpreter (``ppgen.models.interpreter.run_model``) with a different
backend (``ppgen.models.backends``). An observed variable whose data is missing (absent, or None, in the data
mapping given to the model) is sampled instead: that is how prior and posterior predictive draws are made.

A plate can be minibatched (``pyro_model(data, subsample={"obs": 32})``): each run draws fresh indices, the
library scales the plate's log densities by N / B, and the variables in the plate see the minibatch's rows of
their data (``ppgen.spec.subsample`` says which values are indexed and which plates qualify).
"""

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.errors import PpgenError, SpecError
from ppgen.models.backends import numpyro_backend, pyro_backend
from ppgen.models.interpreter import check_constant_parameters, plate_sizes, run_model, value_sizes
from ppgen.models.time_steps import gather_steps, split_steps
from ppgen.models.value_checks import check_observed_support
from ppgen.spec.bayes import BayesSpec, is_bayes_spec, parse_bayes_spec
from ppgen.spec.load import parse_toml
from ppgen.spec.memory import format_bytes, format_count, memory_budget
from ppgen.spec.subsample import SubsamplePlan, subsample_plan

EVALUATION_COPIES = 4  # numbers a run keeps per number of a value: it, its log-density, gradient, sampler state

__all__ = [
    "BayesModel",
    "load_bayes_model",
    "bayes_model_from_tables",
    "is_bayes_spec",
]


class BayesModel:
    """A declarative Bayesian model with a Pyro and a NumPyro model function.

    Construction runs the model once with ``backend``'s library ("pyro" or "numpyro": the one the run will use,
    so that a NumPyro run never imports torch), so that shape errors show before inference, naming the variable.

    Attributes:
        name: the model's name.
        spec: the checked spec.
        data: every data array (after loading and merging), int64 or float64.
        latent_names: unobserved stochastic variables, in dependency order.
        discrete_names: the latent variables with a finite discrete distribution, which the samplers marginalize
            by enumeration (their draws come from ``infer_discrete`` after sampling).
        deterministic_names: computed values recorded as deterministic sites.
        observed: likelihood terms: observed variable -> the data key (or computed variable) it observes.
        factor_names: observed variables that score a latent variable (prior density terms, not data).
        observed_values: the value each likelihood term observes, as numpy arrays.
        value_sizes: how many numbers each variable's value holds at least (``interpreter.value_sizes``).
        fingerprint: a digest of the tables and data the model was compiled from (``model_fingerprint``; None for
            a model built from a parsed spec), under which samplers remember choices across runs.
        max_plate_nesting: how many batch dims the plates use. Pyro's NUTS must be given it (and
            ``init_strategy=pyro_init_to_uniform``) when the model has an improper ``Flat`` prior, since it
            cannot trace such a model by sampling it.
    """

    def __init__(self, spec: BayesSpec, backend: str = "pyro", fingerprint: str | None = None):
        self.spec = spec
        self.fingerprint = fingerprint
        self.name = spec.name
        self.data = spec.data
        self.latent_names = list(spec.latent_names)
        self.discrete_names = list(spec.discrete_names)
        self.deterministic_names = list(spec.deterministic_names)
        self.observed = dict(spec.observed)
        self.factor_names = list(spec.factor_names)
        self.max_plate_nesting = -min(spec.plate_dims.values(), default=0)
        self._plans: dict[tuple[str, int], SubsamplePlan] = {}
        check_observed_support(spec)
        self.observed_values = self._check_numpyro() if backend == "numpyro" else self._check_pyro()

    def _check_values(self, data: Mapping, backend) -> None:
        """Before the model's first run: the numbers each variable holds (``value_sizes``) must fit the memory
        budget, and parameters that are constants or data must lie in their domains."""
        self.value_sizes = value_sizes(self.spec, data, backend)
        needed = 8 * EVALUATION_COPIES * sum(self.value_sizes.values())
        budget = memory_budget()
        if budget is not None and needed > budget:
            largest = max(self.value_sizes, key=self.value_sizes.get)
            plates = self.spec.variables[largest].plates
            where = f" in plates {', '.join(plates)}" if plates else ""
            raise SpecError(
                f"variables.{largest}: model {self.name!r} needs about {format_bytes(needed)} of memory to run once,"
                f" more than the {format_bytes(budget)} it may plan for (half of the memory available):"
                f" {largest} alone holds {format_count(self.value_sizes[largest])} numbers{where}"
            )
        check_constant_parameters(self.spec, data, backend)

    def _check_pyro(self) -> dict[str, np.ndarray]:
        """Run the Pyro model once (latent values uniform in (-1, 1) unconstrained) with errors that name the
        variable; returns the observed values."""
        import torch
        from pyro import poutine
        from pyro.infer.autoguide.initialization import InitMessenger

        from ppgen.models.initialization import pyro_init_to_uniform

        data, backend = self.torch_data(), pyro_backend()
        self._check_values(data, backend)
        with torch.random.fork_rng(devices=[]), poutine.block(), InitMessenger(pyro_init_to_uniform(radius=1.0)):
            torch.manual_seed(0)
            env = run_model(self.spec, data, backend, explain_errors=True)
        return {name: env[key].detach().cpu().numpy() for name, key in self.observed.items()}

    def _check_numpyro(self) -> dict[str, np.ndarray]:
        """``_check_pyro`` with NumPyro (its ``init_to_uniform`` values), in float64 as the samplers run. The model is
        traced with abstract values (``jax.eval_shape``), which finds the same errors without compiling or running
        it; only an observed variable that is computed, not data, needs a compiled run for its value."""
        import jax
        from numpyro import handlers
        from numpyro.infer import init_to_uniform

        from ppgen.infer.bayes_data import float64
        from ppgen.infer.compile_cache import enable_compilation_cache

        def observed_values() -> dict:  # the data stays concrete: sizes and indices may be read from it
            # handlers entered later see a site first: seed gives it a key before substitute draws its value
            start = handlers.substitute(substitute_fn=init_to_uniform(radius=1.0))
            with handlers.block(), start, handlers.seed(rng_seed=0):
                env = run_model(self.spec, data, numpyro_backend(), explain_errors=True)
            return {name: env[key] for name, key in self.observed.items()}

        enable_compilation_cache()  # before JAX's first compilation, after which the cache folder is fixed
        with float64():
            data = self.jax_data()
            self._check_values(data, numpyro_backend())
            if not all(key in data for key in self.observed.values()):
                return {name: np.asarray(value) for name, value in jax.jit(observed_values)().items()}
            shapes = jax.eval_shape(observed_values)
        return {name: np.asarray(data[key]).reshape(shapes[name].shape) for name, key in self.observed.items()}

    def __repr__(self) -> str:
        return f"BayesModel({self.name!r}, latent={self.latent_names}, observed={list(self.observed)})"

    # data
    def _data(self, observed: bool) -> dict[str, np.ndarray]:
        dropped = set() if observed else set(self.spec.observed_data_keys)
        return {key: value for key, value in self.data.items() if key not in dropped}

    def torch_data(self, observed: bool = True, device=None) -> dict:
        """The data as float64 and int64 tensors; ``observed=False`` drops the data the likelihood observes."""
        backend = pyro_backend(device=device)
        return {key: backend.asarray(value) for key, value in self._data(observed).items()}

    def jax_data(self, observed: bool = True) -> dict[str, Any]:
        """The data as jax arrays (widths as jax's x64 setting allows); ``observed=False`` as for torch_data."""
        backend = numpyro_backend()
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
        self,
        data: Mapping | None = None,
        subsample: Mapping[str, int] | None = None,
        predict: bool = False,
    ) -> None:
        """The Pyro model. ``data`` defaults to ``torch_data()``; floats are computed in the dtype and on the
        device of its first float tensor. ``subsample`` (plate name -> batch size B) minibatches those plates:
        each call draws B fresh indices (the plate's sample site) and Pyro scales their log densities by N / B.
        ``predict`` samples the observed variables with the data in place (the posterior predictive). A time
        plate's sites are named ``name__t`` (``ppgen.models.time_steps``); ``gather_steps`` stacks their draws."""
        import torch

        data = self.torch_data() if data is None else data
        reference = next((v for v in data.values() if isinstance(v, torch.Tensor) and v.dtype.is_floating_point), None)
        backend = pyro_backend() if reference is None else pyro_backend(reference.dtype, reference.device)
        run_model(self.spec, data, backend, subsample=self.subsample_plans(subsample), predict=predict)

    def numpyro_model(
        self, data: Mapping[str, Any] | None = None, subsample: Mapping[str, int] | None = None, predict: bool = False
    ) -> None:
        """The NumPyro model; ``data`` defaults to ``jax_data()``; ``subsample`` and ``predict`` as for
        ``pyro_model``."""
        data = self.jax_data() if data is None else data
        run_model(self.spec, data, numpyro_backend(), subsample=self.subsample_plans(subsample), predict=predict)

    def pyro_sites(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Values of variables keyed as the Pyro model's sites: a time plate's variables, [T, ...], split into
        their step sites ``name__t`` (to condition ``pyro_model`` on them)."""
        members = [name for plate in self.spec.time_plates.values() for name in plate.members]
        return split_steps(values, members)

    def gather_steps(self, posterior: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Pyro draws [chain, draw, ...] with the latent variables of time plates gathered from their step sites
        into [chain, draw, T, ...] (NumPyro's layout)."""
        sizes = plate_sizes(self.spec, self.torch_data(), pyro_backend())
        lengths = {}
        for plate, time_plate in self.spec.time_plates.items():
            lengths.update(dict.fromkeys(time_plate.members, sizes[plate]))
        return gather_steps(posterior, [n for n in self.latent_names if n in lengths], lengths)

    # simulation
    def check_proper(self) -> None:
        """SpecError naming the variable unless the prior can be sampled (no Flat priors, no prior terms)."""
        variables = self.spec.variables
        latent = [variables[n] for n in self.spec.variables if n in self.latent_names or n in self.spec.moving_bounds]
        improper = [v.name for v in latent if v.is_constrained or v.dist.name.startswith("Flat")]
        if improper or self.factor_names:
            culprit = improper[0] if improper else self.factor_names[0]
            if not improper:
                reason = "adds a density term to the prior"
            elif variables[culprit].is_constrained:
                reason = "has a density on a constrained support (constraint, lower or upper), which cannot be sampled"
            else:
                reason = "has an improper flat prior"
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
            import torch
            from pyro import poutine

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


def bayes_model_from_tables(tables: dict, base_dir: Path, source: str, backend: str = "pyro") -> BayesModel:
    """The model that parsed TOML tables describe (``base_dir``: where ``data_file`` is relative to; a formula
    expanded into variables by ``ppgen.spec.formula``), checked by a run with ``backend``'s library."""
    from ppgen.spec.formula import expand_formula, has_formula

    expanded = expand_formula(tables, Path(base_dir), source) if has_formula(tables) else tables
    spec = parse_bayes_spec(expanded, Path(base_dir), source)
    return BayesModel(spec, backend, fingerprint=model_fingerprint(tables, spec.data))


def model_fingerprint(tables: Mapping, data: Mapping[str, np.ndarray]) -> str:
    """A digest of a model's TOML tables and its loaded data (a data file's values, not its name: a run folder's
    copy of the data file gives the same fingerprint)."""
    from ppgen.infer.remembered import data_digest

    tables = {**tables, "model": {k: v for k, v in tables.get("model", {}).items() if k != "data_file"}}
    tables["data"] = sorted(tables.get("data", {}))  # the values are in the digest: JSON text of them is not needed
    text = json.dumps(tables, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode() + data_digest(data).encode()).hexdigest()


def load_bayes_model(path: Path) -> BayesModel:
    """The model of a TOML spec file."""
    path = Path(path)
    try:
        tables = parse_toml(path.read_text(encoding="utf-8"), str(path))
    except OSError as error:
        raise SpecError(f"{path}: cannot read the spec ({error.strerror})") from None
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a UTF-8 text file") from None
    if not is_bayes_spec(tables):
        raise SpecError(f"{path}: not a Bayesian model spec (it has no [variables] table)")
    return bayes_model_from_tables(tables, path.parent, str(path))
