import math

import numpy as np
import pytest
import torch

from ppgen.data.toy import CHECKERBOARD_SQUARE, EIGHT_GAUSSIANS_RADIUS, RING_RADII, TOY_SETS, make_toy
from ppgen.errors import DataError

DEFAULT_NOISE = {"moons": 0.2, "rings": 0.08, "eight_gaussians": 0.5 / math.sqrt(2), "checkerboard": 0.0}
NUM_EXAMPLES = 20000


@pytest.mark.parametrize("name", TOY_SETS)
def test_make_toy_shape_dtype_and_determinism(name):
    points = make_toy(name, 1000, seed=5)
    assert points.shape == (1000, 2) and points.dtype == torch.float32 and points.is_contiguous()
    assert torch.isfinite(points).all()
    assert torch.equal(make_toy(name, 1000, seed=5), points)
    assert not torch.equal(make_toy(name, 1000, seed=6), points)


@pytest.mark.parametrize("name", TOY_SETS)
def test_make_toy_default_noise(name):
    assert torch.equal(make_toy(name, 100), make_toy(name, 100, noise=DEFAULT_NOISE[name]))


@pytest.mark.parametrize("name", TOY_SETS)
def test_make_toy_leaves_the_global_rngs_alone(name):
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()
    make_toy(name, 100, seed=0)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), numpy_state))


def test_moons_without_noise_lie_on_two_half_circles():
    x, y = make_toy("moons", NUM_EXAMPLES, noise=0.0).double().unbind(1)
    # Upper moon: radius 2 about (-1, -0.2), y above the centre; lower moon: radius 2 about (1, 0.8), y below.
    upper = ((x + 1) ** 2 + (y + 0.2) ** 2 - 4).abs() < 1e-5
    lower = ((x - 1) ** 2 + (y - 0.8) ** 2 - 4).abs() < 1e-5
    assert (upper | lower).all()
    assert (y[upper] >= -0.2 - 1e-6).all() and (y[lower] <= 0.8 + 1e-6).all()
    # Each point picks a moon with probability 1/2: the share's standard error is 0.0035, far inside 0.05.
    assert 0.45 < upper.double().mean() < 0.55


def test_rings_without_noise_lie_on_the_four_circles():
    radius = make_toy("rings", NUM_EXAMPLES, noise=0.0).double().norm(dim=1)
    distance = (radius[:, None] - torch.tensor(RING_RADII, dtype=torch.float64)).abs()
    assert (distance.min(dim=1).values < 1e-5).all()
    assert set(distance.argmin(dim=1).tolist()) == {0, 1, 2, 3}


def test_eight_gaussians_without_noise_are_the_eight_centres():
    points = make_toy("eight_gaussians", NUM_EXAMPLES, noise=0.0).double()
    angle = torch.arange(8, dtype=torch.float64) * math.pi / 4
    centres = EIGHT_GAUSSIANS_RADIUS * torch.stack([angle.cos(), angle.sin()], dim=1)
    distance = torch.cdist(points, centres)
    assert (distance.min(dim=1).values < 1e-5).all()
    assert set(distance.argmin(dim=1).tolist()) == set(range(8))


def test_checkerboard_without_noise_covers_only_the_black_squares():
    points = make_toy("checkerboard", NUM_EXAMPLES, noise=0.0)
    assert points.min() >= -4.0 and points.max() <= 4.0
    square = ((points + 4.0) / CHECKERBOARD_SQUARE).floor().long().clamp(max=3)
    assert ((square[:, 0] + square[:, 1]) % 2 == 0).all()
    assert len(set(map(tuple, square.tolist()))) == 8


@pytest.mark.parametrize("name", ["moons", "eight_gaussians", "checkerboard"])
def test_noise_is_added_per_coordinate_with_the_given_scale(name):
    # With the same seed the noiseless points are the same, so the difference is noise * standard normals.
    clean = make_toy(name, NUM_EXAMPLES, noise=0.0, seed=1).double()
    residual = (make_toy(name, NUM_EXAMPLES, noise=0.3, seed=1).double() - clean) / 0.3
    assert torch.allclose(residual, (make_toy(name, NUM_EXAMPLES, noise=0.1, seed=1).double() - clean) / 0.1, atol=1e-4)
    # The sample variance of n = 40000 standard normals has standard error sqrt(2 / n) = 0.0071; allow z = 5.
    assert abs(residual.var().item() - 1.0) < 5 * math.sqrt(2 / residual.numel())


def test_rings_noise_is_radial():
    clean = make_toy("rings", NUM_EXAMPLES, noise=0.0, seed=1).double()
    noisy = make_toy("rings", NUM_EXAMPLES, noise=0.08, seed=1).double()
    cosine = torch.nn.functional.cosine_similarity(clean, noisy)
    assert (cosine > 1 - 1e-6).all()
    residual = (noisy.norm(dim=1) - clean.norm(dim=1)) / 0.08
    # Variance of n = 20000 standard normals: standard error sqrt(2 / n) = 0.01; allow z = 5.
    assert abs(residual.var().item() - 1.0) < 5 * math.sqrt(2 / NUM_EXAMPLES)


def test_make_toy_rejects_an_unknown_name():
    with pytest.raises(DataError) as error:
        make_toy("spirals", 10)
    assert str(error.value) == (
        "unknown toy data set 'spirals'; valid names: moons, rings, eight_gaussians, checkerboard"
    )


def test_make_toy_rejects_bad_sizes_and_noise():
    with pytest.raises(DataError, match=r"^toy data set 'moons': num_examples must be at least 1, got 0$"):
        make_toy("moons", 0)
    with pytest.raises(DataError, match=r"^toy data set 'rings': noise must be non-negative, got -0.1$"):
        make_toy("rings", 10, noise=-0.1)
