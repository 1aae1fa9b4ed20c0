"""The sum-to-zero constraint for torch/Pyro, which has none: a constraint and its bijection, registered with
``biject_to`` (importing this module registers them).

The transform is NumPyro's ``ZeroSumTransform`` (from PyMC's ``ZeroSumTransform``; Stan's ``sum_to_zero_vector``
uses the same isometry): x in R^(K-1) -> y = H x in R^K, where H has orthonormal columns orthogonal to the
ones vector. H being an isometry onto the subspace {y : sum(y) = 0}, its log-det-Jacobian (with respect to the
subspace's own volume) is 0, as in NumPyro, so both backends' potential energies agree.
"""

import math

import torch
from torch.distributions import biject_to, constraints, transform_to
from torch.distributions.transforms import Transform

__all__ = ["ZeroSum", "ZeroSumTransform", "zero_sum"]


class ZeroSum(constraints.Constraint):
    """Vectors (the last dim) whose elements sum to zero, up to rounding."""

    event_dim = 1

    def check(self, value: torch.Tensor) -> torch.Tensor:
        """[...] booleans for a [..., K] value."""
        scale = value.abs().amax(-1).clamp(min=1.0)
        tolerance = torch.finfo(value.dtype).eps * 10 * value.shape[-1] * scale
        return value.sum(-1).abs() <= tolerance


zero_sum = ZeroSum()


class ZeroSumTransform(Transform):
    """R^(K-1) -> the sum-to-zero vectors of R^K, an isometry (log-det-Jacobian 0); NumPyro's ZeroSumTransform
    for one dim."""

    domain = constraints.independent(constraints.real, 1)
    codomain = zero_sum
    bijective = True

    def __eq__(self, other) -> bool:
        return isinstance(other, ZeroSumTransform)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1] + 1
        total = x.sum(-1, keepdim=True)
        norm = total / (math.sqrt(n) + n)
        return torch.cat([x, norm - total / math.sqrt(n)], -1) - norm

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        n = y.shape[-1]
        norm = -y[..., -1:] * math.sqrt(n) / (math.sqrt(n) + n)
        return y[..., :-1] + norm

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(torch.broadcast_shapes(x.shape[:-1], y.shape[:-1]))

    def forward_shape(self, shape):
        return (*shape[:-1], shape[-1] + 1)

    def inverse_shape(self, shape):
        return (*shape[:-1], shape[-1] - 1)


@biject_to.register(ZeroSum)
@transform_to.register(ZeroSum)
def _transform_to_zero_sum(constraint: ZeroSum) -> ZeroSumTransform:
    return ZeroSumTransform()
