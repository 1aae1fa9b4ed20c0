"""The ``[model]`` table of a noise-conditional score network (Song & Ermon 2019) trained by score matching."""

from typing import Literal

from ppgen.spec.tables import ModelTable

__all__ = ["ScoreSpec"]


class ScoreSpec(ModelTable):
    """The ``[model]`` table of a noise-conditional score network (Song & Ermon 2019) trained by score matching."""

    kind: Literal["score"] = "score"
