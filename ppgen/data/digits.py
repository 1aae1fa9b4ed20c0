"""scikit-learn's bundled 8x8 handwritten digits: the demo data set that needs no download."""

import numpy as np
import sklearn.datasets
import torch
from torch import Tensor

__all__ = ["load_digits"]

_MAX_PIXEL = 16.0  # the digits' pixels are counts of set bits in 4x4 blocks: 0..16


def load_digits() -> tuple[Tensor, Tensor]:
    """The 1797 UCI optical-recognition digits, scaled to [0, 1].

    Returns:
        x: [1797, 64] float32 pixel intensities in [0, 1] (event shape (8, 8)).
        y: [1797] int64 digit labels 0..9.
    """
    x, y = sklearn.datasets.load_digits(return_X_y=True)
    x = (x / _MAX_PIXEL).astype(np.float32)
    return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
