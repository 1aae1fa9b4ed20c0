"""The ``[model]`` table of a noise-conditional score network (Song & Ermon 2019) trained by score matching."""

from typing import Annotated, ClassVar, Literal

from pydantic import Field, PositiveFloat, PositiveInt

from ppgen.spec.tables import Activation, ModelTable

__all__ = ["ScoreSpec"]


class ScoreSpec(ModelTable):
    """The ``[model]`` table of a noise-conditional score network (Song & Ermon 2019, arXiv:1907.05600) trained by
    score matching at noise levels sigma_max > ... > sigma_min, sampled by annealed Langevin dynamics or a
    predictor-corrector sampler, with log p(x) from the probability-flow ODE (Song et al. 2021, arXiv:2011.13456)."""

    kind: Literal["score"] = "score"
    hidden: list[PositiveInt] = [128, 128]  # widths of the MLP s(x, sigma)
    activation: Activation = "silu"  # smooth, so that the ODE's drift and its divergence are smooth
    time_dim: Annotated[int, Field(ge=2)] = 64  # size of the embedding of log sigma
    sigma_min: PositiveFloat = 0.01
    sigma_max: PositiveFloat = 5.0  # about the largest distance between two training examples (Song & Ermon 2020)
    # the data's scale for the network's preconditioning (Karras et al. 2022): unset, each dimension's mean and
    # standard deviation from the first training batch; a number, one scale for every dimension about a zero mean
    sigma_data: PositiveFloat | None = None
    num_levels: Annotated[int, Field(ge=2)] = 50  # L geometric levels for training and the samplers
    # the level of each training example: t ~ U(0, 1) on the continuous schedule (Song et al. 2021), which the ODE
    # likelihood evaluates everywhere, or one of the L levels (Song & Ermon 2019)
    training_levels: Literal["continuous", "discrete"] = "continuous"
    objective: Literal["dsm", "ssm"] = "dsm"  # denoising or sliced score matching, weighted by sigma^2
    projections: PositiveInt = 1  # ssm: random projections per example
    probes: Annotated[int, Field(ge=2)] = 4  # ODE likelihood: Hutchinson probes per example (its standard error)
    exact_trace: bool = False  # ODE likelihood: the exact divergence (D network gradients; for small D)
    ode_rtol: PositiveFloat = 1e-5
    ode_atol: PositiveFloat = 1e-5

    samplers: ClassVar[tuple[str, ...]] = ("langevin", "pc")

    def check(self, data) -> None:
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"model.sigma_min = {self.sigma_min} must be below model.sigma_max = {self.sigma_max}")
        if data.binarize != "none":
            raise ValueError(
                f"model.kind = 'score' needs continuous data, not data.binarize = {data.binarize!r}: use 'none'"
            )
