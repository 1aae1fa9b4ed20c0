"""Data sets as tensors: scikit-learn digits, MNIST IDX files, 2-D toy sets and user array files."""

from ppgen.data.arrays import SUPPORTED_SUFFIXES, load_array_file
from ppgen.data.binarize import BINARIZE_MODES, check_unit_interval, dynamic_binarize, threshold_binarize
from ppgen.data.dequantize import DATASET_LEVELS, dequantize, discrete_bits_per_dim
from ppgen.data.digits import load_digits
from ppgen.data.load import DATASET_NAMES, load_data
from ppgen.data.mnist import load_mnist, parse_idx
from ppgen.data.splits import Split, Splits, holdout_indices, split_indices
from ppgen.data.toy import TOY_SETS, make_toy

__all__ = [
    "BINARIZE_MODES",
    "DATASET_LEVELS",
    "DATASET_NAMES",
    "SUPPORTED_SUFFIXES",
    "TOY_SETS",
    "Split",
    "Splits",
    "check_unit_interval",
    "dequantize",
    "discrete_bits_per_dim",
    "dynamic_binarize",
    "holdout_indices",
    "load_array_file",
    "load_data",
    "load_digits",
    "load_mnist",
    "make_toy",
    "parse_idx",
    "split_indices",
    "threshold_binarize",
]
