"""scikit-learn's bundled handwritten digits: 1,797 grayscale 8x8 images, ten classes.

Ships inside scikit-learn, so it always works offline: the dataset for quick
runs and tests.
"""
from __future__ import annotations

import numpy as np

Split = tuple[np.ndarray, np.ndarray]


def load_digits_dataset(test_size: float = 0.2, seed: int = 0) -> tuple[Split, Split]:
    """``(X_train, y_train), (X_test, y_test)``, a stratified split of the 8x8 digits.

    X: float32 (N, 1, 8, 8) scaled from 0..16 to [0, 1]; y: int64 (N,) in 0..9.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = (X.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    y = y.astype(np.int64)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y
    )
    return (X_train, y_train), (X_test, y_test)
