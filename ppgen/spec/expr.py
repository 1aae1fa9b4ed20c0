"""The expression language of declarative Bayesian models: a whitelist over Python's ``ast``, never ``eval``.

Expressions are parsed once (``parse_expression``; ``parse_distribution`` for a variable's ``dist``),
checked against the whitelists below (node types, operators, ``FUNCTIONS``, ``DISTRIBUTIONS``), and
evaluated by walking the tree with a *backend*: a namespace with one method per operator and function and a
``distributions`` table (``ppgen.models.backends`` has one for torch/Pyro and one for jax/NumPyro). These
tables are the one definition of the language; a backend only implements them.

Allowed: int and float numbers, names, ``+ - * / ** @``, unary ``-``/``+``, indexing and slicing
(``theta[group - 1]``, ``y[K:]``, ``x[:, None]``), lists/tuples as function arguments (``stack([a, b])``) and
calls of whitelisted functions, positionally. Keyword arguments only in distribution calls
(``Bernoulli(logits=eta)``). Anything else raises ``SpecError`` naming the spec key and the construct.
"""

import ast
import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ppgen.errors import SpecError

__all__ = [
    "Function",
    "FUNCTIONS",
    "DistributionSignature",
    "DISTRIBUTIONS",
    "BINARY_OPERATORS",
    "UNARY_OPERATORS",
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


@dataclass(frozen=True)
class Function:
    """A whitelisted function: the backend method that implements it, how many arguments it takes, its doc."""

    method: str
    min_args: int
    max_args: int
    doc: str


FUNCTIONS: dict[str, Function] = {
    "exp": Function("exp", 1, 1, "e**x, elementwise"),
    "log": Function("log", 1, 1, "natural logarithm, elementwise"),
    "log1p": Function("log1p", 1, 1, "log(1 + x), accurate for small x"),
    "expm1": Function("expm1", 1, 1, "exp(x) - 1, accurate for small x"),
    "sqrt": Function("sqrt", 1, 1, "square root, elementwise"),
    "abs": Function("abs", 1, 1, "absolute value, elementwise"),
    "sigmoid": Function("sigmoid", 1, 1, "1 / (1 + exp(-x))"),
    "inv_logit": Function("sigmoid", 1, 1, "the same as sigmoid (Stan's name)"),
    "logit": Function("logit", 1, 1, "log(p / (1 - p))"),
    "softplus": Function("softplus", 1, 1, "log(1 + exp(x))"),
    "tanh": Function("tanh", 1, 1, "hyperbolic tangent"),
    "sum": Function("sum", 1, 2, "sum(x) over all elements, sum(x, dim) over one axis"),
    "mean": Function("mean", 1, 2, "mean(x) over all elements, mean(x, dim) over one axis"),
    "cumsum": Function("cumsum", 1, 2, "cumulative sum along dim (default -1)"),
    "logsumexp": Function("logsumexp", 1, 2, "log(sum(exp(x))) along dim (default -1)"),
    "softmax": Function("softmax", 1, 2, "exp(x) / sum(exp(x)) along dim (default -1)"),
    "stack": Function("stack", 1, 2, "stack([a, b, ...], dim=0): a new axis at dim"),
    "concatenate": Function("concatenate", 1, 2, "concatenate([a, b, ...], dim=0) along an existing axis"),
    "transpose": Function("transpose", 1, 1, "swap the last two axes"),
    "cholesky": Function("cholesky", 1, 1, "lower Cholesky factor of a positive-definite matrix"),
    "eye": Function("eye", 1, 1, "eye(n): the n x n identity matrix"),
    "diag": Function("diag", 1, 1, "a vector's diagonal matrix, or a matrix's diagonal (numpy.diag)"),
    "zeros": Function("zeros", 1, 1, "zeros(n): a vector of n zeros"),
    "ones": Function("ones", 1, 1, "ones(n): a vector of n ones"),
    "cov_exp_quad": Function(
        "cov_exp_quad",
        3,
        3,
        "cov_exp_quad(x, alpha, rho): the squared-exponential kernel matrix alpha**2 exp(-|x_i - x_j|**2 / (2 rho**2))"
        " of points x, [N] or [N, D] (Stan's gp_exp_quad_cov; Rasmussen & Williams 2006, eq. 2.16)",
    ),
    "lags": Function(
        "lags",
        2,
        2,
        "lags(y, K): the [T - K, K] matrix whose row t holds y[t + K - 1], ..., y[t] (column k is lag k + 1),"
        " so that an AR(K) mean is alpha + lags(y, K) @ beta for y[K:]",
    ),
    "arma11_errors": Function(
        "arma11_errors",
        4,
        4,
        "arma11_errors(y, mu, phi, theta): the ARMA(1, 1) one-step errors err[t] = y[t] - mu - phi y[t-1]"
        " - theta err[t-1], with y[-1] = mu and err[-1] = 0 (Stan's arma11 example); [T]",
    ),
}

BINARY_OPERATORS: dict[type, str] = {
    ast.Add: "add",
    ast.Sub: "sub",
    ast.Mult: "mul",
    ast.Div: "truediv",
    ast.Pow: "pow",
    ast.MatMult: "matmul",
}
UNARY_OPERATORS: dict[type, str] = {ast.USub: "neg", ast.UAdd: "pos"}

_OPERATOR_SYMBOLS = {
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
    ast.Not: "not",
    ast.Invert: "~",
}


@dataclass(frozen=True)
class DistributionSignature:
    """A whitelisted distribution: its parameters in positional order, those required, and a group of
    alternatives of which exactly one must be given (e.g. probs | logits)."""

    params: tuple[str, ...]
    required: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()
    doc: str = ""


DISTRIBUTIONS: dict[str, DistributionSignature] = {
    "Normal": DistributionSignature(("loc", "scale"), ("loc", "scale")),
    "HalfNormal": DistributionSignature(("scale",), ("scale",)),
    "Cauchy": DistributionSignature(("loc", "scale"), ("loc", "scale")),
    "HalfCauchy": DistributionSignature(("scale",), ("scale",)),
    "StudentT": DistributionSignature(("df", "loc", "scale"), ("df",), doc="loc = 0 and scale = 1 by default"),
    "HalfStudentT": DistributionSignature(
        ("df", "scale"), ("df",), doc="|t| for t ~ StudentT(df, 0, scale): Stan's student_t on a <lower=0> variable"
    ),
    "LogNormal": DistributionSignature(("loc", "scale"), ("loc", "scale")),
    "Exponential": DistributionSignature(("rate",), ("rate",)),
    "Gamma": DistributionSignature(("concentration", "rate"), ("concentration", "rate")),
    "InverseGamma": DistributionSignature(("concentration", "rate"), ("concentration", "rate")),
    "Beta": DistributionSignature(("concentration1", "concentration0"), ("concentration1", "concentration0")),
    "Uniform": DistributionSignature(("low", "high"), ("low", "high")),
    "Bernoulli": DistributionSignature(("probs", "logits"), one_of=("probs", "logits")),
    "Binomial": DistributionSignature(("total_count", "probs", "logits"), ("total_count",), ("probs", "logits")),
    "Poisson": DistributionSignature(("rate",), ("rate",)),
    "NegativeBinomial": DistributionSignature(
        ("total_count", "probs", "logits"),
        ("total_count",),
        ("probs", "logits"),
        doc="successes before total_count failures; probs is the success probability (torch's convention)",
    ),
    "Categorical": DistributionSignature(("probs", "logits"), one_of=("probs", "logits")),
    "Dirichlet": DistributionSignature(("concentration",), ("concentration",)),
    "MultivariateNormal": DistributionSignature(
        ("loc", "covariance_matrix", "scale_tril", "precision_matrix"),
        ("loc",),
        ("covariance_matrix", "scale_tril", "precision_matrix"),
    ),
    "LKJCholesky": DistributionSignature(("dim", "concentration"), ("dim",), doc="concentration = 1 by default"),
    "Flat": DistributionSignature(
        ("lower", "upper"),
        doc="improper flat prior on the real line, on (lower, inf), (-inf, upper) or (lower, upper);"
        " samplers add the Jacobian of the support's transform. Use keywords: Flat(lower=0)",
    ),
    "FlatOrdered": DistributionSignature(
        ("size",), ("size",), doc="improper flat prior on increasing vectors of length size (Stan's ordered[size])"
    ),
    "NormalMixture": DistributionSignature(
        ("weights", "loc", "scale"),
        ("weights", "loc", "scale"),
        doc="sum_k weights[k] Normal(loc[k], scale[k]); the last axis indexes the components",
    ),
}

_CONSTRUCTS: dict[type, str] = {
    ast.Attribute: "attribute access",
    ast.Lambda: "lambda",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.DictComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.Compare: "a comparison",
    ast.BoolOp: "a boolean operator (and/or)",
    ast.IfExp: "a conditional expression",
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


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


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
            case _:
                self.check(index, depth)

    def check_call(self, node: ast.Call, depth: int) -> None:
        if not isinstance(node.func, ast.Name):
            raise self.reject(node.func) if isinstance(node.func, ast.Attribute) else self.fail("calling an expression")
        name = node.func.id
        if name in DISTRIBUTIONS:
            raise self.fail(f"the distribution {name}(...) is only allowed as a variable's whole 'dist'")
        if name not in FUNCTIONS:
            raise self.fail(f"unknown function {name!r}{_suggest(name, FUNCTIONS)}")
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
        raise SpecError(f"{where}: unknown distribution {name!r}{_suggest(name, DISTRIBUTIONS)} in {_quote(text)}")
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
                f"{where}: {name} has no parameter {keyword.arg!r}{_suggest(keyword.arg, signature.params)}"
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
        case ast.Subscript(value=value, slice=index):
            return backend.getitem(_evaluate(value, env, backend), _index(index, env, backend))
        case ast.List(elts=elements) | ast.Tuple(elts=elements):
            return [_evaluate(element, env, backend) for element in elements]
        case ast.Call(func=ast.Name(id=name), args=args):
            method = getattr(backend, FUNCTIONS[name].method)
            return method(*(_evaluate(argument, env, backend) for argument in args))
    raise AssertionError(f"unchecked node {type(node).__name__}")  # parse_* never lets one through


def _index(node: ast.AST, env: Mapping[str, Any], backend: Any) -> Any:
    match node:
        case ast.Slice(lower=lower, upper=upper, step=step):
            return slice(*(None if part is None else _evaluate(part, env, backend) for part in (lower, upper, step)))
        case ast.Tuple(elts=elements):
            return tuple(_index(element, env, backend) for element in elements)
    return _evaluate(node, env, backend)


def build_distribution(call: DistributionCall, env: Mapping[str, Any], backend: Any) -> Any:
    """The backend's distribution for a parsed call, its parameters evaluated in ``env``."""
    params = {param: evaluate(expression, env, backend) for param, expression in call.params.items()}
    return backend.distributions[call.name](**params)
