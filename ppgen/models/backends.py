"""The two backends of the Bayesian model language: torch/Pyro and jax/NumPyro.

Each backend implements every operator, function and distribution that ``ppgen.spec.expr`` whitelists
(method names from its ``FUNCTIONS``, ``BINARY_OPERATORS`` and ``UNARY_OPERATORS`` tables, and a
``distributions`` dict keyed like ``DISTRIBUTIONS``), plus the three effects a compiled model uses:
``plate`` (optionally subsampled), ``sample`` and ``deterministic``. The model compiler
(``ppgen.models.bayes``) is written once against this interface.

The torch backend keeps every float in one dtype (float64 unless the data says otherwise): integer data and
Python numbers are cast to it wherever a float is meant, so torch's float32 default never creeps in.
"""

import operator
from contextlib import AbstractContextManager
from typing import Any

import numpy as np
import pyro
import pyro.distributions as pyro_dist
import torch
from pyro.distributions import constraints as pyro_constraints

__all__ = ["TorchBackend", "JaxBackend"]


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(getattr(value, "shape", ()))


class TorchBackend:
    """torch operations and Pyro distributions and effects, with floats in ``dtype`` on ``device``."""

    name = "pyro"

    def __init__(self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None):
        self.dtype = dtype
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.distributions = {
            "Normal": self._floats(pyro_dist.Normal),
            "HalfNormal": self._floats(pyro_dist.HalfNormal),
            "Cauchy": self._floats(pyro_dist.Cauchy),
            "HalfCauchy": self._floats(pyro_dist.HalfCauchy),
            "StudentT": self._floats(pyro_dist.StudentT),
            "HalfStudentT": self._floats(self._half_student_t),
            "LogNormal": self._floats(pyro_dist.LogNormal),
            "Exponential": self._floats(pyro_dist.Exponential),
            "Gamma": self._floats(pyro_dist.Gamma),
            "InverseGamma": self._floats(pyro_dist.InverseGamma),
            "Beta": self._floats(pyro_dist.Beta),
            "Uniform": self._floats(pyro_dist.Uniform),
            "Bernoulli": self._floats(pyro_dist.Bernoulli),
            "Binomial": self._floats(pyro_dist.Binomial),
            "Poisson": self._floats(pyro_dist.Poisson),
            "NegativeBinomial": self._floats(pyro_dist.NegativeBinomial),
            "Categorical": self._floats(pyro_dist.Categorical),
            "Dirichlet": self._floats(pyro_dist.Dirichlet),
            "MultivariateNormal": self._floats(pyro_dist.MultivariateNormal),
            "LKJCholesky": lambda dim, concentration=1.0: pyro_dist.LKJCholesky(int(dim), self.floating(concentration)),
            "Flat": self._floats(self._flat),
            "FlatOrdered": lambda size: pyro_dist.ImproperUniform(pyro_constraints.ordered_vector, (), (int(size),)),
            "NormalMixture": self._floats(self._normal_mixture),
        }

    # conversions
    def asarray(self, value: Any) -> torch.Tensor:
        """Data as a tensor: floats in this backend's dtype, integers (and booleans) as int64."""
        if isinstance(value, np.ndarray) and not value.flags.writeable:
            value = value.copy()  # torch cannot share a read-only buffer (jax hands those out)
        tensor = torch.as_tensor(value, device=self.device)
        if tensor.dtype.is_floating_point:
            return tensor.to(self.dtype)
        return tensor.to(torch.int64)

    @staticmethod
    def is_integer(array: torch.Tensor) -> bool:
        return not (array.dtype.is_floating_point or array.dtype.is_complex)

    def floating(self, value: Any) -> torch.Tensor:
        """A Python number or an integer tensor as a float tensor in this backend's dtype."""
        if isinstance(value, torch.Tensor):
            return value if value.dtype == self.dtype else value.to(self.dtype)
        return torch.as_tensor(value, dtype=self.dtype, device=self.device)

    def _floats(self, constructor):
        return lambda **params: constructor(**{key: self.floating(value) for key, value in params.items()})

    def _promote(self, a: Any, b: Any) -> tuple[Any, Any]:
        """Mixed integer/float operands in this dtype (torch would pick its float32 default)."""
        a_float = isinstance(a, float) or (isinstance(a, torch.Tensor) and a.dtype.is_floating_point)
        b_float = isinstance(b, float) or (isinstance(b, torch.Tensor) and b.dtype.is_floating_point)
        if a_float or b_float:
            return (
                self.floating(a) if isinstance(a, torch.Tensor) else a,
                self.floating(b) if isinstance(b, torch.Tensor) else b,
            )
        return a, b

    # operators
    def add(self, a, b):
        return operator.add(*self._promote(a, b))

    def sub(self, a, b):
        return operator.sub(*self._promote(a, b))

    def mul(self, a, b):
        return operator.mul(*self._promote(a, b))

    def truediv(self, a, b):
        if isinstance(a, int | float) and isinstance(b, int | float):
            return a / b
        return self.floating(a) / self.floating(b)

    def pow(self, a, b):
        if isinstance(a, int | float) and isinstance(b, int | float):
            return float(a) ** b  # never Python's unbounded integer power
        return self.floating(a) ** (b if isinstance(b, int | float) else self.floating(b))

    def matmul(self, a, b):
        return self.floating(a) @ self.floating(b)

    neg = staticmethod(operator.neg)
    pos = staticmethod(operator.pos)

    def getitem(self, value, index):
        return (value if isinstance(value, torch.Tensor) else self.floating(value))[index]

    # functions
    def exp(self, x):
        return torch.exp(self.floating(x))

    def log(self, x):
        return torch.log(self.floating(x))

    def log1p(self, x):
        return torch.log1p(self.floating(x))

    def expm1(self, x):
        return torch.expm1(self.floating(x))

    def sqrt(self, x):
        return torch.sqrt(self.floating(x))

    def abs(self, x):
        return torch.abs(self.floating(x))

    def sigmoid(self, x):
        return torch.sigmoid(self.floating(x))

    def logit(self, x):
        return torch.logit(self.floating(x))

    def softplus(self, x):
        return torch.nn.functional.softplus(self.floating(x))

    def tanh(self, x):
        return torch.tanh(self.floating(x))

    def sum(self, x, dim=None):
        x = x if isinstance(x, torch.Tensor) else self.floating(x)
        return torch.sum(x) if dim is None else torch.sum(x, dim=int(dim))

    def mean(self, x, dim=None):
        return torch.mean(self.floating(x)) if dim is None else torch.mean(self.floating(x), dim=int(dim))

    def cumsum(self, x, dim=-1):
        return torch.cumsum(self.floating(x), dim=int(dim))

    def logsumexp(self, x, dim=-1):
        return torch.logsumexp(self.floating(x), dim=int(dim))

    def softmax(self, x, dim=-1):
        return torch.softmax(self.floating(x), dim=int(dim))

    def _same_dtype(self, values) -> list[torch.Tensor]:
        tensors = [v if isinstance(v, torch.Tensor) else self.floating(v) for v in values]
        if any(t.dtype.is_floating_point for t in tensors):
            tensors = [self.floating(t) for t in tensors]
        return tensors

    def stack(self, values, dim=0):
        return torch.stack(self._same_dtype(values), dim=int(dim))

    def concatenate(self, values, dim=0):
        return torch.cat(self._same_dtype(values), dim=int(dim))

    def transpose(self, x):
        return (x if isinstance(x, torch.Tensor) else self.floating(x)).transpose(-1, -2)

    def cholesky(self, x):
        return torch.linalg.cholesky(self.floating(x))

    def eye(self, n):
        return torch.eye(int(n), dtype=self.dtype, device=self.device)

    def diag(self, x):
        return torch.diag(self.floating(x))

    def zeros(self, n):
        return torch.zeros(int(n), dtype=self.dtype, device=self.device)

    def ones(self, n):
        return torch.ones(int(n), dtype=self.dtype, device=self.device)

    def cov_exp_quad(self, x, alpha, rho):
        x = self.floating(x)
        x = x[:, None] if x.dim() == 1 else x
        squared_distance = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        return self.floating(alpha) ** 2 * torch.exp(-0.5 * squared_distance / self.floating(rho) ** 2)

    def lags(self, y, num_lags):
        y, num_lags = self.floating(y), int(num_lags)
        length = y.shape[0]
        return torch.stack([y[num_lags - 1 - k : length - 1 - k] for k in range(num_lags)], dim=-1)

    def arma11_errors(self, y, mu, phi, theta):
        y, mu, phi, theta = (self.floating(v) for v in (y, mu, phi, theta))
        previous = torch.cat([mu.reshape(1), y[:-1]])
        innovations = y - mu - phi * previous
        # err[t] = sum_{s <= t} (-theta)**(t - s) innovations[s]: a lower-triangular Toeplitz matrix of the
        # powers of -theta (cumulative products, exact for a negative base), without a length-T Python loop.
        length = y.shape[0]
        powers = torch.cumprod(torch.cat([self.ones(1), (-theta).expand(length - 1)]), dim=0)
        steps = torch.arange(length, device=self.device)
        lag = steps[:, None] - steps[None, :]
        weights = torch.where(lag >= 0, powers[lag.clamp(min=0)], self.floating(0.0))
        return weights @ innovations

    # distributions that are not one library class
    def _half_student_t(self, df, scale=None):
        scale = self.floating(1.0 if scale is None else scale)
        return pyro_dist.FoldedDistribution(pyro_dist.StudentT(df, torch.zeros_like(scale), scale))

    def _flat(self, lower=None, upper=None):
        batch_shape = np.broadcast_shapes(*(_shape(b) for b in (lower, upper) if b is not None))
        if lower is not None and upper is not None:
            support = pyro_constraints.interval(lower, upper)
        elif lower is not None:
            support = pyro_constraints.greater_than(lower)
        elif upper is not None:
            support = pyro_constraints.less_than(upper)
        else:
            support = pyro_constraints.real
        return pyro_dist.ImproperUniform(support, batch_shape, ())

    @staticmethod
    def _normal_mixture(weights, loc, scale):
        return pyro_dist.MixtureSameFamily(pyro_dist.Categorical(probs=weights), pyro_dist.Normal(loc, scale))

    # effects
    def plate(self, name: str, size: int, dim: int, subsample_size: int | None = None) -> AbstractContextManager:
        """A plate; with ``subsample_size``, entering it gives that many random indices, the same each time."""
        return pyro.plate(name, size, subsample_size=subsample_size, dim=dim, device=self.device)

    def sample(self, name: str, distribution, obs=None):
        if obs is not None and not obs.dtype.is_floating_point:
            obs = obs.to(self.dtype)  # torch's discrete log-densities want float counts
        return pyro.sample(name, distribution, obs=obs)

    @staticmethod
    def deterministic(name: str, value, event_dim: int):
        return pyro.deterministic(name, value, event_dim=event_dim)


class JaxBackend:
    """jax.numpy operations and NumPyro distributions and effects (floats in jax's default float dtype)."""

    name = "numpyro"

    def __init__(self):
        import jax
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as numpyro_dist

        self._jax, self._jnp, self._numpyro, self._dist = jax, jnp, numpyro, numpyro_dist
        self._constraints = numpyro_dist.constraints
        d = numpyro_dist
        self.distributions = {
            "Normal": self._floats(d.Normal),
            "HalfNormal": self._floats(d.HalfNormal),
            "Cauchy": self._floats(d.Cauchy),
            "HalfCauchy": self._floats(d.HalfCauchy),
            "StudentT": self._floats(d.StudentT),
            "HalfStudentT": self._floats(self._half_student_t),
            "LogNormal": self._floats(d.LogNormal),
            "Exponential": self._floats(d.Exponential),
            "Gamma": self._floats(d.Gamma),
            "InverseGamma": self._floats(d.InverseGamma),
            "Beta": self._floats(d.Beta),
            "Uniform": self._floats(d.Uniform),
            "Bernoulli": self._floats(d.Bernoulli),
            "Binomial": lambda total_count, **params: d.Binomial(total_count, **self._float_params(params)),
            "Poisson": self._floats(d.Poisson),
            "NegativeBinomial": self._floats(d.NegativeBinomial),
            "Categorical": self._floats(d.Categorical),
            "Dirichlet": self._floats(d.Dirichlet),
            "MultivariateNormal": self._floats(d.MultivariateNormal),
            "LKJCholesky": lambda dim, concentration=1.0: d.LKJCholesky(int(dim), self.floating(concentration)),
            "Flat": self._floats(self._flat),
            "FlatOrdered": lambda size: d.ImproperUniform(self._constraints.ordered_vector, (), (int(size),)),
            "NormalMixture": self._floats(self._normal_mixture),
        }

    # conversions
    def asarray(self, value: Any):
        """Data as a jax array (jax's default int and float widths)."""
        array = self._jnp.asarray(value)
        return array.astype(self._default(self._jnp.int64)) if array.dtype == bool else array

    def is_integer(self, array) -> bool:
        return bool(self._jnp.issubdtype(array.dtype, self._jnp.integer))

    def floating(self, value: Any):
        """A Python number or an integer array as an array of jax's default float dtype."""
        array = self._jnp.asarray(value)
        if self._jnp.issubdtype(array.dtype, self._jnp.floating):
            return array
        return array.astype(self._default(self._jnp.float64))

    def _default(self, dtype):
        """float64/int64 when jax's x64 mode is on, else their 32-bit versions."""
        return self._jax.dtypes.canonicalize_dtype(dtype)

    def _float_params(self, params: dict) -> dict:
        return {key: self.floating(value) for key, value in params.items()}

    def _floats(self, constructor):
        return lambda **params: constructor(**self._float_params(params))

    # operators (jax promotes integers to its default float by itself)
    add = staticmethod(operator.add)
    sub = staticmethod(operator.sub)
    mul = staticmethod(operator.mul)

    def truediv(self, a, b):
        if isinstance(a, int | float) and isinstance(b, int | float):
            return a / b
        return self._jnp.true_divide(a, b)

    def pow(self, a, b):
        if isinstance(a, int | float) and isinstance(b, int | float):
            return float(a) ** b
        return self._jnp.power(self.floating(a), b if isinstance(b, int | float) else self.floating(b))

    def matmul(self, a, b):
        return self._jnp.matmul(self.floating(a), self.floating(b))

    neg = staticmethod(operator.neg)
    pos = staticmethod(operator.pos)

    def getitem(self, value, index):
        return self._jnp.asarray(value)[index]

    # functions
    def exp(self, x):
        return self._jnp.exp(self.floating(x))

    def log(self, x):
        return self._jnp.log(self.floating(x))

    def log1p(self, x):
        return self._jnp.log1p(self.floating(x))

    def expm1(self, x):
        return self._jnp.expm1(self.floating(x))

    def sqrt(self, x):
        return self._jnp.sqrt(self.floating(x))

    def abs(self, x):
        return self._jnp.abs(self.floating(x))

    def sigmoid(self, x):
        return self._jax.nn.sigmoid(self.floating(x))

    def logit(self, x):
        return self._jax.scipy.special.logit(self.floating(x))

    def softplus(self, x):
        return self._jax.nn.softplus(self.floating(x))

    def tanh(self, x):
        return self._jnp.tanh(self.floating(x))

    def sum(self, x, dim=None):
        return self._jnp.sum(self._jnp.asarray(x), axis=None if dim is None else int(dim))

    def mean(self, x, dim=None):
        return self._jnp.mean(self.floating(x), axis=None if dim is None else int(dim))

    def cumsum(self, x, dim=-1):
        return self._jnp.cumsum(self.floating(x), axis=int(dim))

    def logsumexp(self, x, dim=-1):
        return self._jax.scipy.special.logsumexp(self.floating(x), axis=int(dim))

    def softmax(self, x, dim=-1):
        return self._jax.nn.softmax(self.floating(x), axis=int(dim))

    def stack(self, values, dim=0):
        return self._jnp.stack([self._jnp.asarray(v) for v in values], axis=int(dim))

    def concatenate(self, values, dim=0):
        return self._jnp.concatenate([self._jnp.asarray(v) for v in values], axis=int(dim))

    def transpose(self, x):
        return self._jnp.swapaxes(self._jnp.asarray(x), -1, -2)

    def cholesky(self, x):
        return self._jnp.linalg.cholesky(self.floating(x))

    def eye(self, n):
        return self._jnp.eye(int(n))

    def diag(self, x):
        return self._jnp.diag(self.floating(x))

    def zeros(self, n):
        return self._jnp.zeros(int(n))

    def ones(self, n):
        return self._jnp.ones(int(n))

    def cov_exp_quad(self, x, alpha, rho):
        x = self.floating(x)
        x = x[:, None] if x.ndim == 1 else x
        squared_distance = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        return self.floating(alpha) ** 2 * self._jnp.exp(-0.5 * squared_distance / self.floating(rho) ** 2)

    def lags(self, y, num_lags):
        y, num_lags = self.floating(y), int(num_lags)
        length = y.shape[0]
        return self._jnp.stack([y[num_lags - 1 - k : length - 1 - k] for k in range(num_lags)], axis=-1)

    def arma11_errors(self, y, mu, phi, theta):
        jnp = self._jnp
        y, mu, phi, theta = (self.floating(v) for v in (y, mu, phi, theta))
        previous = jnp.concatenate([jnp.reshape(mu, (1,)), y[:-1]])
        innovations = y - mu - phi * previous
        length = y.shape[0]
        powers = jnp.cumprod(jnp.concatenate([jnp.ones(1), jnp.broadcast_to(-theta, (length - 1,))]))
        lag = np.arange(length)[:, None] - np.arange(length)[None, :]
        weights = jnp.where(lag >= 0, powers[np.maximum(lag, 0)], 0.0)
        return weights @ innovations

    # distributions that are not one library class
    def _half_student_t(self, df, scale=1.0):
        return self._dist.FoldedDistribution(self._dist.StudentT(df, self._jnp.zeros_like(scale), scale))

    def _flat(self, lower=None, upper=None):
        c = self._constraints
        batch_shape = np.broadcast_shapes(*(_shape(b) for b in (lower, upper) if b is not None))
        if lower is not None and upper is not None:
            support = c.interval(lower, upper)
        elif lower is not None:
            support = c.greater_than(lower)
        elif upper is not None:
            support = c.less_than(upper)
        else:
            support = c.real
        return self._dist.ImproperUniform(support, batch_shape, ())

    def _normal_mixture(self, weights, loc, scale):
        d = self._dist
        return d.MixtureSameFamily(d.Categorical(probs=weights), d.Normal(loc, scale))

    # effects
    def plate(self, name: str, size: int, dim: int, subsample_size: int | None = None) -> AbstractContextManager:
        """A plate; with ``subsample_size``, entering it gives that many random indices, the same each time."""
        return self._numpyro.plate(name, size, subsample_size=subsample_size, dim=dim)

    def sample(self, name: str, distribution, obs=None):
        return self._numpyro.sample(name, distribution, obs=obs)

    def deterministic(self, name: str, value, event_dim: int):
        return self._numpyro.deterministic(name, value)
