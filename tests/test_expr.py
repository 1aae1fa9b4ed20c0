"""The expression language: whitelist parsing (fuzzed), and the torch and jax backends agreeing on every
function, operator and distribution."""

import jax
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppgen.errors import SpecError
from ppgen.models.backends import numpyro_backend, pyro_backend
from ppgen.spec.expr import build_distribution, evaluate, parse_distribution, parse_expression
from ppgen.spec.language import (
    BINARY_OPERATORS,
    BOOLEAN_OPERATORS,
    COMPARISON_OPERATORS,
    DISTRIBUTIONS,
    FUNCTIONS,
    UNARY_OPERATORS,
)

WHERE = "variables.theta.value"


def test_names_in_order_of_appearance():
    expression = parse_expression("mu + tau * theta_raw[group - 1] + mu", WHERE)
    assert expression.names == ("mu", "tau", "theta_raw", "group")


def test_distribution_arguments_are_named_by_position_and_keyword():
    call = parse_distribution("Binomial(n, logits=alpha + x)", "variables.k.dist")
    assert call.name == "Binomial" and list(call.params) == ["total_count", "logits"]
    assert call.names == ("n", "alpha", "x")


@pytest.mark.parametrize(
    "text, construct",
    [
        ("x.__class__", "attribute access ('.__class__')"),
        ("x.__class__.__bases__[0]", "attribute access"),
        ("import os", "not a valid expression"),
        ("__import__('os')", "unknown function '__import__'"),
        ("lambda: 1", "lambda"),
        ("[i for i in x]", "a comprehension"),
        ("sum(i for i in x)", "a comprehension"),
        ("foo(x)", "unknown function 'foo'"),
        ("eval('1')", "unknown function 'eval'"),
        ("exp(x=1)", "keyword arguments"),
        ("a in b", "operator in is not allowed"),
        ("a is not b", "operator is not is not allowed"),
        ("a < b in c", "operator in is not allowed"),
        ("x[y > 0]", "indexing by a comparison (a boolean mask)"),
        ("M[:, not y]", "indexing by a comparison"),
        ("x[a and b]", "indexing by a comparison"),
        ("a if b else c", "a conditional expression (use where(cond, a, b))"),
        ("'text'", "a string"),
        ("True", "the constant True"),
        ("1j", "the constant 1j"),
        ("x // 2", "operator //"),
        ("~x", "operator ~"),
        ("[1, 2]", "a list or tuple outside a function's arguments"),
        ("{1: 2}", "a dict"),
        ("exp(*x)", "a starred argument"),
        ("f'{x}'", "an f-string"),
        ("(y := 1)", "an assignment expression"),
        ("exp(1)(2)", "calling an expression"),
        ("Normal(0, 1)", "the distribution Normal(...)"),
        ("exp(x, y)", "exp() takes 1 argument, not 2"),
        ("min(x, y, z)", "min() takes 1 to 2 arguments, not 3"),
        ("where(x > 0, x)", "where() takes 3 arguments, not 2"),
        ("-" * 100 + "x", "nesting deeper than"),
        ("-" * 5000 + "x", "not a valid expression"),
        ("(" * 300 + "x" + ")" * 300, "not a valid expression"),
        ("x\x00", "not a valid expression"),
        ("", "empty"),
    ],
)
def test_rejected_constructs_name_the_variable(text, construct):
    with pytest.raises(SpecError) as error:
        parse_expression(text, WHERE)
    message = str(error.value)
    assert message.startswith(f"{WHERE}: ") and construct in message and "\n" not in message


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("Normall(0, 1)", "unknown distribution 'Normall'; did you mean 'Normal'?"),
        ("Normal(0)", "Normal needs scale"),
        ("Normal(0, sd=1)", "Normal has no parameter 'sd'"),
        ("Normal(0, 1, 2)", "at most 2 positional arguments"),
        ("Normal(0, loc=1)", "got parameter 'loc' twice"),
        ("Bernoulli(probs=p, logits=l)", "exactly one of probs | logits"),
        ("Bernoulli()", "exactly one of probs | logits"),
        ("mu + 1", "expected a distribution call"),
        ("Normal(0, exp(x).real)", "attribute access"),
        ("Normal(0, Normal(0, 1))", "the distribution Normal(...)"),
        ("Normal(**d)", "'**' arguments"),
        (3, "expected an expression string"),
    ],
)
def test_rejected_distributions_name_the_variable(text, fragment):
    with pytest.raises(SpecError) as error:
        parse_distribution(text, "variables.y.dist")
    assert str(error.value).startswith("variables.y.dist: ") and fragment in str(error.value)


TOKENS = [
    *"xyz",
    "mu",
    "theta",
    "0",
    "1",
    "2.5",
    "1e308",
    "-",
    "+",
    "*",
    "/",
    "**",
    "@",
    "//",
    "%",
    "<",
    "<=",
    "==",
    "!=",
    "and",
    "or",
    "is",
    "(",
    ")",
    "[",
    "]",
    ",",
    ":",
    ".",
    "=",
    "...",
    "None",
    "True",
    "'s'",
    "lambda",
    "import",
    "for",
    "in",
    "if",
    "else",
    "not",
    "__class__",
    "__import__",
    *FUNCTIONS,
    *DISTRIBUTIONS,
    " ",
    "\n",
    "\\",
    "#",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=60), st.lists(st.sampled_from(TOKENS), max_size=25).map("".join)))
def test_any_text_compiles_or_raises_spec_error(text):
    for parse, where in ((parse_expression, WHERE), (parse_distribution, "variables.y.dist")):
        try:
            parse(text, where)
        except SpecError as error:
            assert str(error).startswith(f"{where}: ")


def _ast_like():
    """Strings shaped like expressions: nested calls, operators, subscripts, keywords, lists."""
    leaves = st.sampled_from(["x", "mu", "1", "2.5", "None", "...", "x.y", "'s'", "K"])
    names = st.sampled_from([*FUNCTIONS, *DISTRIBUTIONS, "foo", "__import__", "lambda x"])

    def extend(children):
        return st.one_of(
            st.tuples(children, st.sampled_from(["+", "-", "*", "/", "**", "@", "<", "//", "and"]), children).map(
                lambda t: f"({t[0]} {t[1]} {t[2]})"
            ),
            st.tuples(names, st.lists(children, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
            st.tuples(names, children).map(lambda t: f"{t[0]}(loc={t[1]})"),
            st.tuples(children, children).map(lambda t: f"{t[0]}[{t[1]}:, {t[1]}]"),
            st.lists(children, max_size=3).map(lambda items: f"[{', '.join(items)}]"),
            children.map(lambda c: f"-{c}"),
        )

    return st.recursive(leaves, extend, max_leaves=20)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_ast_like())
def test_expression_shaped_text_compiles_or_raises_spec_error(text):
    test_any_text_compiles_or_raises_spec_error.hypothesis.inner_test(text)


# Every function and operator, evaluated by both backends at the same inputs. The env's arrays are made by
# each backend from the same numpy arrays; jax runs in x64 mode so that both compute in float64.
DATA = {
    "x": np.array([0.3, -1.2, 2.0, 0.7]),
    "p": np.array([0.2, 0.5, 0.9, 0.35]),
    "n": np.array([1, 3, 2, 4]),
    "K": np.array(2),
    "M": np.array([[1.0, 2.0, -0.5], [0.3, -0.7, 1.1]]),
    "S": np.array([[2.0, 0.3, 0.1], [0.3, 1.5, -0.2], [0.1, -0.2, 1.0]]),
    "y": np.array([0.5, 1.1, -0.3, 0.2, 0.9, -1.4, 0.6]),
}
EXPRESSIONS = [
    "exp(x)",
    "log(p)",
    "log1p(x + 2)",
    "expm1(x)",
    "sqrt(p)",
    "abs(x)",
    "sigmoid(x)",
    "inv_logit(x)",
    "logit(p)",
    "softplus(x)",
    "tanh(x)",
    "sum(M)",
    "sum(M, 0)",
    "sum(n)",
    "mean(M, 1)",
    "mean(n)",
    "cumsum(x)",
    "logsumexp(x)",
    "logsumexp(M, 0)",
    "softmax(x)",
    "stack([x, p], 1)",
    "stack([1, x[0], n[1]])",
    "concatenate([x, p, n])",
    "transpose(M)",
    "cholesky(S)",
    "eye(3)",
    "diag(p)",
    "diag(S)",
    "zeros(K)",
    "ones(3)",
    "cov_exp_quad(x, 1.5, 0.7)",
    "cov_exp_quad(transpose(M), 1.5, 0.7)",
    "x + 1",
    "n + 0.5",
    "n * 2.5",
    "n - x",
    "n / 2",
    "n / K",
    "x ** 2",
    "2 ** x",
    "n ** 2",
    "M @ x[:3]",
    "S @ S",
    "-x",
    "+n",
    "x[n - 1]",
    "M[:, 0]",
    "M[1:, None]",
    "M[..., -1]",
    "y[K:]",
    "y[::2]",
    "2 ** 10",
    "7 / 2",
    "S[n[:3] - 1]",
    "S[n[:3, None] - 1, n[:3] - 1]",
    "S[n[:2, None, None] - 1]",
    "x < 0.5",
    "n <= K",
    "x > p",
    "n >= 2.5",
    "n == K",
    "x != 0.3",
    "0 < x < 1",
    "1 < 2",
    "x > 0 and n > 1",
    "x > 0 or n > 3 or p > 0.8",
    "not x > 0",
    "sum(x > 0)",
    "mean(x > 0)",
    "(x > 0) + (x > 0)",
    "-(x > 0) * 2.5",
    "2 ** (x > 0)",
    "stack([x > 0, n])",
    "stack([1, 2])",
    "where(x > 0, x, 0)",
    "where(n - 2, 1, 2)",
    "where(x > 0, n, 0.5)",
    "where(1 > 2, 1.5, x)",
    "min(x)",
    "max(n)",
    "min(M, x[:3])",
    "max(n, 2)",
    "clip(x, -1, 1)",
    "clip(n, 2, 3)",
    "clip(x, p - 1, p)",
    "sd(x)",
    "sd(M, 0)",
    "var(n)",
    "var(M, 1)",
    "sd(M[:, :1], 1)",
    "var(2.5)",
    "arange(K)",
    "arange(1, 4)",
    "dot(x, p)",
    "dot(M, x[:3])",
    "dot(n, n)",
    "log_sum_exp(x)",
]


def _evaluate_in_both(text: str):
    expression = parse_expression(text, WHERE)
    torch_backend, values = pyro_backend(), []
    env = {k: int(v) if v.ndim == 0 else torch_backend.asarray(v) for k, v in DATA.items()}
    values.append(np.asarray(evaluate(expression, env, torch_backend)))
    with jax.enable_x64(True):
        jax_backend = numpyro_backend()
        env = {k: int(v) if v.ndim == 0 else jax_backend.asarray(v) for k, v in DATA.items()}
        values.append(np.asarray(evaluate(expression, env, jax_backend)))
    return values


@pytest.mark.parametrize("text", EXPRESSIONS)
def test_backends_agree_on_functions_and_operators(text):
    torch_value, jax_value = _evaluate_in_both(text)
    assert torch_value.shape == jax_value.shape
    assert torch_value.dtype.kind == jax_value.dtype.kind  # integer stays integer, float stays float
    np.testing.assert_allclose(torch_value, jax_value, rtol=1e-12, atol=1e-12)


def test_every_function_and_operator_is_exercised_and_implemented():
    used = {name for text in EXPRESSIONS for name in parse_expression(text, WHERE).names} | {
        name for name in FUNCTIONS if any(f"{name}(" in text for text in EXPRESSIONS)
    }
    assert set(FUNCTIONS) <= used
    operators = (BINARY_OPERATORS, UNARY_OPERATORS, COMPARISON_OPERATORS, BOOLEAN_OPERATORS)
    methods = {f.method for f in FUNCTIONS.values()}.union(*(table.values() for table in operators))
    for backend in (pyro_backend(), numpyro_backend()):
        assert all(callable(getattr(backend, method, None)) for method in methods)
        assert set(backend.distributions) == set(DISTRIBUTIONS)


def test_new_functions_follow_their_definitions():
    """Comparisons chain as in Python, booleans count as 0/1, and each function matches numpy (exact up to
    float64 rounding of a few operations: rtol 1e-12)."""
    x, n, M, p = DATA["x"], DATA["n"], DATA["M"], DATA["p"]
    np.testing.assert_array_equal(_evaluate_in_both("0 < x < 1")[0], (0 < x) & (x < 1))
    np.testing.assert_array_equal(_evaluate_in_both("sum(x > 0)")[0], 3)
    np.testing.assert_array_equal(_evaluate_in_both("(x > 0) + (x > 0)")[0], 2 * (x > 0))
    np.testing.assert_array_equal(_evaluate_in_both("min(M, x[:3])")[0], np.minimum(M, x[:3]))
    np.testing.assert_array_equal(_evaluate_in_both("clip(x, p - 1, p)")[0], np.clip(x, p - 1, p))
    np.testing.assert_allclose(_evaluate_in_both("sd(M, 0)")[0], M.std(0, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(_evaluate_in_both("var(n)")[0], n.var(ddof=1), rtol=1e-12)
    np.testing.assert_array_equal(_evaluate_in_both("sd(M[:, :1], 1)")[0], [0, 0])  # one element: 0, as Stan
    np.testing.assert_allclose(_evaluate_in_both("dot(M, x[:3])")[0], M @ x[:3], rtol=1e-12)
    np.testing.assert_array_equal(_evaluate_in_both("arange(1, 4)")[0], [1, 2, 3])


@pytest.mark.parametrize("factory", [pyro_backend, numpyro_backend])
def test_a_step_index_wraps_at_zero_and_is_guarded_by_where(factory):
    """``y[t - 1]`` with the step t a 0-d integer array (torch) or traced (jax): at t = 0 it wraps to y[-1]."""
    expression = parse_expression("where(t == 0, mu, y[t - 1])", WHERE)
    backend, y = factory(), DATA["y"]
    env = {"y": backend.asarray(y), "mu": 10.0}
    expected = [10.0, *y[:-1]]
    if backend.name == "pyro":
        values = [evaluate(expression, env | {"t": step}, backend) for step in (*range(len(y)), torch.tensor(3))]
        np.testing.assert_array_equal(np.stack(values), [*expected, y[2]])
        return
    with jax.enable_x64(True):
        env["y"] = backend.asarray(y)

        def step(carry, t):
            return carry, evaluate(expression, env | {"t": t}, backend)

        _, scanned = jax.jit(lambda: jax.lax.scan(step, 0, jax.numpy.arange(len(y))))()
        np.testing.assert_array_equal(scanned, expected)
        jitted = jax.jit(lambda t: evaluate(parse_expression("y[t - 1]", WHERE), env | {"t": t}, backend))
        assert float(jitted(0)) == y[-1] and float(jitted(3)) == y[2]


def test_the_kernel_function_follows_its_definition():
    x = DATA["x"]
    kernel = 1.5**2 * np.exp(-((x[:, None] - x[None, :]) ** 2) / (2 * 0.7**2))
    np.testing.assert_allclose(_evaluate_in_both("cov_exp_quad(x, 1.5, 0.7)")[0], kernel, rtol=1e-12)


LKJ_FACTOR = np.linalg.cholesky(np.array([[1.0, 0.3, -0.2], [0.3, 1.0, 0.4], [-0.2, 0.4, 1.0]]))
DISTRIBUTION_CASES = [
    ("Normal(0.5, 2)", 1.3),
    ("HalfNormal(2)", 1.1),
    ("Cauchy(0.1, 1.5)", -2.0),
    ("HalfCauchy(5)", 3.0),
    ("StudentT(3, 8, 10)", 1.0),
    ("StudentT(4)", 0.3),
    ("HalfStudentT(3, 10)", 4.0),
    ("HalfStudentT(3)", 0.5),
    ("LogNormal(0.2, 0.7)", 1.5),
    ("Exponential(2)", 0.3),
    ("Gamma(25, 4)", 6.0),
    ("InverseGamma(3, 2)", 0.8),
    ("Beta(5, 5)", 0.3),
    ("Uniform(-1, 2)", 0.5),
    ("Bernoulli(0.3)", 1.0),
    ("Bernoulli(logits=x)", np.array([0.0, 1.0, 1.0, 0.0])),
    ("Binomial(10, 0.3)", 4.0),
    ("Binomial(n, logits=x)", np.array([0.0, 2.0, 1.0, 3.0])),
    ("Poisson(3.5)", 2.0),
    ("NegativeBinomial(5, 0.3)", 4.0),
    ("NegativeBinomial(5, logits=x)", np.array([3.0, 0.0, 7.0, 1.0])),
    ("Categorical(p / sum(p))", 2),
    ("Categorical(logits=x)", 0),
    ("Dirichlet(p + 1)", np.array([0.1, 0.2, 0.3, 0.4])),
    ("MultivariateNormal(x[:3], covariance_matrix=S)", np.array([0.1, -0.5, 1.0])),
    ("MultivariateNormal(x[:3], scale_tril=cholesky(S))", np.array([0.1, -0.5, 1.0])),
    ("MultivariateNormal(x[:3], precision_matrix=S)", np.array([0.1, -0.5, 1.0])),
    ("LKJCholesky(3, 2.0)", LKJ_FACTOR),
    ("LKJCholesky(3)", LKJ_FACTOR),
    ("Flat()", 1.7),
    ("Flat(lower=0)", 1.7),
    ("Flat(upper=x)", np.array([0.0, -2.0, 1.0, 0.5])),
    ("Flat(lower=0, upper=1)", 0.3),
    ("FlatOrdered(3)", np.array([-1.0, 0.5, 2.0])),
]


@pytest.mark.parametrize("text, value", DISTRIBUTION_CASES)
def test_backends_agree_on_distributions(text, value):
    call = parse_distribution(text, "variables.z.dist")
    torch_backend = pyro_backend()
    env = {k: int(v) if v.ndim == 0 else torch_backend.asarray(v) for k, v in DATA.items()}
    torch_distribution = build_distribution(call, env, torch_backend)
    torch_log_prob = torch_distribution.log_prob(torch.as_tensor(np.asarray(value, dtype=np.float64))).numpy()
    with jax.enable_x64(True):
        jax_backend = numpyro_backend()
        env = {k: int(v) if v.ndim == 0 else jax_backend.asarray(v) for k, v in DATA.items()}
        jax_distribution = build_distribution(call, env, jax_backend)
        jax_log_prob = np.asarray(jax_distribution.log_prob(jax.numpy.asarray(np.asarray(value))))
    assert tuple(torch_distribution.batch_shape) == tuple(jax_distribution.batch_shape)
    assert tuple(torch_distribution.event_shape) == tuple(jax_distribution.event_shape)
    assert np.all(np.isfinite(torch_log_prob))
    np.testing.assert_allclose(torch_log_prob, jax_log_prob, rtol=1e-10, atol=1e-12)


def test_every_distribution_is_tested():
    tested = {parse_distribution(text, "d").name for text, _ in DISTRIBUTION_CASES}
    assert tested == set(DISTRIBUTIONS)


def test_torch_backend_computes_in_its_dtype():
    """Integer data and Python numbers never fall back to torch's float32 default."""
    backend = pyro_backend()
    env = {"n": backend.asarray(np.array([1, 2, 3]))}
    for text in ("n / 2", "n * 0.5", "log(n)", "n + 0.5", "sqrt(2)", "mean(n)", "stack([n, n / 2])"):
        assert evaluate(parse_expression(text, WHERE), env, backend).dtype == torch.float64, text
    assert evaluate(parse_expression("n * 2 - 1", WHERE), env, backend).dtype == torch.int64
    assert build_distribution(parse_distribution("Normal(0, 1)", "d"), env, backend).loc.dtype == torch.float64
