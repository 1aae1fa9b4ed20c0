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
    school = "J"                     # an int, or an integer expression of the data ("T - K"); a plate that
                                     # variables name but [plates] leaves out has a CSV data file's row count

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
site. Names never capture each other: a variable may share a data key's name only when it observes that key
(``y = { dist = "...", observed = "y" }``), and then ``y`` in expressions means the data (the observed values, so
that a posterior predictive check replicates one step ahead from the observed history); any other clash is an
error.

Other kinds of variables (``ppgen.spec.variables``): ``factor`` terms, ``ode`` solutions (``ppgen.spec.ode``),
constrained parameters (``constraint``, ``lower``, ``upper``; ``ppgen.models.constraints``). A plate with a
``step`` name is a time plate, computed one step at a time (``ppgen.spec.time_plates``).
"""

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ppgen.errors import SpecError
from ppgen.models.missing import IMPUTABLE, missing_site
from ppgen.spec.constraints import raw_site_name
from ppgen.spec.data_files import as_array, read_data_file
from ppgen.spec.expr import Expression
from ppgen.spec.language import DISTRIBUTIONS
from ppgen.spec.time_plates import TimePlate, rewrite_step_reads
from ppgen.spec.variables import Variable, parse_variable, size_expression
from ppgen.suggest import CLAUSE, suggest

__all__ = ["Variable", "BayesSpec", "is_bayes_spec", "parse_bayes_spec", "load_model_data"]

MODEL_KEYS = ("kind", "name", "data_file", "covariates")  # covariates: the data that predictions replace
PLATE_KEYS = ("size", "step")
BAYES_TABLES = ("model", "data", "plates", "variables")


@dataclass(frozen=True)
class BayesSpec:
    """A checked spec: ``variables`` in dependency order (each time plate's variables together), and what each
    kind of variable is."""

    name: str
    source: str
    data: dict[str, np.ndarray]
    plates: dict[str, Expression]  # plate name -> its size, an expression of the data
    plate_dims: dict[str, int]  # plate name -> its batch dim (Pyro's sense: -1 is the rightmost); not time plates
    time_plates: dict[str, TimePlate]  # time plate name -> its step name, variables and carried state
    variables: dict[str, Variable]
    latent_names: tuple[str, ...]  # stochastic and not observed
    discrete_names: tuple[str, ...]  # latent with a finite discrete distribution: marginalized by enumeration
    deterministic_names: tuple[str, ...]  # values that depend on stochastic variables (recorded as sites)
    transformed_data_names: tuple[str, ...]  # values of the data alone (computed, not recorded)
    observed: dict[str, str]  # likelihood terms: observed variable -> the data key or variable it observes
    factor_names: tuple[str, ...]  # density terms that are not likelihood terms: factors, observed latents
    observed_data_keys: tuple[str, ...]  # the data that the likelihood terms observe
    moving_bounds: tuple[str, ...] = ()  # bounded variables whose bounds depend on stochastic ones: their latent
    # site is ``name__raw`` (listed in latent_names) and ``name`` is deterministic (ppgen.models.constraints)
    missing: dict[str, np.ndarray] = field(default_factory=dict)  # observed variable -> where its data is NaN:
    # imputed by the latent site ``name_missing`` (listed in latent_names; ppgen.models.missing)

    @property
    def max_plate_nesting(self) -> int:
        return -min(self.plate_dims.values(), default=0)

    def time_plate_of(self, name: str) -> str | None:
        """The time plate a variable is computed in, if any (always its outermost plate)."""
        plates = self.variables[name].plates
        return plates[0] if plates and plates[0] in self.time_plates else None


def is_bayes_spec(tables: dict) -> bool:
    """Whether parsed TOML tables describe a declarative Bayesian model (they have ``[variables]``)."""
    return isinstance(tables, dict) and "variables" in tables


def _check_covariates(covariates, data: dict, source: str) -> None:
    """``model.covariates``: data keys, which ``ppgen predict`` replaces with new rows (``ppgen.fitted``)."""
    if not isinstance(covariates, list) or not all(isinstance(name, str) for name in covariates):
        raise SpecError(f"{source}: model.covariates: expected a list of data keys, not {covariates!r}")
    for name in covariates:
        if name not in data:
            raise SpecError(f"{source}: model.covariates: no data {name!r}{suggest(name, data)}")


def _table(tables: dict, key: str, source: str) -> dict:
    table = tables.get(key, {})
    if not isinstance(table, dict):
        raise SpecError(f"{source}: [{key}] must be a table, not {type(table).__name__}")
    return table


def load_model_data(tables: dict, base_dir: Path, source: str) -> tuple[dict[str, np.ndarray], int | None]:
    """The data of a spec: ``[model] data_file`` (relative to ``base_dir``), then inline ``[data]`` over it; and the
    number of rows of a CSV data file (None for other data)."""
    data_file = _table(tables, "model", source).get("data_file")
    data, rows = {}, None
    if data_file is not None:
        if not isinstance(data_file, str):
            raise SpecError(f"{source}: model.data_file must be a path string, not {data_file!r}")
        data.update(read_data_file(Path(base_dir) / data_file))
        rows = len(next(iter(data.values()))) if data_file.endswith(".csv") else None
    for key, value in _table(tables, "data", source).items():
        data[key] = as_array(value, f"{source}: data.{key}", SpecError)
    return data, rows


def _row_plates(entries: dict, plates: dict[str, Expression], rows: int) -> dict[str, Expression]:
    """A CSV data file's row count as the size of each plate that variables name and ``[plates]`` does not declare
    (except a name close to a declared plate's, which is a typo)."""
    found = {}
    for entry in entries.values():
        names = entry.get("plate", []) if isinstance(entry, dict) else []
        for name in [names] if isinstance(names, str) else names if isinstance(names, list) else []:
            if isinstance(name, str) and name not in plates and not suggest(name, plates):
                found[name] = size_expression(rows, f"plates.{name}")
    return found


def _parse_plates(table: dict) -> tuple[dict[str, Expression], dict[str, str]]:
    """Plate sizes, and the step name of each time plate (``{ size = "T", step = "t" }``)."""
    sizes, steps = {}, {}
    for plate, entry in table.items():
        if isinstance(entry, dict):
            for key in entry:
                if key not in PLATE_KEYS:
                    raise SpecError(f"plates.{plate}.{key}: unknown key{suggest(key, PLATE_KEYS, CLAUSE)}")
            if "size" not in entry:
                raise SpecError(f"plates.{plate}: give its size (plates.{plate}.size)")
            step = entry.get("step")
            if step is not None:
                if not isinstance(step, str) or not step.isidentifier():
                    raise SpecError(f"plates.{plate}.step: expected a name for the step, not {step!r}")
                steps[plate] = step
            sizes[plate] = size_expression(entry["size"], f"plates.{plate}.size")
        else:
            sizes[plate] = size_expression(entry, f"plates.{plate}")
    return sizes, steps


def _check_clashes(variables: dict[str, Variable], data: dict, steps: dict[str, str]) -> None:
    """Data and variables never capture each other; step names are fresh."""
    for name, variable in variables.items():
        observed = variable.observed
        observes_nothing = observed is not None and observed not in data and observed not in variables
        if name in data and observed != name and not observes_nothing:  # a typo in observed is named later
            raise SpecError(
                f"variables.{name}: {name!r} names both a data key and a variable; a variable may share its data's"
                f" name only when it observes it (observed = {name!r}): otherwise rename the variable or the data"
            )
    for name, variable in variables.items():
        taken = f"{name}_map"  # the most likely values of a discrete latent variable (ppgen.infer.discrete)
        if variable.is_discrete and variable.observed is None and (taken in variables or taken in data):
            raise SpecError(
                f"variables.{taken}: the name is taken by the most likely values of the discrete variable {name!r};"
                " rename it"
            )
    for plate, step in steps.items():
        if step in variables or step in data:
            what = "a variable" if step in variables else "a data key"
            raise SpecError(f"plates.{plate}.step: {step!r} is also {what}; give the step a name of its own")


def _with_step_reads(variables: dict[str, Variable], steps: dict[str, str], data: dict) -> dict[str, Variable]:
    """Check the plate lists of time-plate variables and rewrite their reads of this and the previous step (a name
    that is also data means the data)."""
    members: dict[str, set[str]] = {plate: set() for plate in steps}
    for name, variable in variables.items():
        for plate in variable.plates:
            if plate in steps and name not in data:
                members[plate].add(name)
    rewritten = {}
    for name, variable in variables.items():
        for plate in variable.plates[1:]:
            if plate in steps:
                raise SpecError(
                    f"variables.{name}.plate: the time plate {plate!r} must come first (outermost)"
                    f" in {list(variable.plates)}"
                )
        plate = variable.plates[0] if variable.plates and variable.plates[0] in steps else None
        if plate is None:
            if variable.init is not None:
                raise SpecError(f"variables.{name}.init: only a variable of a time plate has an init")
            rewritten[name] = variable
            continue
        if variable.ode is not None:
            raise SpecError(f"variables.{name}: an ode variable cannot be computed inside the time plate {plate!r}")
        previous: dict[str, None] = {}

        def rewrite(expression, plate=plate, previous=previous):
            if expression is None:
                return None
            new, reads = rewrite_step_reads(expression, steps[plate], members[plate])
            previous.update(dict.fromkeys(reads))
            return new

        dist = variable.dist
        if dist is not None:
            dist = replace(dist, params={key: rewrite(e) for key, e in dist.params.items()})
        rewritten[name] = replace(
            variable,
            dist=dist,
            value=rewrite(variable.value),
            factor=rewrite(variable.factor),
            lower=rewrite(variable.lower),
            upper=rewrite(variable.upper),
            previous=tuple(previous),
        )
    return rewritten


def _resolve_names(
    variables: dict[str, Variable], data: dict, plates: dict[str, Expression], steps: dict[str, str]
) -> dict[str, Variable]:
    """Check every name; fill in each variable's dependencies on other variables (at the same step)."""
    known = set(variables) | set(data)
    for plate, size in plates.items():
        for name in size.names:
            if name not in data:
                raise SpecError(f"plates.{plate}: unknown data {name!r}{suggest(name, data, CLAUSE)}")
    factors = {n for n, v in variables.items() if v.factor is not None}
    resolved = {}
    for variable in variables.values():
        step = steps.get(variable.plates[0]) if variable.plates else None
        expressions = variable.expressions() + ([variable.init] if variable.init is not None else [])
        for expression in expressions:
            for name in expression.names:
                if name == step and expression is not variable.init:
                    continue
                if name not in known:
                    hint = suggest(name, known | ({step} if step else set()), CLAUSE)
                    raise SpecError(f"{expression.where}: unknown name {name!r}{hint}")
                if name in factors:
                    raise SpecError(f"{expression.where}: {name!r} is a factor, a log-density term with no value")
        if variable.ode is not None:
            for name in variable.ode.names:
                if name not in known:
                    raise SpecError(
                        f"variables.{variable.name}.ode: unknown name {name!r}{suggest(name, known, CLAUSE)}"
                    )
        for entry in variable.shape:
            for name in entry.names:
                if name not in data:
                    raise SpecError(f"{entry.where}: unknown data {name!r}{suggest(name, data, CLAUSE)}")
        for name in variable.previous:
            if variables[name].init is None:
                raise SpecError(
                    f"variables.{name}.init: {variable.name} reads {name}[{step} - 1], so {name} needs an init: its"
                    f' value before the first step (for example init = "0")'
                )
        depends = [n for n in variable.names() if n in variables and n not in data]
        if variable.init is not None:
            depends += [n for n in variable.init.names if n in variables and n not in data]
        if variable.observed is not None and variable.observed not in data:
            if variable.observed not in variables or variable.observed == variable.name:
                raise SpecError(
                    f"variables.{variable.name}.observed: {variable.observed!r} is neither a data key nor another"
                    f" variable{suggest(variable.observed, known - {variable.name} | set(data), CLAUSE)}"
                )
            depends.append(variable.observed)
        resolved[variable.name] = replace(variable, depends=tuple(dict.fromkeys(depends)))
    return resolved


def _topological(nodes: dict[str, tuple[str, ...]], cycle_error) -> list[str]:
    """Nodes sorted so that each comes after those it depends on (given order otherwise). A depth-first walk with
    its own stack, so that a chain of any length is sorted in linear time; a cycle raises ``cycle_error(cycle)``,
    the cycle a list of nodes from the first to itself again."""
    order, state = [], {}
    for root in nodes:
        if root in state:
            continue
        state[root] = "visiting"
        path, pending = [root], [iter(nodes[root])]
        while pending:
            dependency = next(pending[-1], None)
            if dependency is None:
                pending.pop()
                state[path[-1]] = "done"
                order.append(path.pop())
            elif state.get(dependency) == "visiting":
                raise cycle_error([*path[path.index(dependency) :], dependency])
            elif dependency not in state:
                state[dependency] = "visiting"
                path.append(dependency)
                pending.append(iter(nodes[dependency]))
    return order


def _dependency_cycle(describe):
    def error(cycle: list[str]) -> SpecError:
        return SpecError(f"{describe(cycle[0])}: dependency cycle {' -> '.join(cycle)}")

    return error


def _dependency_order(variables: dict[str, Variable], steps: dict[str, str]) -> list[str]:
    """Variables sorted so that each comes after those it reads, and each time plate's variables together (after
    what any of them reads, before what reads any of them); rejects cycles."""
    group = {
        n: (f"time plate {v.plates[0]!r}" if v.plates and v.plates[0] in steps else n) for n, v in variables.items()
    }
    groups: dict[str, list[str]] = {}
    for name in variables:
        groups.setdefault(group[name], []).append(name)
    between = {
        node: tuple(dict.fromkeys(group[d] for n in names for d in variables[n].depends if group[d] != node))
        for node, names in groups.items()
    }

    def describe(node: str) -> str:
        return node if node.startswith("time plate") else f"variables.{node}"

    order = []
    for node in _topological(between, _dependency_cycle(describe)):
        names = groups[node]
        within = {n: tuple(d for d in variables[n].depends if group[d] == node) for n in names}
        order += _topological(within, _dependency_cycle(lambda n: f"variables.{n}"))
    return order


def _plate_dims(variables: dict[str, Variable], plates: dict[str, Expression]) -> dict[str, int]:
    """One batch dim per plate, as Pyro needs: -1 for plates with none inside them, and each plate left of
    every plate listed after it in some variable's plate list. Rejects plates nested both ways."""
    inner: dict[str, dict[str, None]] = {plate: {} for plate in plates}  # the plates listed right after it
    for variable in variables.values():
        ordinary = [plate for plate in variable.plates if plate in plates]
        for outer, plate in zip(ordinary, ordinary[1:]):
            inner[outer][plate] = None

    def nested_both_ways(cycle: list[str]) -> SpecError:
        return SpecError(f"plates.{cycle[0]}: plates are nested both ways ({' inside '.join(cycle)}) across variables")

    dims: dict[str, int] = {}
    for plate in _topological({p: tuple(inside) for p, inside in inner.items()}, nested_both_ways):
        dims[plate] = min((dims[p] for p in inner[plate]), default=0) - 1
    return {plate: dims[plate] for plate in plates}


def _data_readers(variables: dict[str, Variable], plates: dict[str, Expression], data: dict) -> dict[str, str]:
    """Each data key that the model reads -> the first spec key that reads it."""
    readers: dict[str, str] = {}
    for plate, size in plates.items():
        readers.update({name: f"plates.{plate}" for name in size.names if name not in readers})
    for variable in variables.values():
        init = [variable.init] if variable.init is not None else []
        for expression in (*variable.expressions(), *variable.shape, *init):
            where = expression.where
            readers.update({name: where for name in expression.names if name in data and name not in readers})
        if variable.ode is not None:
            where = f"variables.{variable.name}.ode"
            readers.update({name: where for name in variable.ode.names if name in data and name not in readers})
        if variable.observed in data:
            readers.setdefault(variable.observed, f"variables.{variable.name}.observed")
    return readers


def _missing_masks(
    variables: dict[str, Variable], plates: dict[str, Expression], data: dict, steps: dict[str, str]
) -> dict[str, np.ndarray]:
    """Observed variable -> where (NaN) its data is missing, for the data that a likelihood observes directly;
    SpecError where such a variable cannot impute them (ppgen.models.missing says which can)."""
    read = {n for size in plates.values() for n in size.names}
    for variable in variables.values():
        init = [variable.init] if variable.init is not None else []
        read |= {n for e in (*variable.expressions(), *variable.shape, *init) for n in e.names}
        read |= set(variable.ode.names) if variable.ode is not None else set()
    masks = {}
    for variable in variables.values():
        values = data.get(variable.observed) if variable.dist is not None else None
        if values is None or values.dtype.kind != "f" or not np.isnan(values).any():
            continue
        first = int(np.flatnonzero(np.isnan(values))[0])
        reason = None
        if np.isnan(values).all():  # the imputed entries would have no observed median to start from
            reason = "every value is missing, so nothing is observed (give it data, or leave out `observed`)"
        elif DISTRIBUTIONS[variable.dist.name].support != "continuous":
            reason = f"a {variable.dist.name} variable's missing values cannot be imputed by NUTS: drop those rows"
        elif variable.dist.name not in IMPUTABLE:
            reason = f"missing values are imputed in {', '.join(IMPUTABLE)} likelihoods"
        elif variable.shape or (variable.plates and variable.plates[0] in steps):
            reason = "missing values are imputed in univariate likelihoods outside time plates only"
        elif variable.observed in read:
            reason = f"{variable.observed!r} is also read by an expression, which cannot read a missing value"
        if reason is not None:
            raise SpecError(f"variables.{variable.name}.observed: {variable.observed}[{first}] is missing; {reason}")
        masks[variable.name] = np.isnan(values)
    return masks


def _check_finite(data: dict[str, np.ndarray], readers: dict[str, str], tables: dict, base_dir: Path, source: str):
    """SpecError naming the first NaN or infinity in the data that the model reads: its key (a CSV file's column
    and row), and what reads it."""
    for key, reader in readers.items():
        values = data[key]
        if values.dtype.kind != "f":
            continue
        finite = np.isfinite(values)
        if finite.all():
            continue
        index = tuple(int(i) for i in np.unravel_index(int(np.argmin(finite)), values.shape))
        if key in _table(tables, "data", source):
            where = f"{source}: data.{key}{list(index) if index else ''}"
        else:
            path = Path(base_dir) / tables["model"]["data_file"]
            if path.suffix == ".csv":
                where = f"data file {path}: column {key!r}, row {index[0] + 1}"
            else:
                where = f"data file {path}: {key!r}" + (f", index {list(index)}" if index else "")
        raise SpecError(f"{where} is {values[index]}; {reader} reads it, and a model's data must be finite")


def _time_plates(variables: dict[str, Variable], steps: dict[str, str]) -> dict[str, TimePlate]:
    members_of: dict[str, list[str]] = {plate: [] for plate in steps}
    for name, variable in variables.items():
        if variable.plates and variable.plates[0] in steps:
            members_of[variable.plates[0]].append(name)
    plates = {}
    for plate, step in steps.items():
        members = tuple(members_of[plate])
        carried = tuple(dict.fromkeys(p for n in members for p in variables[n].previous))
        plates[plate] = TimePlate(step, members, carried)
    return plates


def parse_bayes_spec(tables: dict, base_dir: Path, source: str) -> BayesSpec:
    """Check parsed TOML tables (``[model]``, ``[data]``, ``[plates]``, ``[variables]``) and sort the variables.

    Args:
        tables: the parsed TOML file; tables other than those four are ignored.
        base_dir: the folder that ``model.data_file`` is relative to.
        source: the file name, for error messages and the default model name.

    Raises:
        SpecError naming the key at fault (unknown names with a suggestion, cycles, unknown plates, an
        observed key that is neither data nor a variable, a clash of names); DataError for a bad data file.
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
    data, rows = load_model_data(tables, base_dir, source)
    _check_covariates(model.get("covariates", []), data, source)
    plates, steps = _parse_plates(_table(tables, "plates", source))
    entries = _table(tables, "variables", source)
    if not entries:
        raise SpecError(f"{source}: [variables] is empty")
    if rows is not None:
        plates |= _row_plates(entries, plates, rows)
    variables = {n: parse_variable(n, e, plates) for n, e in entries.items()}
    _check_clashes(variables, data, steps)
    variables = _resolve_names(_with_step_reads(variables, steps, data), data, plates, steps)
    variables = {name: variables[name] for name in _dependency_order(variables, steps)}
    missing = _missing_masks(variables, plates, data, steps)
    missing_keys = {variables[name].observed for name in missing}
    finite_data = {key: np.where(np.isnan(v), 0.0, v) if key in missing_keys else v for key, v in data.items()}
    _check_finite(finite_data, _data_readers(variables, plates, data), tables, base_dir, source)

    stochastic_inputs: dict[str, bool] = {}  # does the variable's value depend on a stochastic variable?
    for variable in variables.values():
        reads = (*variable.depends, *variable.previous)
        stochastic_inputs[variable.name] = variable.is_stochastic or any(stochastic_inputs.get(d, True) for d in reads)
    size_keys = {n for size in plates.values() for n in size.names} | {
        n for v in variables.values() for e in v.shape for n in e.names
    }

    def reads(variable: Variable) -> set[str]:
        """The data keys (other than sizes) that a computed variable's expressions read directly."""
        return {n for n in variable.names() if n not in variables or n in data} - size_keys

    reads_data: dict[str, bool] = {}  # is a variable's value computed from data, through other values?
    for variable in variables.values():
        reads_data[variable.name] = variable.is_computed and (
            bool(reads(variable)) or any(reads_data[d] for d in variable.depends)
        )
    searched: set[str] = set()  # the computed variables whose data keys are already in observed_keys

    def data_behind(name: str) -> set[str]:
        """The data keys that a computed variable's value is computed from, through other values (except those
        behind variables an earlier call searched): each variable is searched once, however many read it."""
        keys, pending = set(), [name]
        while pending:
            variable = variables[pending.pop()]
            if variable.name in searched or not variable.is_computed:
                continue
            searched.add(variable.name)
            keys |= reads(variable)
            pending += variable.depends
        return keys

    observed, factors, observed_keys = {}, [], {}
    for variable in variables.values():
        if variable.factor is not None:
            factors.append(variable.name)
        if variable.observed is None:
            continue
        if variable.observed in data or reads_data[variable.observed]:
            observed[variable.name] = variable.observed
            behind = {variable.observed} if variable.observed in data else data_behind(variable.observed)
            observed_keys.update(dict.fromkeys(sorted(behind)))
        else:
            factors.append(variable.name)
    moving_bounds = tuple(
        n
        for n, v in variables.items()
        if v.constraint is None
        and v.observed is None
        and any(
            stochastic_inputs[d]
            for bound in (v.lower, v.upper)
            if bound is not None
            for d in bound.names
            if d in variables
        )
    )
    latent = tuple(
        raw_site_name(n) if n in moving_bounds else n
        for n, v in variables.items()
        if v.is_stochastic and v.observed is None
    ) + tuple(missing_site(n) for n in missing)
    for latent_name in latent:
        variable = variables.get(latent_name)
        if variable is not None and variable.is_discrete and DISTRIBUTIONS[variable.dist.name].support != "finite":
            raise SpecError(
                f"variables.{latent_name}.dist: a latent {variable.dist.name} variable has infinitely many values and"
                " cannot be marginalized; latent discrete variables need a finite support (Categorical, Bernoulli,"
                " Binomial)"
            )
    return BayesSpec(
        name=name,
        source=source,
        data=data,
        plates=plates,
        plate_dims=_plate_dims(variables, {p: s for p, s in plates.items() if p not in steps}),
        time_plates=_time_plates(variables, steps),
        variables=variables,
        latent_names=latent,
        discrete_names=tuple(n for n in latent if n in variables and variables[n].is_discrete),
        deterministic_names=tuple(
            n for n, v in variables.items() if (v.is_computed and stochastic_inputs[n]) or n in moving_bounds
        ),
        transformed_data_names=tuple(n for n, v in variables.items() if v.is_computed and not stochastic_inputs[n]),
        observed=observed,
        factor_names=tuple(factors),
        observed_data_keys=tuple(observed_keys),
        moving_bounds=moving_bounds,
        missing=missing,
    )
