"""Time plates: plates whose variables are computed one step at a time, so that a state can be carried from one
step to the next (recursions, state-space models, hidden Markov models).

A plate declared with a ``step`` name is a time plate::

    [plates]
    time = { size = "T", step = "t" }    # t = 0, 1, ..., T - 1, a scalar inside each step

    [variables]
    level = { dist = "Normal(level[t - 1], sigma_level)", plate = "time", init = "level0" }
    y = { dist = "Normal(level, sigma_obs)", plate = "time", observed = "y" }

Inside a step, a variable of the same time plate read by its name (or as ``v[t]``) is its value at this step, and
``v[t - 1]`` is its value at the previous step: the variable's ``init`` at t = 0. Data is indexed explicitly
(``y[t - 1]``). Outside the plate, a time-plate variable is the stacked array [T, ...]. This module checks those
reads and rewrites them for the interpreter (``ppgen.models.interpreter``), which compiles the steps to NumPyro's
``scan`` or to a loop under ``pyro.markov``.
"""

import ast
import copy
from dataclasses import dataclass

from ppgen.errors import SpecError
from ppgen.spec.expr import Expression

__all__ = ["TimePlate", "previous_name", "rewrite_step_reads"]


@dataclass(frozen=True)
class TimePlate:
    """A time plate's ``step`` name, its variables (``members``, in dependency order) and those whose previous
    value some member reads (``carried``: their ``init`` starts the carry)."""

    step: str
    members: tuple[str, ...]
    carried: tuple[str, ...]


def previous_name(name: str) -> str:
    """The environment key of a variable's value at the previous step (not an identifier, so never a user name)."""
    return f"{name}[t-1]"


def _is_step(node: ast.AST, step: str) -> bool:
    return isinstance(node, ast.Name) and node.id == step


def _is_previous_step(node: ast.AST, step: str) -> bool:
    return (
        isinstance(node, ast.BinOp)
        and isinstance(node.op, ast.Sub)
        and _is_step(node.left, step)
        and isinstance(node.right, ast.Constant)
        and node.right.value == 1
        and not isinstance(node.right.value, bool)
    )


class _StepReads(ast.NodeTransformer):
    def __init__(self, expression: Expression, step: str, members: set[str]):
        self.expression, self.step, self.members = expression, step, members
        self.previous: dict[str, None] = {}

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id in self.members:
            name = node.value.id
            if _is_step(node.slice, self.step):
                return ast.Name(id=name, ctx=ast.Load())
            if _is_previous_step(node.slice, self.step):
                self.previous.setdefault(name)
                return ast.Name(id=previous_name(name), ctx=ast.Load())
            if any(_is_step(child, self.step) for child in ast.walk(node.slice)):
                raise SpecError(
                    f"{self.expression.where}: {ast.unparse(node)} reads another step of {name!r}; inside its time"
                    f" plate a variable is read at this step ({name} or {name}[{self.step}]) or the previous one"
                    f" ({name}[{self.step} - 1]): carry longer histories in a vector state"
                )
        return self.generic_visit(node)


def rewrite_step_reads(expression: Expression, step: str, members: set[str]) -> tuple[Expression, tuple[str, ...]]:
    """``v[t]`` -> ``v`` and ``v[t - 1]`` -> the previous value, for the time plate's ``members`` v, in an expression
    of a variable of that plate. Returns the rewritten expression (its ``names`` without the previous values) and
    the members whose previous value it reads. Raises SpecError for a read of any other step (``v[t - 2]``)."""
    reads = _StepReads(expression, step, members)
    tree = reads.visit(copy.deepcopy(expression.tree))
    if not reads.previous and tree == expression.tree:
        return expression, ()
    names = tuple(
        dict.fromkeys(
            node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and not node.id.endswith("[t-1]")
        )
    )
    ordered = tuple(name for name in expression.names if name in names)
    return Expression(expression.text, expression.where, tree, ordered), tuple(reads.previous)
