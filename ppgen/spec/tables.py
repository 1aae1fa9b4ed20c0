"""The base of every spec table, and the value types tables share; ``ppgen.spec.schema`` builds the run's tables on
them, and each model family's ``[model]`` table derives from ``ModelTable``."""

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from ppgen.spec.schema import DataSpec

__all__ = ["Table", "ModelTable", "Seed", "Fraction", "Activation", "DEFAULT_TEST_FRACTION"]

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
DEFAULT_TEST_FRACTION = 0.2
Seed = Annotated[int, Field(ge=0, lt=2**32)]  # the range numpy and torch both accept
Activation = Literal["relu", "tanh", "elu", "gelu", "silu", "softplus", "leaky_relu"]


class Table(BaseModel):
    """A TOML table: unknown keys are errors; values are checked, never silently coerced."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ModelTable(Table):
    """A ``[model]`` table, carrying what the run's other tables may hold for its family."""

    takes_guide: ClassVar[bool] = False  # has latent variables, so a [guide] table applies
    samplers: ClassVar[tuple[str, ...]] = ("ancestral",)  # the sampling.sampler values it can draw with

    def check(self, data: "DataSpec") -> None:
        """Raise ValueError, naming the keys, when the table contradicts itself or the ``[data]`` table."""
