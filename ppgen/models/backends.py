"""The array backend of the Bayesian model language: one class, made for torch/Pyro or for jax/NumPyro.

An ``ArrayBackend`` implements every operator, function and distribution of the model language
(``ppgen.spec.language``: method names from its ``FUNCTIONS``, ``BINARY_OPERATORS`` and ``UNARY_OPERATORS``
tables, and a ``distributions`` dict keyed like ``DISTRIBUTIONS``) once, over an array module (``torch`` or
``jax.numpy``) and a distribution library (``pyro.distributions`` or ``numpyro.distributions``). What
genuinely differs between the two is passed in as two small strategies: the library's dtype rules (``TorchDtypes``,
``JaxDtypes``) and the three effects a compiled model uses (``Effects``: ``plate``, ``sample``,
``deterministic``). ``pyro_backend`` and ``numpyro_backend`` assemble them; each imports only its own
libraries, when called.

Mixed integer/float operands are computed in the backend's float dtype: float64 for torch unless the data
says otherwise (torch's float32 default never creeps in), jax's default float (float64 in x64 mode).
"""

import operator
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np

from ppgen.models.dtypes import JaxDtypes, TorchDtypes

__all__ = ["ArrayBackend", "Effects", "pyro_backend", "numpyro_backend"]


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(getattr(value, "shape", ()))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)


@dataclass(frozen=True)
class Effects:
    """The effects a compiled model calls, from one probabilistic programming library.

    Attributes:
        plate: ``(name, size, dim, subsample_size=None)`` -> a plate; with ``subsample_size``, entering it
            gives that many random indices, the same each time.
        sample: ``(name, distribution, obs=None)`` -> the site's value.
        deterministic: ``(name, value, event_dim)`` -> value, recorded as a site.
    """

    plate: Callable[..., AbstractContextManager]
    sample: Callable[..., Any]
    deterministic: Callable[[str, Any, int], Any]


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

    def _same_dtype(self, values) -> list:
        arrays = [self.dtypes.operand(v) for v in values]
        return [self.floating(a) for a in arrays] if any(not self.is_integer(a) for a in arrays) else arrays

    def _float_params(self, params: dict[str, Any]) -> dict[str, Any]:
        return {key: self.floating(value) for key, value in params.items()}

    def _floats(self, constructor):
        return lambda **params: constructor(**self._float_params(params))

    # operators
    def add(self, a, b):
        return operator.add(*self._promote(a, b))

    def sub(self, a, b):
        return operator.sub(*self._promote(a, b))

    def mul(self, a, b):
        return operator.mul(*self._promote(a, b))

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

    neg = staticmethod(operator.neg)
    pos = staticmethod(operator.pos)

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
        return self.xp.sum(self.dtypes.operand(x), axis=None if dim is None else int(dim))

    def mean(self, x, dim=None):
        return self.xp.mean(self.floating(x), axis=None if dim is None else int(dim))

    def cumsum(self, x, dim=-1):
        return self.xp.cumsum(self.floating(x), axis=int(dim))

    def logsumexp(self, x, dim=-1):
        return self.special.logsumexp(self.floating(x), axis=int(dim))

    def softmax(self, x, dim=-1):
        return self.special.softmax(self.floating(x), axis=int(dim))

    def stack(self, values, dim=0):
        return self.xp.stack(self._same_dtype(values), axis=int(dim))

    def concatenate(self, values, dim=0):
        return self.xp.concatenate(self._same_dtype(values), axis=int(dim))

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

    def cov_exp_quad(self, x, alpha, rho):
        x = self.floating(x)
        x = x[:, None] if x.ndim == 1 else x
        squared_distance = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        return self.floating(alpha) ** 2 * self.xp.exp(-0.5 * squared_distance / self.floating(rho) ** 2)

    def lags(self, y, num_lags):
        y, num_lags = self.floating(y), int(num_lags)
        length = y.shape[0]
        return self.xp.stack([y[num_lags - 1 - k : length - 1 - k] for k in range(num_lags)], axis=-1)

    def arma11_errors(self, y, mu, phi, theta):
        xp = self.xp
        y, mu, phi, theta = (self.floating(v) for v in (y, mu, phi, theta))
        previous = xp.concatenate([xp.reshape(mu, (1,)), y[:-1]])
        innovations = y - mu - phi * previous
        # err[t] = sum_{s <= t} (-theta)**(t - s) innovations[s]: a lower-triangular Toeplitz matrix of the
        # powers of -theta (cumulative products, exact for a negative base), without a length-T Python loop.
        length = y.shape[0]
        powers = xp.cumprod(xp.concatenate([self.ones(1), xp.broadcast_to(-theta, (length - 1,))]), axis=0)
        steps = np.arange(length)
        lag = self.asarray(np.maximum(steps[:, None] - steps[None, :], 0))
        return xp.tril(powers[lag]) @ innovations

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
            "NormalMixture": floats(
                lambda weights, loc, scale: d.MixtureSameFamily(d.Categorical(probs=weights), d.Normal(loc, scale))
            ),
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
    import pyro
    import pyro.distributions
    import torch

    dtypes = TorchDtypes(dtype, device)

    def plate(name: str, size: int, dim: int, subsample_size: int | None = None):
        return pyro.plate(name, size, subsample_size=subsample_size, dim=dim, device=dtypes.device)

    def sample(name: str, distribution, obs=None):
        if obs is not None and not obs.dtype.is_floating_point:
            obs = obs.to(dtypes.dtype)  # torch's discrete log-densities want float counts
        return pyro.sample(name, distribution, obs=obs)

    def deterministic(name: str, value, event_dim: int):
        return pyro.deterministic(name, value, event_dim=event_dim)

    return ArrayBackend(
        "pyro",
        xp=torch,
        special=torch.special,
        nn=torch.nn.functional,
        distributions=pyro.distributions,
        dtypes=dtypes,
        effects=Effects(plate, sample, deterministic),
    )


def numpyro_backend() -> ArrayBackend:
    """jax.numpy operations, NumPyro distributions and effects (floats in jax's default float dtype)."""
    import jax
    import jax.numpy as jnp
    import jax.scipy.special
    import numpyro
    import numpyro.distributions

    def plate(name: str, size: int, dim: int, subsample_size: int | None = None):
        return numpyro.plate(name, size, subsample_size=subsample_size, dim=dim)

    def deterministic(name: str, value, event_dim: int):
        return numpyro.deterministic(name, value)  # NumPyro infers the event dims itself

    return ArrayBackend(
        "numpyro",
        xp=jnp,
        special=jax.scipy.special,
        nn=jax.nn,
        distributions=numpyro.distributions,
        dtypes=JaxDtypes(),
        effects=Effects(plate, numpyro.sample, deterministic),
    )
