"""The generative model zoo: each model is a PyroModule with ``model`` and ``guide`` methods, and
``data_keys`` naming the data it takes (``("x",)``, or ``("x", "y")`` for labelled models)."""

import math

import torch

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
