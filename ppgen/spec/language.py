"""What the Bayesian model language allows: its functions, operators and distributions.

These tables are the one definition of the language: ``ppgen.spec.expr`` parses and checks expressions
against them, and ``ppgen.models.backends.ArrayBackend`` implements each entry (a method per function and
operator, named by ``Function.method`` and the operator tables, and a ``distributions`` table keyed like
``DISTRIBUTIONS``). A new function or distribution goes here first, then into the backend.

Comparisons and ``and``/``or``/``not`` are elementwise and give booleans; in arithmetic a boolean counts as
the integer 0 or 1 (``sum(y > 0)`` counts).
"""

import ast
from dataclasses import dataclass

__all__ = [
    "Function",
    "FUNCTIONS",
    "BINARY_OPERATORS",
    "UNARY_OPERATORS",
    "COMPARISON_OPERATORS",
    "BOOLEAN_OPERATORS",
    "DistributionSignature",
    "DISTRIBUTIONS",
]


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
    "log_sum_exp": Function("logsumexp", 1, 2, "the same as logsumexp (Stan's name)"),
    "softmax": Function("softmax", 1, 2, "exp(x) / sum(exp(x)) along dim (default -1)"),
    "min": Function(
        "min",
        1,
        2,
        "min(x): the smallest element of x; min(a, b): the elementwise minimum of a and b, broadcast"
        " (Stan's and Python's rule: a second argument is never an axis)",
    ),
    "max": Function(
        "max",
        1,
        2,
        "max(x): the largest element of x; max(a, b): the elementwise maximum of a and b, broadcast"
        " (Stan's and Python's rule: a second argument is never an axis)",
    ),
    "clip": Function("clip", 3, 3, "clip(x, lower, upper): x limited to [lower, upper], elementwise"),
    "sd": Function("sd", 1, 2, "sample standard deviation (n - 1 divisor, as Stan's sd) of all elements, or along dim"),
    "var": Function("var", 1, 2, "sample variance (n - 1 divisor, as Stan's variance) of all elements, or along dim"),
    "where": Function(
        "where",
        3,
        3,
        "where(cond, a, b): a where cond holds, else b, elementwise and broadcast; a nonzero number counts as true",
    ),
    "dot": Function("dot", 2, 2, "dot(a, b): sum(a * b) over the last axis, broadcasting the leading axes"),
    "stack": Function("stack", 1, 2, "stack([a, b, ...], dim=0): a new axis at dim"),
    "concatenate": Function("concatenate", 1, 2, "concatenate([a, b, ...], dim=0) along an existing axis"),
    "transpose": Function("transpose", 1, 1, "swap the last two axes"),
    "cholesky": Function("cholesky", 1, 1, "lower Cholesky factor of a positive-definite matrix"),
    "eye": Function("eye", 1, 1, "eye(n): the n x n identity matrix"),
    "diag": Function("diag", 1, 1, "a vector's diagonal matrix, or a matrix's diagonal (numpy.diag)"),
    "zeros": Function("zeros", 1, 1, "zeros(n): a vector of n zeros"),
    "ones": Function("ones", 1, 1, "ones(n): a vector of n ones"),
    "arange": Function(
        "arange",
        1,
        2,
        "arange(n): the integers 0, ..., n - 1; arange(a, b): a, ..., b - 1. The bounds fix the shape, so they"
        " must be numbers or data, not parameters or a time plate's step",
    ),
    "cov_exp_quad": Function(
        "cov_exp_quad",
        3,
        3,
        "cov_exp_quad(x, alpha, rho): the squared-exponential kernel matrix alpha**2 exp(-|x_i - x_j|**2 / (2 rho**2))"
        " of points x, [N] or [N, D] (Stan's gp_exp_quad_cov; Rasmussen & Williams 2006, eq. 2.16)",
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
UNARY_OPERATORS: dict[type, str] = {ast.USub: "neg", ast.UAdd: "pos", ast.Not: "logical_not"}
COMPARISON_OPERATORS: dict[type, str] = {
    ast.Lt: "lt",
    ast.LtE: "le",
    ast.Gt: "gt",
    ast.GtE: "ge",
    ast.Eq: "eq",
    ast.NotEq: "ne",
}
"""Elementwise, giving booleans; a chain ``a < b < c`` means ``(a < b) and (b < c)``, as in Python."""
BOOLEAN_OPERATORS: dict[type, str] = {ast.And: "logical_and", ast.Or: "logical_or"}
"""Elementwise (both sides are always evaluated): ``a and b and c`` is ``(a and b) and c``."""


@dataclass(frozen=True)
class DistributionSignature:
    """A whitelisted distribution: its parameters in positional order, those required, a group of
    alternatives of which exactly one must be given (e.g. probs | logits), and its ``support``: "continuous",
    "finite" (discrete with finitely many values: a latent one is marginalized by enumeration) or "countable"
    (discrete and unbounded: it can be observed, not latent)."""

    params: tuple[str, ...]
    required: tuple[str, ...] = ()
    one_of: tuple[str, ...] = ()
    doc: str = ""
    support: str = "continuous"


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
    "Bernoulli": DistributionSignature(("probs", "logits"), one_of=("probs", "logits"), support="finite"),
    "Binomial": DistributionSignature(
        ("total_count", "probs", "logits"), ("total_count",), ("probs", "logits"), support="finite"
    ),
    "Poisson": DistributionSignature(("rate",), ("rate",), support="countable"),
    "NegativeBinomial": DistributionSignature(
        ("total_count", "probs", "logits"),
        ("total_count",),
        ("probs", "logits"),
        doc="successes before total_count failures; probs is the success probability (torch's convention)",
        support="countable",
    ),
    "Categorical": DistributionSignature(
        ("probs", "logits"),
        one_of=("probs", "logits"),
        doc="values 0, ..., K - 1 (0-based, like indexing); the last axis of probs or logits has the K categories",
        support="finite",
    ),
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
}
