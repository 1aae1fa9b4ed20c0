import pyro
import pyro.distributions as dist
import pytest
import torch
from models_exact import ConjugateNormalMean, ProbabilisticPCA

from ppgen.errors import PpgenError
from ppgen.plates import PlateStructure, inspect_plates


def _nested(x):
    """A data plate at dim -2 with a feature plate inside it: two plates deep, all sites local."""
    with pyro.plate("data", x.shape[0], dim=-2), pyro.plate("features", x.shape[1], dim=-1):
        pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)


def _sequential(x):
    for i in pyro.plate("data", x.shape[0]):
        pyro.sample(f"x_{i}", dist.Normal(0.0, 1.0).expand(x.shape[1:]).to_event(1), obs=x[i])


def _empty(x):
    pass


@pytest.mark.parametrize(
    ("model", "guide", "expected"),
    [
        (ProbabilisticPCA().model, ProbabilisticPCA().exact_guide, PlateStructure(1, True)),
        (ConjugateNormalMean().model, ConjugateNormalMean().exact_guide, PlateStructure(1, False)),
        (_nested, _empty, PlateStructure(2, True)),
    ],
)
def test_plate_structure_is_read_from_the_trace(model, guide, expected):
    assert inspect_plates(model, guide, torch.randn(6, 5, dtype=torch.float64)) == expected


def test_a_sequential_data_plate_is_reported():
    with pytest.raises(PpgenError, match="must be vectorized"):
        inspect_plates(_sequential, _empty, torch.randn(3, 2))
