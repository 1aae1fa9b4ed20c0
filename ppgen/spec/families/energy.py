"""The ``[model]`` table of an energy-based model p(x) ∝ exp(-E(x)) with an MLP energy."""

from typing import Literal

from ppgen.spec.tables import ModelTable

__all__ = ["EBMSpec"]


class EBMSpec(ModelTable):
    """The ``[model]`` table of an energy-based model p(x) ∝ exp(-E(x)) with an MLP energy."""

    kind: Literal["ebm"] = "ebm"
