"""What the Bayesian model language allows: its functions, operators and distributions.

These tables are the one definition of the language: ``ppgen.spec.expr`` parses and checks expressions
against them, and ``ppgen.models.backends.ArrayBackend`` implements each entry (a method per function and
operator, named by ``Function.method`` and the operator tables, and a ``distributions`` table keyed like
``DISTRIBUTIONS``). A new function or distribution goes here first, then into the backend.
"""

import ast
from dataclasses import dataclass

__all__ = [
    "Function",
    "FUNCTIONS",
    "BINARY_OPERATORS",
    "UNARY_OPERATORS",
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
