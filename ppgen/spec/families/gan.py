"""The ``[model]`` table of a generative adversarial network, the likelihood-free baseline (Goodfellow et al. 2014)."""

from typing import Literal

from ppgen.spec.tables import ModelTable

__all__ = ["GANSpec"]


class GANSpec(ModelTable):
    """The ``[model]`` table of a GAN, the likelihood-free baseline (Goodfellow et al. 2014)."""

    kind: Literal["gan"] = "gan"
