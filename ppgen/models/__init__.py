"""The generative model zoo: each model is a PyroModule with ``model`` and ``guide`` methods, and
``data_keys`` naming the data it takes (``("x",)``, or ``("x", "y")`` for labelled models)."""

import math

import torch

from ppgen.errors import SpecError
from ppgen.models.cvae import ConditionalVAE
from ppgen.models.diffusion import DDPM
from ppgen.models.flow_density import FlowDensity
from ppgen.models.hvae import HierarchicalVAE
from ppgen.models.vae import VAE
from ppgen.spec.schema import GuideSpec

__all__ = ["VAE", "ConditionalVAE", "HierarchicalVAE", "FlowDensity", "DDPM", "MODELS", "build_model"]

MODELS = {"vae": VAE, "cvae": ConditionalVAE, "hvae": HierarchicalVAE, "flow": FlowDensity, "ddpm": DDPM}


def build_model(
    spec,
    event_shape: tuple[int, ...],
    guide: GuideSpec | None = None,
    labels: torch.Tensor | None = None,
) -> torch.nn.Module:
    """The model a ``[model]`` table (and ``[guide]`` table) describes, for examples of ``event_shape``.

    ``labels`` are the training labels, from which a conditional model takes its classes and log p(y).
    """
    data_dim = math.prod(event_shape)
    _check_autoregressive_widths(spec, guide or GuideSpec(), data_dim)
    options = spec.model_dump(exclude={"kind"})
    if spec.kind == "ddpm":
        options.update(event_shape=event_shape)
    if spec.kind in ("vae", "cvae", "hvae"):
        guide = guide or GuideSpec()
        options.update(guide_family=guide.family, guide_flows=guide.flows, guide_hidden=guide.hidden)
        if spec.kind == "hvae":
            options.update(structure=guide.structure)
    if spec.kind == "cvae":
        counts = torch.bincount(labels).double()
        options.update(num_classes=len(counts), class_log_prior=(counts / counts.sum()).log())
    return MODELS[spec.kind](data_dim=data_dim, **options)


def _check_autoregressive_widths(spec, guide: GuideSpec, data_dim: int) -> None:
    """Pyro's masked autoregressive networks need every hidden width >= the dimension they transform."""
    if spec.kind == "flow" and spec.family == "maf":
        key, hidden, dim = "model.hidden", spec.hidden, data_dim
    elif spec.kind in ("vae", "cvae", "hvae") and guide.family in ("iaf", "spline"):
        dims = spec.latent_dims if spec.kind == "hvae" else [spec.latent_dim]
        key, hidden, dim = "guide.hidden", guide.hidden, max(dims)
    else:
        return
    if any(width < dim for width in hidden):
        raise SpecError(
            f"{key} = {hidden}: autoregressive flows need every hidden width >= the dimension they transform ({dim})"
        )
