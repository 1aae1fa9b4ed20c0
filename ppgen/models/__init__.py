"""The generative model zoo: each model is a PyroModule with ``model`` and ``guide`` methods."""

import torch

from ppgen.models.vae import VAE
from ppgen.spec.schema import VAESpec

__all__ = ["VAE", "MODELS", "build_model"]

MODELS = {"vae": VAE}


def build_model(spec: VAESpec, data_dim: int) -> torch.nn.Module:
    """The model a ``[model]`` table describes, for examples of data_dim dimensions."""
    return MODELS[spec.kind](data_dim=data_dim, **spec.model_dump(exclude={"kind"}))
