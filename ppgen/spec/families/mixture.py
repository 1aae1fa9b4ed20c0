"""The ``[model]`` table of a finite mixture whose assignment is summed out by enumeration."""

from typing import TYPE_CHECKING, Literal

from pydantic import PositiveInt

from ppgen.spec.tables import ModelTable, Seed

if TYPE_CHECKING:
    from ppgen.spec.schema import DataSpec

__all__ = ["MixtureSpec"]


class MixtureSpec(ModelTable):
    """The ``[model]`` table of a finite mixture of Gaussians or of Bernoulli products, fitted by SVI with its
    assignment summed out (the exact likelihood EM maximizes); see ``ppgen.models.mixture``."""

    kind: Literal["mixture"] = "mixture"
    components: PositiveInt = 10  # K
    likelihood: Literal["gaussian", "bernoulli"] = "gaussian"  # bernoulli: binary data (data.binarize)
    covariance: Literal["diagonal", "full"] = "diagonal"  # gaussian components only
    init_seed: Seed = 0  # k-means++ choice of the initial centres among the first training batch

    def check(self, data: "DataSpec") -> None:
        if self.likelihood == "bernoulli" and data.binarize == "none" and data.name != "binarized_mnist":
            raise ValueError(
                "model.likelihood = 'bernoulli' needs binary data: set data.binarize to 'dynamic' or 'threshold',"
                " or use likelihood 'gaussian'"
            )
        if self.likelihood == "bernoulli" and self.covariance == "full":
            raise ValueError("model.covariance = 'full' applies to likelihood 'gaussian' only, not 'bernoulli'")
