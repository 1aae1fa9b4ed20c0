"""One entry of a spec's ``[variables]`` table, parsed: what kind of variable it is and the expressions it reads.

Kinds (exactly one of the first four keys, or a constrained parameter with a flat density):

| key                   | variable                                                                  |
|-----------------------|---------------------------------------------------------------------------|
| ``dist``              | stochastic: latent, or a likelihood term with ``observed``                 |
| ``value``             | computed from data and other variables                                     |
| ``factor``            | a term added to the log density (Stan's ``target +=``); it has no value    |
| ``ode``               | the solution of an ODE at given times (``ppgen.spec.ode``)                  |
| ``constraint``, ``lower``, ``upper`` | a parameter on that support; with ``dist``, its density there |

Other keys: ``plate`` (a name or a list, outermost first), ``shape`` (event shape of ``dist``, or of a flat
constrained parameter), ``observed`` (a data key or a variable), ``init`` (the value of ``v[t - 1]`` at the first
step of a time plate), ``centered`` (a latent Normal, StudentT or Cauchy: ``true`` samples it as written, ``false``
non-centred; by default NUTS samples it non-centred when its scale is a parameter: ``ppgen.models.reparam``).
"""

import keyword
from dataclasses import dataclass
from typing import Any

from ppgen.errors import SpecError
from ppgen.spec.constraints import check_constraint
from ppgen.spec.expr import DistributionCall, Expression, parse_distribution, parse_expression
from ppgen.spec.language import DISTRIBUTIONS
from ppgen.spec.ode import ODE_KEYS, parse_ode
from ppgen.suggest import CLAUSE, suggest

__all__ = ["Variable", "VARIABLE_KEYS", "parse_variable", "size_expression", "string_list"]

VARIABLE_KEYS = (
    "dist",
    "value",
    "factor",
    "observed",
    "plate",
    "shape",
    "init",
    "constraint",
    "lower",
    "upper",
    "centered",
    *ODE_KEYS,
)
_KINDS = ("dist", "value", "factor", "ode")
LOC_SCALE = ("Normal", "StudentT", "Cauchy")  # the distributions that ``centered`` applies to
_SUPPORT_KEYS = ("constraint", "lower", "upper")


@dataclass(frozen=True)
class Variable:
    """One variable of a spec: a distribution (``dist``), a computed ``value``, a ``factor`` term or an ``ode``
    solution, in ``plates`` (outermost first), with an optional event ``shape``, the data key or variable it
    ``observed``, the support it lives on (``constraint``, ``lower``, ``upper``), and its ``init`` in a time plate."""

    name: str
    dist: DistributionCall | None
    value: Expression | None
    observed: str | None
    plates: tuple[str, ...]
    shape: tuple[Expression, ...]
    depends: tuple[str, ...] = ()  # the variables it reads at this step, in order of appearance
    factor: Expression | None = None
    init: Expression | None = None
    constraint: str | None = None
    lower: Expression | None = None
    upper: Expression | None = None
    ode: Any = None  # ppgen.spec.ode.OdeSpec
    previous: tuple[str, ...] = ()  # the variables of its time plate whose previous step it reads
    centered: bool | None = None  # a loc-scale latent sampled as written (True), non-centred (False), or NUTS picks

    @property
    def is_stochastic(self) -> bool:
        """A sample site: a ``dist``, or a constrained parameter with a flat density."""
        return self.dist is not None or self.is_constrained

    @property
    def is_constrained(self) -> bool:
        return self.constraint is not None or self.lower is not None or self.upper is not None

    @property
    def is_computed(self) -> bool:
        """A value computed from others (``value`` or ``ode``), recorded as a deterministic site when it depends
        on a stochastic variable."""
        return self.value is not None or self.ode is not None

    @property
    def is_discrete(self) -> bool:
        return self.dist is not None and DISTRIBUTIONS[self.dist.name].support != "continuous"

    def expressions(self) -> list[Expression]:
        """The expressions evaluated at this variable's place (``init`` is evaluated before its time plate)."""
        params = list(self.dist.params.values()) if self.dist else []
        return [e for e in (self.value, self.factor, self.lower, self.upper) if e is not None] + params

    def names(self) -> tuple[str, ...]:
        """Every free name its expressions read at its place, in order."""
        names = [name for expression in self.expressions() for name in expression.names]
        return tuple(dict.fromkeys([*names, *(self.ode.names if self.ode is not None else ())]))


def string_list(value: Any, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise SpecError(f"{where}: expected a name or a list of names, not {value!r}")
    return tuple(items)


def size_expression(value: Any, where: str) -> Expression:
    """A plate size or shape entry: a non-negative int, or an expression of the data."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SpecError(f"{where}: expected an integer or the name of an integer in the data, not {value!r}")
    if isinstance(value, int) and value < 0:
        raise SpecError(f"{where}: a size cannot be negative ({value})")
    return parse_expression(str(value), where)


def _optional_expression(entry: dict, key: str, where: str) -> Expression | None:
    if key not in entry:
        return None
    value = entry[key]
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = repr(value)
    return parse_expression(value, f"{where}.{key}")


def _check_kind(entry: dict, where: str) -> str | None:
    kinds = [key for key in _KINDS if key in entry]
    if len(kinds) > 1 or (not kinds and not any(key in entry for key in _SUPPORT_KEYS)):
        raise SpecError(
            f"{where}: give exactly one of 'dist' (a distribution), 'value' (an expression), 'factor' (a log-density"
            " term) and 'ode' (an ODE solution), or a constrained parameter ('constraint', 'lower', 'upper')"
        )
    kind = kinds[0] if kinds else None
    allowed = {
        "dist": {"observed", "shape", "init", "centered", *_SUPPORT_KEYS},
        None: {"shape", *_SUPPORT_KEYS},
        "value": {"init"},
        "factor": set(),
        "ode": set(ODE_KEYS) - {"ode"},
    }[kind]
    for key in entry:
        if key not in (kind, "plate", *allowed):
            what = {None: "a constrained parameter without 'dist'"}.get(kind, f"'{kind}'")
            raise SpecError(f"{where}.{key}: does not go with {what}")
    if "observed" in entry and any(key in entry for key in _SUPPORT_KEYS):
        raise SpecError(f"{where}: an observed variable has no support of its own ('constraint', 'lower', 'upper')")
    return kind


def parse_variable(name: str, entry: Any, plates: dict[str, Expression]) -> Variable:
    """Parse one ``[variables]`` entry (a distribution string or a table); ``plates`` are the declared plates.
    Names are resolved later (``ppgen.spec.bayes``). Raises SpecError naming the key at fault."""
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
    kind = _check_kind(entry, where)
    observed = entry.get("observed")
    if observed is not None and not isinstance(observed, str):
        raise SpecError(f"{where}.observed: expected the name of a data key or variable, not {observed!r}")
    plate_names = string_list(entry.get("plate", []), f"{where}.plate")
    for plate in plate_names:
        if plate not in plates:
            hint = suggest(plate, plates, CLAUSE)
            raise SpecError(f"{where}.plate: unknown plate {plate!r}{hint} (declare it in [plates])")
    if len(set(plate_names)) != len(plate_names):
        raise SpecError(f"{where}.plate: a plate is listed twice in {list(plate_names)}")
    shape = entry.get("shape", [])
    shape = shape if isinstance(shape, list) else [shape]
    constraint = entry.get("constraint")
    check_constraint(name, constraint, "lower" in entry or "upper" in entry)
    _check_centered(entry, where)
    ode = None
    if kind == "ode":
        ode = parse_ode(name, entry)
    return Variable(
        name=name,
        dist=parse_distribution(entry["dist"], f"{where}.dist") if kind == "dist" else None,
        value=_optional_expression(entry, "value", where),
        observed=observed,
        plates=plate_names,
        shape=tuple(size_expression(size, f"{where}.shape[{i}]") for i, size in enumerate(shape)),
        factor=_optional_expression(entry, "factor", where),
        init=_optional_expression(entry, "init", where),
        constraint=constraint,
        lower=_optional_expression(entry, "lower", where),
        upper=_optional_expression(entry, "upper", where),
        ode=ode,
        centered=entry.get("centered"),
    )


def _check_centered(entry: dict, where: str) -> None:
    """``centered`` goes with a latent Normal, StudentT or Cauchy on the whole real line."""
    if "centered" not in entry:
        return
    if not isinstance(entry["centered"], bool):
        raise SpecError(f"{where}.centered: expected true or false, not {entry['centered']!r}")
    dist = entry["dist"].split("(", 1)[0].strip() if isinstance(entry["dist"], str) else None
    if "observed" in entry or any(key in entry for key in _SUPPORT_KEYS) or dist not in LOC_SCALE:
        raise SpecError(
            f"{where}.centered: applies to a latent {', '.join(LOC_SCALE)} variable without bounds, which can be"
            " sampled non-centred (loc + scale * z)"
        )
