"""The fixed binarization of MNIST (Larochelle & Murray 2011, after Salakhutdinov & Murray 2008), the data set of the
autoregressive density papers, from one .npz file of its official train/valid/test splits, read without pickles."""

import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ppgen.errors import DataError

__all__ = ["BINARIZED_MNIST_FILE", "BINARIZED_MNIST_SPLITS", "load_binarized_mnist"]

BINARIZED_MNIST_FILE = "binarized_mnist.npz"
BINARIZED_MNIST_SPLITS = ("train", "valid", "test")  # 50,000, 10,000 and 10,000 images in the published file
_PIXELS = 28 * 28


def _check_split(path: Path, name: str, array: np.ndarray) -> Tensor:
    """One split as [N, 784] float32 0/1, after checking it is a non-empty uint8 0/1 array of that shape."""
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != _PIXELS or len(array) == 0:
        raise DataError(
            f"binarized MNIST file {path}: array {name!r} is {array.dtype} of shape {array.shape}, not uint8 of"
            f" shape [N, {_PIXELS}] with N >= 1"
        )
    if array.max() > 1:
        raise DataError(f"binarized MNIST file {path}: array {name!r} holds values other than 0 and 1")
    return torch.from_numpy(array.astype(np.float32))


def load_binarized_mnist(path: str | Path) -> tuple[Tensor, Tensor, Tensor]:
    """The official splits of binarized MNIST from ``path``, an .npz (loaded with ``allow_pickle=False``) holding
    uint8 arrays ``train``, ``valid`` and ``test`` of shape [N, 784] with values 0 and 1 (no labels).

    Returns:
        train, validation, test: [N, 784] float32 tensors of 0s and 1s (event shape (28, 28)).

    Raises:
        DataError: in one line naming the file, when it is missing or unreadable (not an .npz, or holding pickled
            objects), lacks a split, or a split is not a non-empty uint8 0/1 array of 784 columns.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"binarized MNIST file {path} not found: set data.path to it, or PPGEN_DATA to a folder holding"
            f" binarized_mnist/{BINARIZED_MNIST_FILE}"
        )
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"binarized MNIST file {path}: a single array, not an .npz of train, valid and test")
        with archive:
            missing = [name for name in BINARIZED_MNIST_SPLITS if name not in archive.files]
            if missing:
                raise DataError(
                    f"binarized MNIST file {path}: no array {missing[0]!r} (it needs train, valid and test)"
                )
            arrays = {name: archive[name] for name in BINARIZED_MNIST_SPLITS}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"binarized MNIST file {path}: cannot be read as an .npz of arrays ({reason})") from None
    train, validation, test = (_check_split(path, name, arrays[name]) for name in BINARIZED_MNIST_SPLITS)
    return train, validation, test
