"""ODE variables of declarative Bayesian models: a variable whose value is the solution of an initial value problem.

```toml
[variables.z]
ode = { u = "(alpha - beta * v) * u", v = "(-gamma + delta * u) * v" }  # d state / dt, one per state
initial = "z_init"   # [S, ...]: the states at t0, in the order of `ode`
t0 = 0               # a number or an expression (0 if not given)
times = "ts"         # [N]: the times to report, increasing, all > t0
solver = "dopri5"    # SOLVERS; rtol, atol, max_steps
```
The value is the solution at ``times``, [N, S, ...]. Derivative expressions read the states by name (each a
scalar, or the shape ``initial[i]`` has), the time as ``t`` (``time`` renames it) and any variable or data.
Solving is ``ppgen.models.ode.solve_ode``: diffrax on NumPyro, torchdiffeq on Pyro (explicit solvers only; the
others run there forward only, for the model's construction check).
"""

from dataclasses import dataclass
from typing import Any

from ppgen.errors import SpecError
from ppgen.spec.expr import Expression, parse_expression
from ppgen.suggest import CLAUSE, suggest

__all__ = ["ODE_KEYS", "SOLVERS", "Solver", "OdeSpec", "parse_ode"]

ODE_KEYS = ("ode", "initial", "t0", "times", "time", "solver", "rtol", "atol", "max_steps")


@dataclass(frozen=True)
class Solver:
    """An adaptive Runge-Kutta solver: its diffrax class, its torchdiffeq method (None: NumPyro only), stiffness."""

    diffrax: str
    torchdiffeq: str | None
    stiff: bool = False


SOLVERS = {
    "dopri5": Solver("Dopri5", "dopri5"),  # Dormand-Prince 5(4): Stan's rk45, scipy's RK45
    "dopri8": Solver("Dopri8", "dopri8"),
    "bosh3": Solver("Bosh3", "bosh3"),
    "heun": Solver("Heun", "adaptive_heun"),
    "tsit5": Solver("Tsit5", None),
    "kvaerno3": Solver("Kvaerno3", None, stiff=True),  # implicit (ESDIRK): for stiff problems, as Stan's bdf
    "kvaerno4": Solver("Kvaerno4", None, stiff=True),
    "kvaerno5": Solver("Kvaerno5", None, stiff=True),
}
"""The solvers an ODE variable may name. All adapt their step to ``rtol``/``atol``; the ``kvaerno`` ones are
implicit and solve stiff problems (on NumPyro only: torchdiffeq has no stiff solver)."""

DEFAULTS = {"t0": 0, "time": "t", "solver": "dopri5", "rtol": 1e-6, "atol": 1e-6, "max_steps": 4096}


@dataclass(frozen=True)
class OdeSpec:
    """A parsed ODE variable.

    name: the variable's name (error messages say ``variables.<name>``).
    states: the state names, in the order of the ``ode`` table (S of them).
    derivatives: d state / dt, one expression per state.
    initial: the states at ``t0``, [S, ...]; t0: the initial time (a scalar); times: [N], increasing, > t0.
    time_name: the name of the time in ``derivatives``.
    solver: a key of SOLVERS; rtol, atol: the step controller's tolerances; max_steps: steps before failing.
    """

    name: str
    states: tuple[str, ...]
    derivatives: tuple[Expression, ...]
    initial: Expression
    t0: Expression
    times: Expression
    time_name: str
    solver: str
    rtol: float
    atol: float
    max_steps: int

    @property
    def names(self) -> tuple[str, ...]:
        """The free names read (the states and the time excepted), in order of first appearance."""
        local = {*self.states, self.time_name}
        read = [n for e in self.derivatives for n in e.names if n not in local]
        read += [n for e in (self.initial, self.t0, self.times) for n in e.names]
        return tuple(dict.fromkeys(read))

    @property
    def stiff(self) -> bool:
        """Whether the solver is implicit (NumPyro only)."""
        return SOLVERS[self.solver].stiff


def _expression(entry: dict, key: str, where: str, numbers: bool = False) -> Expression:
    if key not in entry and key not in DEFAULTS:
        raise SpecError(f"{where}: an ODE variable needs {key!r}")
    value = entry.get(key, DEFAULTS.get(key))
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        value = repr(value)
    return parse_expression(value, f"{where}.{key}")


def _positive(entry: dict, key: str, where: str, kind: type) -> Any:
    value = entry.get(key, DEFAULTS[key])
    allowed = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, allowed) or not value > 0:
        expected = "a positive integer" if kind is int else "a positive number"
        raise SpecError(f"{where}.{key}: expected {expected}, not {value!r}")
    return kind(value)


def parse_ode(name: str, entry: dict) -> OdeSpec:
    """Parse the ODE keys (ODE_KEYS) of the table of variable ``name``; other keys are the caller's.

    Raises:
        SpecError naming ``variables.<name>.<key>``: an empty or malformed ``ode`` table, a state named like the
        time, an unknown solver (with a suggestion), tolerances or ``max_steps`` not positive.
    """
    where = f"variables.{name}"
    table = entry.get("ode")
    if not isinstance(table, dict) or not table:
        example = "{ u = '-k * u' }"
        raise SpecError(f"{where}.ode: expected a table of derivatives, one per state ({example}), not {table!r}")
    time_name = entry.get("time", DEFAULTS["time"])
    if not isinstance(time_name, str) or not time_name.isidentifier():
        raise SpecError(f"{where}.time: expected a name for the time in the derivatives, not {time_name!r}")
    for state in table:
        if not state.isidentifier():
            raise SpecError(f"{where}.ode.{state}: a state's name must be a Python identifier")
        if state == time_name:
            raise SpecError(f"{where}.ode.{state}: the state has the time's name; rename it or set 'time'")
    derivatives = tuple(parse_expression(text, f"{where}.ode.{state}") for state, text in table.items())
    solver = entry.get("solver", DEFAULTS["solver"])
    if solver not in SOLVERS:
        hint = suggest(str(solver), SOLVERS, CLAUSE)
        raise SpecError(f"{where}.solver: unknown solver {solver!r}{hint} (solvers: {', '.join(SOLVERS)})")
    return OdeSpec(
        name=name,
        states=tuple(table),
        derivatives=derivatives,
        initial=_expression(entry, "initial", where, numbers=True),
        t0=_expression(entry, "t0", where, numbers=True),
        times=_expression(entry, "times", where),
        time_name=time_name,
        solver=solver,
        rtol=_positive(entry, "rtol", where, float),
        atol=_positive(entry, "atol", where, float),
        max_steps=_positive(entry, "max_steps", where, int),
    )
