"""scikit-learn's 8x8 digits as 28x28 images, the input size of LeNet, for tests.

Each pixel becomes a 3x3 block (24x24), then a 2-pixel zero border is added.
"""
from __future__ import annotations

import numpy as np


def to_28x28(X: np.ndarray) -> np.ndarray:
    """(N, 1, 8, 8) -> (N, 1, 28, 28): each pixel becomes a 3x3 block, then a 2-pixel zero border."""
    big = np.kron(X, np.ones((1, 1, 3, 3), dtype=X.dtype))
    return np.pad(big, ((0, 0), (0, 0), (2, 2), (2, 2)))


def digits_28(n: int, seed: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """n digits scaled to [0, 1] and upscaled: X float32 (n, 1, 28, 28), y int (n,).

    The first n digits, or with ``seed`` n drawn without replacement in a seeded order.
    """
    from sklearn.datasets import load_digits
    d = load_digits()
    idx = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(len(d.target))[:n]
    images = (d.images[idx] / 16.0).astype(np.float32)[:, None]
    return to_28x28(images), d.target[idx]
