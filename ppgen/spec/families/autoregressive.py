"""The ``[model]`` tables of the autoregressive densities NADE and MADE."""

from typing import Literal

from ppgen.spec.tables import ModelTable

__all__ = ["NADESpec", "MADESpec"]


class NADESpec(ModelTable):
    """The ``[model]`` table of a NADE (Larochelle & Murray 2011): conditionals sharing one hidden layer."""

    kind: Literal["nade"] = "nade"


class MADESpec(ModelTable):
    """The ``[model]`` table of a MADE (Germain et al. 2015): a masked autoencoder as an autoregressive density."""

    kind: Literal["made"] = "made"
