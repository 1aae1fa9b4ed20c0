"""The generative model zoo's registry: each family is a PyroModule with ``model`` and ``guide``
methods that answers the ``GenerativeFamily`` protocol (``ppgen.models.family``); ``FAMILIES`` maps a
``[model]`` table's kind to the family built from it. A new family implements the protocol and joins with
``register_family``."""

import torch

from ppgen.models.autoregressive import MADE, NADE
from ppgen.models.cvae import ConditionalVAE
from ppgen.models.diffusion import DDPM
from ppgen.models.energy import EBM
from ppgen.models.family import GenerativeFamily
from ppgen.models.flow_density import FlowDensity
from ppgen.models.gan import GAN
from ppgen.models.hvae import HierarchicalVAE
from ppgen.models.mixture import Mixture
from ppgen.models.score import ScoreModel
from ppgen.models.vae import VAE
from ppgen.spec.schema import GuideSpec

__all__ = ["FAMILIES", "register_family", "family_of", "build_model"]

FAMILIES: dict[str, type[GenerativeFamily]] = {
    family.kind: family
    for family in (VAE, ConditionalVAE, HierarchicalVAE, FlowDensity, DDPM, GAN, EBM, ScoreModel, NADE, MADE, Mixture)
}


def register_family(family: type[GenerativeFamily]) -> type[GenerativeFamily]:
    """Build ``family`` for ``[model]`` tables of kind ``family.kind`` (a class decorator)."""
    FAMILIES[family.kind] = family
    return family


def family_of(spec) -> type[GenerativeFamily]:
    """The family a ``[model]`` table describes."""
    return FAMILIES[spec.kind]


def build_model(
    spec,
    event_shape: tuple[int, ...],
    guide: GuideSpec | None = None,
    labels: torch.Tensor | None = None,
) -> GenerativeFamily:
    """The model a ``[model]`` table (and ``[guide]`` table) describes, for examples of ``event_shape``.

    ``labels`` [N] are the training labels, from which a conditional model takes its classes and log p(y).
    """
    return family_of(spec).from_spec(spec, tuple(event_shape), guide, labels)
