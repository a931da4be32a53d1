"""Datasets as NumPy arrays: X float32 (N, 1, H, W) in [0, 1], y int64 (N,)."""
from .digits import load_digits_dataset
from .files import ChecksumError, DatasetError, DatasetNotFoundError
from .idx import IDXFormatError, parse_idx
from .images import ScaledImages
from .mnist import load_fashion_mnist, load_mnist
from .registry import CLASS_NAMES, DATASETS, load_dataset, load_test_split

__all__ = [
    "CLASS_NAMES",
    "DATASETS",
    "ChecksumError",
    "DatasetError",
    "DatasetNotFoundError",
    "IDXFormatError",
    "ScaledImages",
    "load_dataset",
    "load_digits_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "load_test_split",
    "parse_idx",
]
