import math

import pytest
import torch

from ppgen.data.binarize import BINARIZE_MODES, check_unit_interval, dynamic_binarize, threshold_binarize
from ppgen.errors import DataError


def test_binarize_modes():
    assert BINARIZE_MODES == ("none", "threshold", "dynamic")


def test_threshold_binarize_is_strictly_greater():
    x = torch.tensor([[0.0, 0.25, 0.5], [0.5001, 0.75, 1.0]], dtype=torch.float64)
    assert torch.equal(threshold_binarize(x), torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    assert threshold_binarize(x).dtype == torch.float32
    assert torch.equal(threshold_binarize(x, threshold=0.2), torch.tensor([[0.0, 1.0, 1.0], [1.0, 1.0, 1.0]]))


def test_dynamic_binarize_keeps_shape_dtype_and_device_and_draws_zeros_and_ones():
    x = torch.rand(3, 4, dtype=torch.float64)
    with torch.random.fork_rng():
        sample = dynamic_binarize(x)
    assert sample.shape == x.shape and sample.dtype == x.dtype and sample.device == x.device
    assert set(sample.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(dynamic_binarize(torch.tensor([0.0, 1.0, 0.0, 1.0])), torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_dynamic_binarize_uses_the_global_rng():
    x = torch.full((1000,), 0.5)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        first, second = dynamic_binarize(x), dynamic_binarize(x)
        torch.manual_seed(0)
        assert torch.equal(dynamic_binarize(x), first)
    assert not torch.equal(first, second)


def test_dynamic_binarize_mean_matches_the_intensity():
    intensity = torch.tensor([0.02, 0.1, 0.3, 0.5, 0.77, 0.95])
    num_draws = 20000
    with torch.random.fork_rng():
        torch.manual_seed(0)
        draws = dynamic_binarize(intensity.expand(num_draws, -1))
    # The mean of n independent Bernoulli(p) draws has standard error sqrt(p (1 - p) / n), and is close to
    # normal here (n p >= 400). With z = 5 each of the 6 checks fails by chance with probability 5.7e-7
    # (two-sided normal tail), so all pass for every seed but a fraction of about 3.4e-6.
    standard_error = (intensity * (1 - intensity) / num_draws).sqrt()
    assert ((draws.mean(dim=0) - intensity).abs() < 5 * standard_error).all()


def test_check_unit_interval_accepts_the_closed_interval():
    check_unit_interval(torch.tensor([0.0, 0.3, 1.0]), "digits")


@pytest.mark.parametrize(
    ("values", "span"),
    [
        ([0.0, 1.5, 0.2], "[0, 1.5]"),
        ([-0.25, 0.5], "[-0.25, 0.5]"),
        ([0.0, 255.0], "[0, 255]"),
        ([0.5, math.nan], "[nan, nan]"),
    ],
)
def test_check_unit_interval_names_the_source_and_the_span(values, span):
    with pytest.raises(DataError) as error:
        check_unit_interval(torch.tensor(values), "/data/images.npz")
    assert str(error.value) == f"/data/images.npz: values span {span}, but binarization needs intensities in [0, 1]"
