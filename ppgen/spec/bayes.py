"""Declarative Bayesian model specs: data, plates and variables, checked and sorted by dependency.

A spec is the ``[model]``, ``[data]``, ``[plates]`` and ``[variables]`` tables of a TOML file (other tables,
such as ``[inference]``, are left to their readers)::

    [model]
    name = "eight_schools"           # optional; the file's stem by default
    data_file = "data/schools.json"  # optional; JSON object, .npz or .csv (columns), relative to the spec

    [data]                            # inline data, merged over data_file's (inline wins)
    J = 8
    y = [28, 8, -3, 7, -1, 1, 18, 12]
    sigma = [15, 10, 16, 11, 9, 11, 10, 18]

    [plates]
    school = "J"                     # an int, or an integer expression of the data ("T - K")

    [variables]                       # any order: they are sorted by dependency
    mu = "Normal(0, 5)"              # a string is a distribution: a latent variable
    tau = "HalfCauchy(5)"
    theta_raw = { dist = "Normal(0, 1)", plate = "school" }
    theta = { value = "mu + tau * theta_raw", plate = "school" }
    y = { dist = "Normal(theta, sigma)", plate = "school", observed = "y" }

A variable has either ``dist`` (stochastic) or ``value`` (computed). ``plate`` is a plate name or a list of
them, outermost first. As in Pyro, each plate owns one batch dim throughout the model: -1 (the rightmost)
unless some variable nests another plate inside it, in which case it sits left of that plate. So a variable
in plates [a, b] has leading shape [A, B], and a variable in [a] alone then has shape [A, 1] (it
broadcasts against the [A, B] ones); with no nesting, a variable in [a] has shape [A]. ``shape = [K, ...]`` (ints or
integer expressions of the data) gives a distribution with scalar parameters an event shape,
``dist.expand(shape).to_event(len(shape))``. ``observed`` names a data key (looked up first) or another
variable whose value the distribution scores:

* a data key, or a value computed from data (``log_earn = { value = "log(earn)" }``), makes a likelihood term;
* a value computed from data and parameters (ARMA errors) also makes a likelihood term;
* a latent variable, with no data behind it, adds a density term to the prior: how Stan's
  ``ordered[2] mu; mu ~ normal(0, 2)`` reads, with ``mu = "FlatOrdered(2)"`` and
  ``mu_prior = { dist = "Normal(0, 2)", shape = [2], observed = "mu" }``.

A ``value`` that depends on no stochastic variable is transformed data: computed, but not recorded as a
site. Names in expressions refer to variables first, then to data.
"""

import keyword
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ppgen.errors import SpecError
from ppgen.spec.data_files import as_array, read_data_file
from ppgen.spec.expr import DistributionCall, Expression, parse_distribution, parse_expression
from ppgen.suggest import CLAUSE, suggest

__all__ = ["Variable", "BayesSpec", "is_bayes_spec", "parse_bayes_spec", "load_model_data"]

MODEL_KEYS = ("kind", "name", "data_file")
VARIABLE_KEYS = ("dist", "value", "observed", "plate", "shape")
BAYES_TABLES = ("model", "data", "plates", "variables")


@dataclass(frozen=True)
class Variable:
    """One variable of a spec: a distribution (``dist``) or a computed ``value``, in ``plates`` (outermost
    first), with an optional event ``shape`` and the data key or variable it ``observed``."""

    name: str
    dist: DistributionCall | None
    value: Expression | None
    observed: str | None
    plates: tuple[str, ...]
    shape: tuple[Expression, ...]
    depends: tuple[str, ...]  # the variables it reads, in order of appearance

    @property
    def is_stochastic(self) -> bool:
        return self.dist is not None


@dataclass(frozen=True)
class BayesSpec:
    """A checked spec: ``variables`` in dependency order, and what each kind of variable is."""

    name: str
    source: str
    data: dict[str, np.ndarray]
    plates: dict[str, Expression]  # plate name -> its size, an expression of the data
    plate_dims: dict[str, int]  # plate name -> its batch dim (Pyro's sense: -1 is the rightmost)
    variables: dict[str, Variable]
    latent_names: tuple[str, ...]  # stochastic and not observed
    deterministic_names: tuple[str, ...]  # values that depend on stochastic variables (recorded as sites)
    transformed_data_names: tuple[str, ...]  # values of the data alone (computed, not recorded)
    observed: dict[str, str]  # likelihood terms: observed variable -> the data key or variable it observes
    factor_names: tuple[str, ...]  # observed variables that score a latent variable: prior density terms
    observed_data_keys: tuple[str, ...]  # the data that the likelihood terms observe


def is_bayes_spec(tables: dict) -> bool:
    """Whether parsed TOML tables describe a declarative Bayesian model (they have ``[variables]``)."""
    return isinstance(tables, dict) and "variables" in tables


def _table(tables: dict, key: str, source: str) -> dict:
    table = tables.get(key, {})
    if not isinstance(table, dict):
        raise SpecError(f"{source}: [{key}] must be a table, not {type(table).__name__}")
    return table


def load_model_data(tables: dict, base_dir: Path, source: str) -> dict[str, np.ndarray]:
    """The data of a spec: ``[model] data_file`` (relative to ``base_dir``), then inline ``[data]`` over it."""
    data_file = _table(tables, "model", source).get("data_file")
    data = {}
    if data_file is not None:
        if not isinstance(data_file, str):
            raise SpecError(f"{source}: model.data_file must be a path string, not {data_file!r}")
        data.update(read_data_file(Path(base_dir) / data_file))
    for key, value in _table(tables, "data", source).items():
        data[key] = as_array(value, f"{source}: data.{key}", SpecError)
    return data


def _string_list(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise SpecError(f"{where}: expected a name or a list of names, not {value!r}")
    return tuple(items)


def _size_expression(value: Any, where: str) -> Expression:
    """A plate size or shape entry: a non-negative int, or an expression of the data."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SpecError(f"{where}: expected an integer or the name of an integer in the data, not {value!r}")
    if isinstance(value, int) and value < 0:
        raise SpecError(f"{where}: a size cannot be negative ({value})")
    return parse_expression(str(value), where)


def _parse_variable(name: str, entry: Any, plates: dict[str, Expression]) -> Variable:
    where = f"variables.{name}"
    if not name.isidentifier() or keyword.iskeyword(name):
        raise SpecError(f"{where}: a variable's name must be a Python identifier")
    if isinstance(entry, str):
        entry = {"dist": entry}
    if not isinstance(entry, dict):
        raise SpecError(f"{where}: expected a distribution string or a table, not {entry!r}")
    for key in entry:
        if key not in VARIABLE_KEYS:
            raise SpecError(
                f"{where}.{key}: unknown key{suggest(key, VARIABLE_KEYS, CLAUSE)} (keys: {', '.join(VARIABLE_KEYS)})"
            )
    if ("dist" in entry) == ("value" in entry):
        raise SpecError(f"{where}: give exactly one of 'dist' (a distribution) and 'value' (an expression)")
    if "value" in entry and ("observed" in entry or "shape" in entry):
        raise SpecError(f"{where}: 'observed' and 'shape' go with 'dist', not with 'value'")
    observed = entry.get("observed")
    if observed is not None and not isinstance(observed, str):
        raise SpecError(f"{where}.observed: expected the name of a data key or variable, not {observed!r}")
    plate_names = _string_list(entry.get("plate", []), f"{where}.plate")
    for plate in plate_names:
        if plate not in plates:
            hint = suggest(plate, plates, CLAUSE)
            raise SpecError(f"{where}.plate: unknown plate {plate!r}{hint} (declare it in [plates])")
    if len(set(plate_names)) != len(plate_names):
        raise SpecError(f"{where}.plate: a plate is listed twice in {list(plate_names)}")
    shape = entry.get("shape", [])
    shape = shape if isinstance(shape, list) else [shape]
    return Variable(
        name=name,
        dist=parse_distribution(entry["dist"], f"{where}.dist") if "dist" in entry else None,
        value=parse_expression(entry["value"], f"{where}.value") if "value" in entry else None,
        observed=observed,
        plates=plate_names,
        shape=tuple(_size_expression(size, f"{where}.shape[{i}]") for i, size in enumerate(shape)),
        depends=(),
    )


def _expressions(variable: Variable) -> list[Expression]:
    return [*([variable.value] if variable.value else []), *(variable.dist.params.values() if variable.dist else [])]


def _resolve_names(variables: dict[str, Variable], data: dict, plates: dict[str, Expression]) -> dict[str, Variable]:
    """Check every name; fill in each variable's dependencies on other variables."""
    known = set(variables) | set(data)
    for plate, size in plates.items():
        for name in size.names:
            if name not in data:
                raise SpecError(f"plates.{plate}: unknown data {name!r}{suggest(name, data, CLAUSE)}")
    resolved = {}
    for variable in variables.values():
        for expression in _expressions(variable):
            for name in expression.names:
                if name not in known:
                    raise SpecError(f"{expression.where}: unknown name {name!r}{suggest(name, known, CLAUSE)}")
        for entry in variable.shape:
            for name in entry.names:
                if name not in data:
                    raise SpecError(f"{entry.where}: unknown data {name!r}{suggest(name, data, CLAUSE)}")
        depends = [name for e in _expressions(variable) for name in e.names if name in variables]
        if variable.observed is not None and variable.observed not in data:
            if variable.observed not in variables or variable.observed == variable.name:
                raise SpecError(
                    f"variables.{variable.name}.observed: {variable.observed!r} is neither a data key nor another"
                    f" variable{suggest(variable.observed, known - {variable.name} | set(data), CLAUSE)}"
                )
            depends.append(variable.observed)
        resolved[variable.name] = replace(variable, depends=tuple(dict.fromkeys(depends)))
    return resolved


def _dependency_order(variables: dict[str, Variable]) -> list[str]:
    """Variables sorted so that each comes after those it reads (file order otherwise); rejects cycles."""
    order, state = [], {}

    def visit(name: str, path: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            cycle = [*path[path.index(name) :], name]
            raise SpecError(f"variables.{name}: dependency cycle {' -> '.join(cycle)}")
        state[name] = "visiting"
        for dependency in variables[name].depends:
            visit(dependency, [*path, name])
        state[name] = "done"
        order.append(name)

    for name in variables:
        visit(name, [])
    return order


def _plate_dims(variables: dict[str, Variable], plates: dict[str, Expression]) -> dict[str, int]:
    """One batch dim per plate, as Pyro needs: -1 for plates with none inside them, and each plate left of
    every plate listed after it in some variable's plate list. Rejects plates nested both ways."""
    inner: dict[str, set[str]] = {plate: set() for plate in plates}
    for variable in variables.values():
        for i, plate in enumerate(variable.plates):
            inner[plate].update(variable.plates[i + 1 :])
    dims: dict[str, int] = {}

    def dim(plate: str, path: tuple[str, ...]) -> int:
        if plate in path:
            cycle = " inside ".join((*path[path.index(plate) :], plate))
            raise SpecError(f"plates.{plate}: plates are nested both ways ({cycle}) across variables")
        if plate not in dims:
            dims[plate] = min((dim(p, (*path, plate)) for p in inner[plate]), default=0) - 1
        return dims[plate]

    for plate in plates:
        dim(plate, ())
    return dims


def parse_bayes_spec(tables: dict, base_dir: Path, source: str) -> BayesSpec:
    """Check parsed TOML tables (``[model]``, ``[data]``, ``[plates]``, ``[variables]``) and sort the variables.

    Args:
        tables: the parsed TOML file; tables other than those four are ignored.
        base_dir: the folder that ``model.data_file`` is relative to.
        source: the file name, for error messages and the default model name.

    Raises:
        SpecError naming the key at fault (unknown names with a suggestion, cycles, unknown plates, an
        observed key that is neither data nor a variable); DataError for a bad data file.
    """
    model = _table(tables, "model", source)
    for key in model:
        if key not in MODEL_KEYS:
            hint = suggest(key, MODEL_KEYS, CLAUSE)
            raise SpecError(f"{source}: model.{key}: unknown key{hint} for a Bayesian model")
    if model.get("kind", "bayes") != "bayes":
        raise SpecError(f"{source}: model.kind = {model['kind']!r}, but a spec with [variables] is kind 'bayes'")
    name = model.get("name", Path(source).stem)
    if not isinstance(name, str) or not name:
        raise SpecError(f"{source}: model.name must be a non-empty string")
    data = load_model_data(tables, base_dir, source)
    plates = {
        plate: _size_expression(size, f"plates.{plate}") for plate, size in _table(tables, "plates", source).items()
    }
    entries = _table(tables, "variables", source)
    if not entries:
        raise SpecError(f"{source}: [variables] is empty")
    variables = _resolve_names({n: _parse_variable(n, e, plates) for n, e in entries.items()}, data, plates)
    variables = {name: variables[name] for name in _dependency_order(variables)}

    stochastic_inputs: dict[str, bool] = {}  # does the variable's value depend on a stochastic variable?
    for variable in variables.values():
        stochastic_inputs[variable.name] = variable.is_stochastic or any(stochastic_inputs[d] for d in variable.depends)
    size_keys = {n for size in plates.values() for n in size.names} | {
        n for v in variables.values() for e in v.shape for n in e.names
    }

    def data_behind(name: str) -> set[str]:
        """The data keys (other than sizes) that a variable's value is computed from, through other values."""
        variable = variables[name]
        if variable.value is None:
            return set()
        reads = {n for n in variable.value.names if n not in variables} - size_keys
        return reads.union(*(data_behind(d) for d in variable.depends))

    observed, factors, observed_keys = {}, [], {}
    for variable in variables.values():
        if variable.observed is None:
            continue
        behind = data_behind(variable.observed) if variable.observed not in data else {variable.observed}
        if behind:
            observed[variable.name] = variable.observed
            observed_keys.update(dict.fromkeys(sorted(behind)))
        else:
            factors.append(variable.name)
    return BayesSpec(
        name=name,
        source=source,
        data=data,
        plates=plates,
        plate_dims=_plate_dims(variables, plates),
        variables=variables,
        latent_names=tuple(n for n, v in variables.items() if v.is_stochastic and v.observed is None),
        deterministic_names=tuple(n for n, v in variables.items() if v.value is not None and stochastic_inputs[n]),
        transformed_data_names=tuple(
            n for n, v in variables.items() if v.value is not None and not stochastic_inputs[n]
        ),
        observed=observed,
        factor_names=tuple(factors),
        observed_data_keys=tuple(observed_keys),
    )
