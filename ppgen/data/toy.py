"""Two-dimensional toy densities for flows and diffusion models, as in FFJORD (Grathwohl et al., arXiv:1810.01367)."""

import math

import numpy as np
import torch
from torch import Tensor

from ppgen.errors import DataError

__all__ = ["TOY_SETS", "RING_RADII", "EIGHT_GAUSSIANS_RADIUS", "CHECKERBOARD_SQUARE", "make_toy"]

TOY_SETS = ("moons", "rings", "eight_gaussians", "checkerboard")

_DEFAULT_NOISE = {"moons": 0.2, "rings": 0.08, "eight_gaussians": 0.5 / math.sqrt(2), "checkerboard": 0.0}
RING_RADII = (0.75, 1.5, 2.25, 3.0)
# FFJORD places the modes at radius 4 and then divides every point by 1.414.
EIGHT_GAUSSIANS_RADIUS = 2.0 * math.sqrt(2)
CHECKERBOARD_SQUARE = 2.0  # a 4x4 board of squares of side 2 covers [-4, 4]^2


def _jitter(rng: np.random.Generator, points: np.ndarray, noise: float) -> np.ndarray:
    return points + noise * rng.standard_normal(points.shape)


def _moons(rng: np.random.Generator, num_examples: int, noise: float) -> np.ndarray:
    angle = rng.uniform(0.0, math.pi, num_examples)
    lower = rng.integers(0, 2, num_examples).astype(bool)
    upper_moon = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    lower_moon = np.stack([1.0 - np.cos(angle), 0.5 - np.sin(angle)], axis=1)
    points = np.where(lower[:, None], lower_moon, upper_moon)
    # FFJORD's scaling of sklearn's moons: centred near the origin, unit circles grown to radius 2.
    return _jitter(rng, 2.0 * points + np.array([-1.0, -0.2]), noise)


def _rings(rng: np.random.Generator, num_examples: int, noise: float) -> np.ndarray:
    angle = rng.uniform(0.0, 2.0 * math.pi, num_examples)
    radius = np.asarray(RING_RADII)[rng.integers(0, len(RING_RADII), num_examples)]
    radius = radius + noise * rng.standard_normal(num_examples)
    return radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def _eight_gaussians(rng: np.random.Generator, num_examples: int, noise: float) -> np.ndarray:
    angle = rng.integers(0, 8, num_examples) * (math.pi / 4.0)
    return _jitter(rng, EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1), noise)


def _checkerboard(rng: np.random.Generator, num_examples: int, noise: float) -> np.ndarray:
    column = rng.integers(0, 4, num_examples)
    # Rows of the same parity as the column make the squares with (row + column) even, the black ones.
    row = 2 * rng.integers(0, 2, num_examples) + column % 2
    square = np.stack([column, row], axis=1)
    return _jitter(rng, CHECKERBOARD_SQUARE * (square + rng.uniform(size=(num_examples, 2))) - 4.0, noise)


_MAKERS = {"moons": _moons, "rings": _rings, "eight_gaussians": _eight_gaussians, "checkerboard": _checkerboard}


def make_toy(name: str, num_examples: int, noise: float | None = None, seed: int = 0) -> Tensor:
    """Draw points from a 2-D toy density, the same points for the same seed.

    Args:
        name: one of TOY_SETS. "moons": two interleaving half circles; "rings": four concentric circles of
            radii RING_RADII; "eight_gaussians": eight modes equally spaced on a circle; "checkerboard":
            uniform on the black squares of a 4x4 board on [-4, 4]^2.
        num_examples: N, the number of points.
        noise: standard deviation of the Gaussian noise added to each coordinate (radial for "rings");
            None picks the set's default (0.2, 0.08, 0.5 / sqrt(2), 0).
        seed: seed of a private numpy Generator; the global RNGs are not touched.

    Returns:
        [N, 2] float32 points.
    """
    if name not in _MAKERS:
        raise DataError(f"unknown toy data set {name!r}; valid names: {', '.join(TOY_SETS)}")
    if num_examples < 1:
        raise DataError(f"toy data set {name!r}: num_examples must be at least 1, got {num_examples}")
    noise = _DEFAULT_NOISE[name] if noise is None else noise
    if noise < 0:
        raise DataError(f"toy data set {name!r}: noise must be non-negative, got {noise}")
    points = _MAKERS[name](np.random.default_rng(seed), num_examples, noise)
    return torch.from_numpy(points.astype(np.float32))
