"""The data of a declarative model in each backend, with given (e.g. simulated) values swapped in.

Declarative models compute in float64 in both backends, as Stan does (float32 Cholesky factors of e.g.
Gaussian-process kernels fail); JAX needs it switched on (``float64``).
"""

from collections.abc import Mapping

__all__ = ["float64", "jax_data", "torch_data"]


def float64():
    """A context in which JAX computes in float64 (``jax.enable_x64``)."""
    import jax

    return jax.enable_x64(True)


def jax_data(model, data: Mapping | None = None) -> dict:
    """The model's data as jax arrays, the keys of ``data`` (numpy arrays) replaced; call it inside ``float64()``."""
    if data is None:
        return model.jax_data()
    import jax.numpy as jnp

    return {**model.jax_data(), **{key: jnp.asarray(value) for key, value in data.items()}}


def torch_data(model, data: Mapping | None = None, device: str = "cpu") -> dict:
    """The model's data as tensors on ``device`` ("auto" picks CUDA when present), the keys of ``data`` replaced:
    the Pyro model computes there."""
    import torch

    from ppgen.device import resolve_device

    device = resolve_device(device)
    return {
        **model.torch_data(device=device),
        **{key: torch.as_tensor(value, device=device) for key, value in (data or {}).items()},
    }
