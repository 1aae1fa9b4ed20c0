"""The dtype rules of the two array libraries, made explicit for ``ppgen.models.backends.ArrayBackend``.

Each strategy answers the same few questions: how data becomes an array (``asarray``), how a number or an
integer array becomes a float one (``floating``), how an operand that may be a Python number becomes an array
(``operand``), whether a value is an array or an integer array, and which keywords make a new float array.
Each imports its library when constructed.
"""

from typing import Any

import numpy as np

__all__ = ["TorchDtypes", "JaxDtypes"]


class TorchDtypes:
    """torch's dtype rules made explicit: every float in ``dtype`` on ``device``, integers (and booleans) int64."""

    def __init__(self, dtype=None, device=None):
        import torch

        self._torch = torch
        self.dtype = torch.float64 if dtype is None else dtype
        self.device = torch.device("cpu") if device is None else torch.device(device)

    def asarray(self, value: Any):
        """Data as a tensor: floats in ``dtype``, integers (and booleans) as int64."""
        if isinstance(value, np.ndarray) and not value.flags.writeable:
            value = value.copy()  # torch cannot share a read-only buffer (jax hands those out)
        tensor = self._torch.as_tensor(value, device=self.device)
        return tensor.to(self.dtype) if tensor.dtype.is_floating_point else tensor.to(self._torch.int64)

    def floating(self, value: Any):
        """A number or a tensor as a float tensor in ``dtype``."""
        if isinstance(value, self._torch.Tensor):
            return value if value.dtype == self.dtype else value.to(self.dtype)
        return self._torch.as_tensor(value, dtype=self.dtype, device=self.device)

    def operand(self, value: Any):
        """A tensor as it is; a Python number as a float tensor (torch would make a float32 or int64 one)."""
        return value if isinstance(value, self._torch.Tensor) else self.floating(value)

    def is_array(self, value: Any) -> bool:
        return isinstance(value, self._torch.Tensor)

    @staticmethod
    def is_integer(array) -> bool:
        return not (array.dtype.is_floating_point or array.dtype.is_complex)

    def float_options(self) -> dict[str, Any]:
        """Keyword arguments that make a new float array: ``dtype`` and ``device``."""
        return {"dtype": self.dtype, "device": self.device}


class JaxDtypes:
    """jax's dtype rules: its default int and float widths (64-bit only in x64 mode, read at each call)."""

    def __init__(self):
        import jax
        import jax.numpy as jnp

        self._jax, self._jnp = jax, jnp

    def _default(self, dtype):
        return self._jax.dtypes.canonicalize_dtype(dtype)

    def asarray(self, value: Any):
        """Data as a jax array (jax's default int and float widths; booleans as ints)."""
        array = self._jnp.asarray(value)
        return array.astype(self._default(self._jnp.int64)) if array.dtype == bool else array

    def floating(self, value: Any):
        """A number or an integer array as an array of jax's default float dtype (float arrays as they are)."""
        array = self._jnp.asarray(value)
        return array if self._jnp.issubdtype(array.dtype, self._jnp.floating) else array.astype(self.float_dtype())

    def operand(self, value: Any):
        return self._jnp.asarray(value)

    def is_array(self, value: Any) -> bool:
        return isinstance(value, self._jax.Array)

    def is_integer(self, array) -> bool:
        return bool(self._jnp.issubdtype(array.dtype, self._jnp.integer))

    def float_dtype(self):
        return self._default(self._jnp.float64)

    def float_options(self) -> dict[str, Any]:
        """Keyword arguments that make a new float array: jax's default float ``dtype``."""
        return {"dtype": self.float_dtype()}
