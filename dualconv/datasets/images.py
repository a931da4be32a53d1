"""Images as arrays: ScaledImages (integer pixels scaled one batch at a time) and read_image (PNG files)."""
from __future__ import annotations

import os
from typing import Any

import numpy as np


class ScaledImages:
    """Images (N, C, H, W) stored as integer pixels that read as floats in [0, 1].

    ``X[idx]`` and ``X[a:b]`` return ``pixels[idx].astype(dtype) / scale``: exactly
    the values a whole-array conversion gives, for the batch only. MNIST's 60,000
    training images take 47 MB this way instead of 188 MB as float32. The Trainer
    and ``Sequential.predict`` take it wherever they take an array; ``np.asarray(X)``
    converts the whole set.
    """

    def __init__(self, pixels: np.ndarray, scale: float, dtype: Any = np.float32) -> None:
        if pixels.dtype.kind not in "iu":
            raise TypeError(f"ScaledImages: expected integer pixels, got {pixels.dtype}")
        self.pixels = pixels
        self.scale = float(scale)
        self.dtype = np.dtype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)

    @property
    def ndim(self) -> int:
        return self.pixels.ndim

    @property
    def nbytes(self) -> int:
        return int(self.pixels.nbytes)

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.pixels[index].astype(self.dtype) / self.dtype.type(self.scale)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def astype(self, dtype: Any) -> "ScaledImages":
        """The same pixels read as ``dtype`` (no copy of the pixels)."""
        return ScaledImages(self.pixels, self.scale, dtype)

    def head(self, count: int) -> "ScaledImages":
        """The first ``count`` images (a view of the pixels)."""
        return ScaledImages(self.pixels[:count], self.scale, self.dtype)

    def __repr__(self) -> str:
        return f"ScaledImages(shape={self.shape}, pixels {self.pixels.dtype} / {self.scale:g}, dtype={self.dtype})"


def read_image(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """A grayscale image file as float32 (1, H, W) in [0, 1]; it must be exactly ``size`` (H, W).

    Colour is converted to grayscale. Raises ImportError without Pillow and
    ValueError, naming the file, when it cannot be read or has another size.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            if (height, width) != tuple(size):
                raise ValueError(f"{path} is {width}x{height}; the model expects {size[1]}x{size[0]} grayscale "
                                 f"images (resize it first)")
            pixels = np.asarray(image.convert("L"), dtype=np.float32)
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"cannot read {path} as an image: {exc}") from None
    return (pixels / np.float32(255.0))[None]
