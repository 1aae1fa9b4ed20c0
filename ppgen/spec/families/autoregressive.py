"""The ``[model]`` tables of the autoregressive densities NADE and MADE."""

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, PositiveInt

from ppgen.spec.tables import Activation, ModelTable, Seed

if TYPE_CHECKING:
    from ppgen.spec.schema import DataSpec

__all__ = ["NADESpec", "MADESpec", "BINARY_DATA_SETS"]

BINARY_DATA_SETS = ("binarized_mnist",)  # data sets that are binary as they are, whatever data.binarize says
AutoregressiveLikelihood = Literal["bernoulli", "gaussian"]


class _AutoregressiveTable(ModelTable):
    """A ``[model]`` table of an autoregressive density, whose ``likelihood`` must fit the data: Bernoulli
    conditionals for binary data, Gaussian ones (a density, unbounded on binary data) for real-valued data."""

    def check(self, data: "DataSpec") -> None:
        binary = data.binarize != "none" or data.name in BINARY_DATA_SETS
        if self.likelihood == "bernoulli" and not binary:
            raise ValueError(
                "model.likelihood = 'bernoulli' needs binary data: set data.binarize to 'dynamic' or 'threshold'"
                " (data.name = 'binarized_mnist' is binary as it is), or use likelihood 'gaussian'"
            )
        if self.likelihood == "gaussian" and binary:
            raise ValueError(
                f"model.likelihood = 'gaussian' is a density of real-valued data, unbounded on binary data"
                f" (data.name = {data.name!r}, data.binarize = {data.binarize!r}): set data.binarize = 'none' (with"
                " data.dequantize = true for pixels), or use likelihood 'bernoulli'"
            )


class NADESpec(_AutoregressiveTable):
    """The ``[model]`` table of a NADE (Larochelle & Murray 2011): conditionals sharing one hidden layer; with
    likelihood "gaussian", RNADE's mixtures of ``components`` Gaussians (Uria et al. 2013, arXiv:1306.0186); with
    ``orderings`` > 1, an ensemble over that many orderings (Uria et al. 2014, arXiv:1310.1757)."""

    kind: Literal["nade"] = "nade"
    hidden: PositiveInt = 500  # hidden units
    activation: Literal["sigmoid"] | Activation = "sigmoid"
    likelihood: AutoregressiveLikelihood = "bernoulli"
    components: PositiveInt = 1  # gaussian only: Gaussians in each conditional's mixture (RNADE)
    orderings: PositiveInt = 1  # the first is the natural order, the others drawn at random from seed
    seed: Seed = 0  # of the orderings

    def check(self, data: "DataSpec") -> None:
        super().check(data)
        if self.components > 1 and self.likelihood != "gaussian":
            raise ValueError(
                f"model.components = {self.components} applies to likelihood 'gaussian' (RNADE's mixtures), not"
                f" {self.likelihood!r}"
            )


class MADESpec(_AutoregressiveTable):
    """The ``[model]`` table of a MADE (Germain et al. 2015, arXiv:1502.03509): a masked autoencoder as an
    autoregressive density; with ``masks`` > 1, an ensemble over that many masks, one drawn per training batch."""

    kind: Literal["made"] = "made"
    hidden: Annotated[list[PositiveInt], Field(min_length=1)] = [500]  # widths of the hidden layers
    activation: Activation = "relu"
    likelihood: AutoregressiveLikelihood = "bernoulli"
    masks: PositiveInt = 1  # the first has the natural order; each mask draws its hidden units' connectivity
    order_agnostic: bool = True  # masks after the first also draw a random order (else all keep the natural one)
    seed: Seed = 0  # of the masks
