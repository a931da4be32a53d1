"""The datasets by name, as the command line knows them."""
from __future__ import annotations

import os

from .digits import Split, load_digits_dataset
from .mnist import load_fashion_mnist, load_mnist

DATASETS = ("mnist", "fashion-mnist", "digits")

CLASS_NAMES = {
    "mnist": tuple(str(i) for i in range(10)),
    "digits": tuple(str(i) for i in range(10)),
    "fashion-mnist": (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
}


def load_dataset(name: str, data_dir: str | os.PathLike | None = None) -> tuple[Split, Split]:
    """``(X_train, y_train), (X_test, y_test)`` of the dataset ``name`` (one of DATASETS).

    ``data_dir`` is where to look first for MNIST-format files; digits ignores it.
    """
    if name == "mnist":
        return load_mnist(data_dir)
    if name == "fashion-mnist":
        return load_fashion_mnist(data_dir)
    if name == "digits":
        return load_digits_dataset()
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
