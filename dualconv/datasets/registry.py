"""The datasets by name, as the command line knows them."""
from __future__ import annotations

import os

import numpy as np

from .digits import Split, load_digits_dataset
from .images import ScaledImages
from .mnist import FASHION_MNIST, MNIST, load_idx_dataset, load_idx_split

DATASETS = ("mnist", "fashion-mnist", "digits")

CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "digits": tuple(str(i) for i in range(10)),
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
}


IDX_FILESETS = {"mnist": MNIST, "fashion-mnist": FASHION_MNIST}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None,
                 uint8: bool = False, strict: bool = False) -> tuple[Split, Split]:
    """``(X_train, y_train), (X_test, y_test)`` of the dataset ``name`` (one of DATASETS).

    ``data_dir`` is where to look first for MNIST-format files; digits ignores it.
    With ``uint8``, each X is a ScaledImages: the integer pixels, scaled to
    float32 in [0, 1] one batch at a time (a quarter of the memory). With ``strict``
    (the command line's explicit --data-dir), the files are read from ``data_dir`` only.
    """
    if name in IDX_FILESETS:
        return load_idx_dataset(IDX_FILESETS[name], data_dir, uint8=uint8, strict=strict)
    if name == "digits":
        train, test = load_digits_dataset()
        return (_digits_pixels(train) if uint8 else train), (_digits_pixels(test) if uint8 else test)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def load_test_split(name: str, data_dir: str | os.PathLike | None = None, uint8: bool = False,
                    strict: bool = False) -> Split:
    """``(X_test, y_test)`` of the dataset ``name``, reading only the test files."""
    if name in IDX_FILESETS:
        return load_idx_split(IDX_FILESETS[name], "test", data_dir, uint8=uint8, strict=strict)
    return load_dataset(name, data_dir, uint8=uint8)[1]


def _digits_pixels(split: Split) -> Split:
    """The digits' 0..16 pixel values back as integers, in a ScaledImages (bitwise the same floats)."""
    X, y = split
    return ScaledImages(np.rint(X * np.float32(16.0)).astype(np.uint8), 16.0), y
