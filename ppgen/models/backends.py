"""The array backend of the Bayesian model language: one class, made for torch/Pyro or for jax/NumPyro.

An ``ArrayBackend`` implements every operator, function and distribution of the model language
(``ppgen.spec.language``: a method per entry of its ``FUNCTIONS`` and operator tables, and a ``distributions``
dict keyed like ``DISTRIBUTIONS``) once, over an array module (``torch`` or ``jax.numpy``) and a distribution
library (``pyro.distributions`` or ``numpyro.distributions``). What genuinely differs between the two is passed
in as two small strategies: the library's dtype rules (``TorchDtypes``, ``JaxDtypes``) and the effects a compiled
model uses (``Effects``: ``plate``, ``sample``, ``deterministic``, ``factor``, ``scan``). ``pyro_backend`` and
``numpyro_backend`` assemble them; each imports only its own libraries, when called.

Mixed integer/float operands are computed in the backend's float dtype: float64 for torch unless the data
says otherwise (torch's float32 default never creeps in), jax's default float (float64 in x64 mode).
"""

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from ppgen.models.dtypes import JaxDtypes, TorchDtypes
from ppgen.models.effects import Effects, numpyro_effects, pyro_effects

__all__ = ["ArrayBackend", "Effects", "pyro_backend", "numpyro_backend"]


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(getattr(value, "shape", ()))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


class ArrayBackend:
    """The language's operators, functions and distributions over one array module and distribution library.

    Args:
        name: the library's name (``"pyro"`` or ``"numpyro"``).
        xp: the array module (``torch`` or ``jax.numpy``); its functions are called with ``axis=``.
        special: its special functions (``torch.special``, ``jax.scipy.special``): expit, logit, logsumexp,
            softmax.
        nn: its network functions (``torch.nn.functional``, ``jax.nn``): softplus.
        distributions: the distribution library (``pyro.distributions``, ``numpyro.distributions``).
        dtypes: the array module's dtype rules (``TorchDtypes``, ``JaxDtypes``).
        effects: the library's ``plate``, ``sample`` and ``deterministic``.
    """

    def __init__(self, name: str, *, xp, special, nn, distributions, dtypes, effects: Effects):
        self.name, self.xp, self.special, self.nn = name, xp, special, nn
        self.dtypes, self.effects = dtypes, effects
        self.asarray, self.floating, self.is_integer = dtypes.asarray, dtypes.floating, dtypes.is_integer
        self.distributions = self._distribution_table(distributions)

    def __repr__(self) -> str:
        return f"ArrayBackend({self.name!r})"

    # dtypes
    def _promote(self, a: Any, b: Any) -> tuple[Any, Any]:
        """Mixed integer/float operands both in the float dtype (torch would pick its float32 default)."""
        if self._is_floating(a) or self._is_floating(b):
            return tuple(self.floating(v) if self.dtypes.is_array(v) else v for v in (a, b))
        return a, b

    def _is_floating(self, value: Any) -> bool:
        return isinstance(value, float) or (self.dtypes.is_array(value) and not self.is_integer(value))

    def _float_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {key: self.floating(value) for key, value in params.items()}

    def _floats(self, constructor):
        return lambda **params: constructor(**self._float_params(params))

    # operators
    def _unbool(self, value: Any) -> Any:
        """A boolean array (a comparison) as 0/1 integers: torch and jax would add booleans as a logical or."""
        return self.asarray(value) if getattr(value, "dtype", None) == self.xp.bool else value

    def _array(self, value: Any) -> Any:
        """An operand as an array of its kind: Python floats in the float dtype (never torch's float32), Python
        ints as integers, booleans as 0/1 integers."""
        if self.dtypes.is_array(value):
            return self._unbool(value)
        return self.floating(value) if isinstance(value, float) else self.asarray(value)

    def _arrays(self, *values) -> list:
        """Operands as arrays (``_array``) of one kind: all in the float dtype if one is floating."""
        arrays = [self._array(value) for value in values]
        return [self.floating(a) for a in arrays] if any(not self.is_integer(a) for a in arrays) else arrays

    def add(self, a, b):
        return operator.add(*self._promote(self._unbool(a), self._unbool(b)))

    def sub(self, a, b):
        return operator.sub(*self._promote(self._unbool(a), self._unbool(b)))

    def mul(self, a, b):
        return operator.mul(*self._promote(self._unbool(a), self._unbool(b)))

    def truediv(self, a, b):
        if _is_number(a) and _is_number(b):
            return a / b
        return self.floating(a) / self.floating(b)

    def pow(self, a, b):
        if _is_number(a) and _is_number(b):
            return float(a) ** b  # never Python's unbounded integer power
        return self.floating(a) ** (b if _is_number(b) else self.floating(b))

    def matmul(self, a, b):
        return self.floating(a) @ self.floating(b)

    def neg(self, x):
        return -self._unbool(x)

    def pos(self, x):
        return +self._unbool(x)

    def lt(self, a, b):
        return self.dtypes.operand(a) < b

    def le(self, a, b):
        return self.dtypes.operand(a) <= b

    def gt(self, a, b):
        return self.dtypes.operand(a) > b

    def ge(self, a, b):
        return self.dtypes.operand(a) >= b

    def eq(self, a, b):
        return self.dtypes.operand(a) == b

    def ne(self, a, b):
        return self.dtypes.operand(a) != b

    def logical_and(self, a, b):
        return self.xp.logical_and(self.dtypes.operand(a), self.dtypes.operand(b))

    def logical_or(self, a, b):
        return self.xp.logical_or(self.dtypes.operand(a), self.dtypes.operand(b))

    def logical_not(self, x):
        return self.xp.logical_not(self.dtypes.operand(x))

    def getitem(self, value, index):
        return self.dtypes.operand(value)[index]

    # functions
    def exp(self, x):
        return self.xp.exp(self.floating(x))

    def log(self, x):
        return self.xp.log(self.floating(x))

    def log1p(self, x):
        return self.xp.log1p(self.floating(x))

    def expm1(self, x):
        return self.xp.expm1(self.floating(x))

    def sqrt(self, x):
        return self.xp.sqrt(self.floating(x))

    def abs(self, x):
        return self.xp.abs(self.floating(x))

    def sigmoid(self, x):
        return self.special.expit(self.floating(x))

    def logit(self, x):
        return self.special.logit(self.floating(x))

    def softplus(self, x):
        return self.nn.softplus(self.floating(x))

    def tanh(self, x):
        return self.xp.tanh(self.floating(x))

    def sum(self, x, dim=None):
        return self.xp.sum(self._arrays(x)[0], axis=None if dim is None else int(dim))

    def mean(self, x, dim=None):
        return self.xp.mean(self.floating(x), axis=None if dim is None else int(dim))

    def cumsum(self, x, dim=-1):
        return self.xp.cumsum(self.floating(x), axis=int(dim))

    def logsumexp(self, x, dim=-1):
        return self.special.logsumexp(self.floating(x), axis=int(dim))

    def softmax(self, x, dim=-1):
        return self.special.softmax(self.floating(x), axis=int(dim))

    def min(self, a, b=None):
        return self.xp.min(*self._arrays(a)) if b is None else self.xp.minimum(*self._arrays(a, b))

    def max(self, a, b=None):
        return self.xp.max(*self._arrays(a)) if b is None else self.xp.maximum(*self._arrays(a, b))

    def clip(self, x, lower, upper):
        x, lower, upper = self._arrays(x, lower, upper)
        return self.xp.minimum(self.xp.maximum(x, lower), upper)

    def var(self, x, dim=None):
        """The sample variance (divisor n - 1); 0 for one element, as Stan's ``variance``."""
        x, axis = self.floating(x), None if dim is None else int(dim)
        count = math.prod(x.shape) if axis is None else x.shape[axis]
        if count == 0:
            raise ValueError("sd and var need at least one element")
        return self.xp.var(x, axis=axis, correction=1 if count > 1 else 0)

    def sd(self, x, dim=None):
        return self.xp.sqrt(self.var(x, dim))

    def where(self, condition, a, b):
        condition = self.dtypes.operand(condition)
        if condition.dtype != self.xp.bool:
            condition = condition != 0
        return self.xp.where(condition, *self._arrays(a, b))

    def dot(self, a, b):
        a, b = self._arrays(a, b)
        return self.xp.sum(a * b, axis=-1)

    def stack(self, values, dim=0):
        return self.xp.stack(self._arrays(*values), axis=int(dim))

    def concatenate(self, values, dim=0):
        return self.xp.concatenate(self._arrays(*values), axis=int(dim))

    def transpose(self, x):
        return self.xp.swapaxes(self.dtypes.operand(x), -1, -2)

    def cholesky(self, x):
        return self.xp.linalg.cholesky(self.floating(x))

    def eye(self, n):
        return self.xp.eye(int(n), **self.dtypes.float_options())

    def diag(self, x):
        return self.xp.diag(self.floating(x))

    def zeros(self, n):
        return self.xp.zeros(int(n), **self.dtypes.float_options())

    def ones(self, n):
        return self.xp.ones(int(n), **self.dtypes.float_options())

    def arange(self, a, b=None):
        bounds = (0, int(a)) if b is None else (int(a), int(b))
        return self.asarray(np.arange(*bounds))

    def cov_exp_quad(self, x, alpha, rho):
        x = self.floating(x)
        x = x[:, None] if x.ndim == 1 else x
        squared_distance = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        return self.floating(alpha) ** 2 * self.xp.exp(-0.5 * squared_distance / self.floating(rho) ** 2)

    # distributions
    def _distribution_table(self, d) -> dict[str, Callable[..., Any]]:
        floats = self._floats
        return {
            "Normal": floats(d.Normal),
            "HalfNormal": floats(d.HalfNormal),
            "Cauchy": floats(d.Cauchy),
            "HalfCauchy": floats(d.HalfCauchy),
            "StudentT": floats(d.StudentT),
            "HalfStudentT": floats(lambda df, scale=None: self._half_student_t(d, df, scale)),
            "LogNormal": floats(d.LogNormal),
            "Exponential": floats(d.Exponential),
            "Gamma": floats(d.Gamma),
            "InverseGamma": floats(d.InverseGamma),
            "Beta": floats(d.Beta),
            "Uniform": floats(d.Uniform),
            "Bernoulli": floats(d.Bernoulli),
            # total_count is a count: each library casts it to the dtype of the probabilities itself
            "Binomial": lambda total_count, **params: d.Binomial(total_count, **self._float_params(params)),
            "Poisson": floats(d.Poisson),
            "NegativeBinomial": floats(d.NegativeBinomial),
            "Categorical": floats(d.Categorical),
            "Dirichlet": floats(d.Dirichlet),
            "MultivariateNormal": floats(d.MultivariateNormal),
            "LKJCholesky": lambda dim, concentration=1.0: d.LKJCholesky(int(dim), self.floating(concentration)),
            "Flat": floats(lambda lower=None, upper=None: self._flat(d, lower, upper)),
            "FlatOrdered": lambda size: d.ImproperUniform(d.constraints.ordered_vector, (), (int(size),)),
        }

    def _half_student_t(self, d, df, scale=None):
        """|t| for t ~ StudentT(df, 0, scale)."""
        scale = self.floating(1.0 if scale is None else scale)
        return d.FoldedDistribution(d.StudentT(df, self.xp.zeros_like(scale), scale))

    @staticmethod
    def _flat(d, lower=None, upper=None):
        """The improper uniform density on the real line, or on (lower, inf), (-inf, upper), (lower, upper)."""
        c = d.constraints
        batch_shape = np.broadcast_shapes(*(_shape(b) for b in (lower, upper) if b is not None))
        if lower is not None and upper is not None:
            support = c.interval(lower, upper)
        elif lower is not None:
            support = c.greater_than(lower)
        elif upper is not None:
            support = c.less_than(upper)
        else:
            support = c.real
        return d.ImproperUniform(support, batch_shape, ())


def pyro_backend(dtype=None, device=None) -> ArrayBackend:
    """torch operations, Pyro distributions and effects; floats in ``dtype`` (float64 by default) on ``device``."""
    import pyro.distributions
    import torch

    dtypes = TorchDtypes(dtype, device)
    return ArrayBackend(
        "pyro",
        xp=torch,
        special=torch.special,
        nn=torch.nn.functional,
        distributions=pyro.distributions,
        dtypes=dtypes,
        effects=pyro_effects(dtypes),
    )


def numpyro_backend() -> ArrayBackend:
    """jax.numpy operations, NumPyro distributions and effects (floats in jax's default float dtype)."""
    import jax
    import jax.numpy as jnp
    import jax.scipy.special
    import numpyro.distributions

    return ArrayBackend(
        "numpyro",
        xp=jnp,
        special=jax.scipy.special,
        nn=jax.nn,
        distributions=numpyro.distributions,
        dtypes=JaxDtypes(),
        effects=numpyro_effects(),
    )
