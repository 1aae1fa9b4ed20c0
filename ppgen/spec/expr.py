"""The expression language of declarative Bayesian models: a whitelist over Python's ``ast``, never ``eval``.

Expressions are parsed once (``parse_expression``; ``parse_distribution`` for a variable's ``dist``),
checked against the node types below and the language's tables (``ppgen.spec.language``: operators,
``FUNCTIONS``, ``DISTRIBUTIONS``), and evaluated by walking the tree with a *backend*: a namespace with one
method per operator and function and a ``distributions`` table (``ppgen.models.backends.ArrayBackend``, made
for torch/Pyro or for jax/NumPyro).

Allowed: int and float numbers, names, ``+ - * / ** @``, unary ``-``/``+``, comparisons
``< <= > >= == !=`` (chained as in Python: ``a < b < c``), ``and``/``or``/``not`` (all elementwise, giving
booleans that count as 0/1 in arithmetic), indexing and slicing (``theta[group - 1]``, ``Gamma[z]``, ``y[t - 1]``,
``y[K:]``, ``x[:, None]``; integer indices, which may be data or a traced scalar, but never a comparison: a
boolean mask's shape depends on the values), lists/tuples as function arguments (``stack([a, b])``) and calls
of whitelisted functions, positionally. Keyword arguments only in distribution calls
(``Bernoulli(logits=eta)``). Anything else raises ``SpecError`` naming the spec key and the construct.
"""

import ast
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ppgen.errors import SpecError
from ppgen.spec.language import (
    BINARY_OPERATORS,
    BOOLEAN_OPERATORS,
    COMPARISON_OPERATORS,
    DISTRIBUTIONS,
    FUNCTIONS,
    UNARY_OPERATORS,
)
from ppgen.suggest import CLAUSE, suggest

__all__ = [
    "Expression",
    "DistributionCall",
    "UnboundName",
    "parse_expression",
    "parse_distribution",
    "evaluate",
    "build_distribution",
]

MAX_LENGTH = 10_000
MAX_DEPTH = 64

_OPERATOR_SYMBOLS = {
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Invert: "~",
    ast.Is: "is",
    ast.IsNot: "is not",
    ast.In: "in",
    ast.NotIn: "not in",
}


_CONSTRUCTS: dict[type, str] = {
    ast.Attribute: "attribute access",
    ast.Lambda: "lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.IfExp: "a conditional expression (use where(cond, a, b))",
    ast.Dict: "a dict",
    ast.Set: "a set",
    ast.JoinedStr: "an f-string",
    ast.FormattedValue: "an f-string",
    ast.NamedExpr: "an assignment expression",
    ast.Starred: "a starred argument",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
}


class UnboundName(LookupError):
    """An expression read a name that the environment does not hold (data that was not given)."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


@dataclass(frozen=True)
class Expression:
    """A parsed, whitelisted expression. ``where`` is the spec key it came from; ``names`` its free names
    in order of first appearance."""

    text: str
    where: str
    tree: ast.expr
    names: tuple[str, ...]


@dataclass(frozen=True)
class DistributionCall:
    """A parsed distribution: its name and one expression per given parameter (positional ones named)."""

    name: str
    params: dict[str, Expression]
    text: str
    where: str

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for expression in self.params.values() for name in expression.names))


def _quote(text: str) -> str:
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _parse(text: Any, where: str) -> ast.expr:
    if not isinstance(text, str):
        raise SpecError(f"{where}: expected an expression string, not {type(text).__name__} {text!r}")
    if len(text) > MAX_LENGTH:
        raise SpecError(f"{where}: the expression is longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise SpecError(f"{where}: the expression is empty")
    try:
        return ast.parse(text.strip(), mode="eval").body
    except SyntaxError as error:
        raise SpecError(f"{where}: {_quote(text)} is not a valid expression ({error.msg})") from None
    except (ValueError, RecursionError, MemoryError):  # null bytes; nesting deeper than the parser handles
        raise SpecError(f"{where}: {_quote(text)} is not a valid expression (too deeply nested)") from None


class _Checker:
    """Walks a parsed tree, rejecting every node outside the whitelist and collecting free names."""

    def __init__(self, text: str, where: str):
        self.text, self.where = text, where
        self.names: dict[str, None] = {}

    def fail(self, message: str) -> SpecError:
        return SpecError(f"{self.where}: {message} in {_quote(self.text)}")

    def reject(self, node: ast.AST) -> SpecError:
        construct = _CONSTRUCTS.get(type(node), type(node).__name__)
        if isinstance(node, ast.Attribute):
            construct = f"attribute access ('.{node.attr}')"
        return self.fail(f"{construct} is not allowed")

    def check(self, node: ast.AST, depth: int = 0, in_arguments: bool = False) -> None:
        if depth > MAX_DEPTH:
            raise self.fail(f"nesting deeper than {MAX_DEPTH} levels")
        depth += 1
        match node:
            case ast.Constant(value=value):
                if isinstance(value, bool) or not isinstance(value, int | float | type(None) | type(Ellipsis)):
                    kind = "a string" if isinstance(value, str | bytes) else f"the constant {value!r}"
                    raise self.fail(f"{kind} is not allowed")
            case ast.Name(id=name):
                self.names.setdefault(name)
            case ast.BinOp(left=left, op=op, right=right):
                if type(op) not in BINARY_OPERATORS:
                    raise self.fail(f"operator {_OPERATOR_SYMBOLS.get(type(op), type(op).__name__)} is not allowed")
                self.check(left, depth)
                self.check(right, depth)
            case ast.UnaryOp(op=op, operand=operand):
                if type(op) not in UNARY_OPERATORS:
                    raise self.fail(f"operator {_OPERATOR_SYMBOLS.get(type(op), type(op).__name__)} is not allowed")
                self.check(operand, depth)
            case ast.Compare(left=left, ops=ops, comparators=comparators):
                for op in ops:
                    if type(op) not in COMPARISON_OPERATORS:
                        raise self.fail(f"operator {_OPERATOR_SYMBOLS[type(op)]} is not allowed")
                for operand in (left, *comparators):
                    self.check(operand, depth)
            case ast.BoolOp(values=values):
                for operand in values:
                    self.check(operand, depth)
            case ast.Subscript(value=value, slice=index):
                self.check(value, depth)
                self.check_index(index, depth)
            case ast.List(elts=elements) | ast.Tuple(elts=elements):
                if not in_arguments:
                    raise self.fail("a list or tuple outside a function's arguments is not allowed")
                for element in elements:
                    self.check(element, depth, in_arguments=True)
            case ast.Call():
                self.check_call(node, depth)
            case _:
                raise self.reject(node)

    def check_index(self, index: ast.AST, depth: int) -> None:
        match index:
            case ast.Slice(lower=lower, upper=upper, step=step):
                for part in (lower, upper, step):
                    if part is not None:
                        self.check(part, depth)
            case ast.Tuple(elts=elements):
                for element in elements:
                    if isinstance(element, ast.Tuple):
                        raise self.fail("a nested tuple index is not allowed")
                    self.check_index(element, depth)
            case ast.Compare() | ast.BoolOp() | ast.UnaryOp(op=ast.Not()):
                raise self.fail("indexing by a comparison (a boolean mask) is not allowed: use where(cond, a, b)")
            case _:
                self.check(index, depth)

    def check_call(self, node: ast.Call, depth: int) -> None:
        if not isinstance(node.func, ast.Name):
            raise self.reject(node.func) if isinstance(node.func, ast.Attribute) else self.fail("calling an expression")
        name = node.func.id
        if name in DISTRIBUTIONS:
            raise self.fail(f"the distribution {name}(...) is only allowed as a variable's whole 'dist'")
        if name not in FUNCTIONS:
            raise self.fail(f"unknown function {name!r}{suggest(name, FUNCTIONS, CLAUSE)}")
        if node.keywords:
            raise self.fail(
                f"keyword arguments ({name}(... {node.keywords[0].arg}=...)) are only allowed for distributions"
            )
        function = FUNCTIONS[name]
        if not function.min_args <= len(node.args) <= function.max_args:
            low, high = function.min_args, function.max_args
            expected = f"{low} argument{'s' if low > 1 else ''}" if low == high else f"{low} to {high} arguments"
            raise self.fail(f"{name}() takes {expected}, not {len(node.args)}")
        for argument in node.args:
            self.check(argument, depth, in_arguments=True)


def _checked_expression(tree: ast.expr, text: str, where: str) -> Expression:
    checker = _Checker(text, where)
    checker.check(tree)
    return Expression(text, where, tree, tuple(checker.names))


def parse_expression(text: str, where: str) -> Expression:
    """Parse and whitelist an arithmetic expression; ``where`` (e.g. ``variables.theta.value``) names the
    spec key in error messages. Raises SpecError for anything outside the language."""
    return _checked_expression(_parse(text, where), text, where)


def parse_distribution(text: str, where: str) -> DistributionCall:
    """Parse a distribution call such as ``Normal(mu, sigma)`` or ``Bernoulli(logits=eta)``.

    Positional arguments take the parameters in ``DISTRIBUTIONS[name].params`` order; keywords name them.
    """
    tree = _parse(text, where)
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)):
        raise SpecError(f"{where}: expected a distribution call such as 'Normal(0, 1)', not {_quote(text)}")
    name = tree.func.id
    if name not in DISTRIBUTIONS:
        hint = suggest(name, DISTRIBUTIONS, CLAUSE)
        raise SpecError(f"{where}: unknown distribution {name!r}{hint} in {_quote(text)}")
    signature = DISTRIBUTIONS[name]
    if len(tree.args) > len(signature.params):
        raise SpecError(
            f"{where}: {name} takes at most {len(signature.params)} positional arguments"
            f" ({', '.join(signature.params)}), not {len(tree.args)}"
        )
    arguments: dict[str, ast.expr] = dict(zip(signature.params, tree.args))
    for keyword in tree.keywords:
        if keyword.arg is None:
            raise SpecError(f"{where}: '**' arguments are not allowed in {_quote(text)}")
        if keyword.arg not in signature.params:
            raise SpecError(
                f"{where}: {name} has no parameter {keyword.arg!r}{suggest(keyword.arg, signature.params, CLAUSE)}"
                f" (parameters: {', '.join(signature.params)})"
            )
        if keyword.arg in arguments:
            raise SpecError(f"{where}: {name} got parameter {keyword.arg!r} twice")
        arguments[keyword.arg] = keyword.value
    missing = [param for param in signature.required if param not in arguments]
    if missing:
        raise SpecError(f"{where}: {name} needs {', '.join(missing)} in {_quote(text)}")
    if signature.one_of and sum(param in arguments for param in signature.one_of) != 1:
        raise SpecError(f"{where}: {name} needs exactly one of {' | '.join(signature.one_of)} in {_quote(text)}")
    params = {param: _checked_expression(node, text, where) for param, node in arguments.items()}
    return DistributionCall(name, params, text, where)


def evaluate(expression: Expression, env: Mapping[str, Any], backend: Any) -> Any:
    """The value of a parsed expression, with names read from ``env`` and operations from ``backend``.

    Raises UnboundName for a name that ``env`` lacks.
    """
    return _evaluate(expression.tree, env, backend)


def _evaluate(node: ast.AST, env: Mapping[str, Any], backend: Any) -> Any:
    match node:
        case ast.Constant(value=value):
            return value
        case ast.Name(id=name):
            try:
                return env[name]
            except KeyError:
                raise UnboundName(name) from None
        case ast.BinOp(left=left, op=op, right=right):
            operation = getattr(backend, BINARY_OPERATORS[type(op)])
            return operation(_evaluate(left, env, backend), _evaluate(right, env, backend))
        case ast.UnaryOp(op=op, operand=operand):
            return getattr(backend, UNARY_OPERATORS[type(op)])(_evaluate(operand, env, backend))
        case ast.Compare(left=left, ops=ops, comparators=comparators):
            return _compare(left, ops, comparators, env, backend)
        case ast.BoolOp(op=op, values=values):
            operation = getattr(backend, BOOLEAN_OPERATORS[type(op)])
            result = _evaluate(values[0], env, backend)
            for value in values[1:]:
                result = operation(result, _evaluate(value, env, backend))
            return result
        case ast.Subscript(value=value, slice=index):
            return backend.getitem(_evaluate(value, env, backend), _index(index, env, backend))
        case ast.List(elts=elements) | ast.Tuple(elts=elements):
            return [_evaluate(element, env, backend) for element in elements]
        case ast.Call(func=ast.Name(id=name), args=args):
            method = getattr(backend, FUNCTIONS[name].method)
            return method(*(_evaluate(argument, env, backend) for argument in args))
    raise AssertionError(f"unchecked node {type(node).__name__}")  # parse_* never lets one through


def _compare(left: ast.expr, ops: list, comparators: list, env: Mapping[str, Any], backend: Any) -> Any:
    """``a < b < c`` as Python means it, elementwise: ``(a < b) and (b < c)``, each operand evaluated once."""
    value, result = _evaluate(left, env, backend), None
    for op, node in zip(ops, comparators):
        right = _evaluate(node, env, backend)
        test = getattr(backend, COMPARISON_OPERATORS[type(op)])(value, right)
        result = test if result is None else backend.logical_and(result, test)
        value = right
    return result


def _index(node: ast.AST, env: Mapping[str, Any], backend: Any) -> Any:
    match node:
        case ast.Slice(lower=lower, upper=upper, step=step):
            return slice(*(None if part is None else _evaluate(part, env, backend) for part in (lower, upper, step)))
        case ast.Tuple(elts=elements):
            return tuple(_index(element, env, backend) for element in elements)
    return _evaluate(node, env, backend)


def build_distribution(
    call: DistributionCall, env: Mapping[str, Any], backend: Any, check: Callable[[dict], None] | None = None
) -> Any:
    """The backend's distribution for a parsed call, its parameters evaluated in ``env`` (and given to ``check``,
    which may raise, before the library sees them)."""
    params = {param: evaluate(expression, env, backend) for param, expression in call.params.items()}
    if check is not None:
        check(params)
    return backend.distributions[call.name](**params)
