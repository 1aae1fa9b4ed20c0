"""The ``[model]`` table of a finite mixture whose assignment is summed out by enumeration."""

from typing import Literal

from ppgen.spec.tables import ModelTable

__all__ = ["MixtureSpec"]


class MixtureSpec(ModelTable):
    """The ``[model]`` table of a finite mixture whose assignment is summed out by enumeration."""

    kind: Literal["mixture"] = "mixture"
