"""The ``[model]`` table of an energy-based model p(x) ∝ exp(-E(x)) with an MLP energy."""

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt

from ppgen.spec.tables import Activation, Fraction, ModelTable

if TYPE_CHECKING:
    from ppgen.spec.schema import DataSpec

__all__ = ["EBMSpec"]


class EBMSpec(ModelTable):
    """The ``[model]`` table of an energy-based model p(x) ∝ exp(-E(x)) with an MLP energy (``ppgen.models.energy``):
    trained by contrastive divergence with a replay buffer (Du & Mordatch 2019) or by denoising score matching
    (Vincent 2011); its held-out log-likelihood is estimated by annealed importance sampling (Neal 2001)."""

    kind: Literal["ebm"] = "ebm"
    hidden: Annotated[list[PositiveInt], Field(min_length=1)] = [128, 128]  # the energy network's widths
    activation: Activation = "silu"  # smooth: Langevin and score matching differentiate the energy
    objective: Literal["cd", "dsm"] = "cd"  # contrastive divergence, or denoising score matching
    langevin_steps: PositiveInt = 20  # cd: Langevin steps per negative per training step
    step_size: PositiveFloat = 0.01  # Langevin step, in the data's whitened units (see ppgen.models.energy)
    noise: PositiveFloat = 1.0  # Langevin noise scale: 1 samples p, < 1 the colder p^(1 / noise^2)
    buffer_size: PositiveInt = 10000  # cd: persistent negatives kept in the replay buffer
    reinit: Fraction = 0.05  # cd: probability that a negative restarts from the base Gaussian
    alpha: NonNegativeFloat = 0.1  # cd: weight of the energy-magnitude penalty
    dsm_sigma: PositiveFloat = 0.1  # dsm: standard deviation of the noise added to the data
    ais_steps: PositiveInt = 500  # temperatures of the annealed importance sampler of log Z
    ais_chains: Annotated[int, Field(ge=2)] = 1000  # its independent chains
    sample_steps: PositiveInt = 200  # Langevin steps from the base Gaussian per drawn example

    samplers: ClassVar[tuple[str, ...]] = ("langevin",)

    def check(self, data: "DataSpec") -> None:
        if data.binarize != "none":
            raise ValueError(
                f"model.kind = 'ebm' is a density on continuous data: data.binarize = {data.binarize!r} must be 'none'"
            )
