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

    Colour is converted to grayscale; an image with an alpha channel is seen on black
    (where its colour is one flat value, the alpha alone carries the digit and is read).
    Raises ImportError without Pillow and ValueError, naming the file, when it cannot be
    read, has another size, or holds 16-bit, 32-bit or float pixels (no scale is implied).
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            if (height, width) != tuple(size):
                raise ValueError(f"{path} is {width}x{height}; the model expects {size[1]}x{size[0]} grayscale "
                                 f"images (resize it first)")
            pixels = _gray(image, path)
    except (OSError, UnidentifiedImageError) as exc:
        raise ValueError(f"cannot read {path} as an image: {exc}") from None
    return (pixels / np.float32(255.0))[None]


def _gray(image: "Any", path: "str | os.PathLike") -> np.ndarray:
    """An open PIL image as float32 (H, W) gray levels in [0, 255], as read_image says."""
    if image.mode in ("I", "F") or image.mode.startswith("I;"):
        raise ValueError(f"{path} holds {image.mode} pixels (16-bit, 32-bit or float); save it as an 8-bit "
                         f"grayscale image, light strokes on a dark background")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode not in ("RGBA", "LA", "PA"):
        return np.asarray(image.convert("L"), dtype=np.float32)
    rgba = image.convert("RGBA")
    gray = np.asarray(rgba.convert("L"), dtype=np.float32)
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32)
    if gray.min() == gray.max():  # one flat colour: the digit is in the alpha channel
        return alpha
    return gray * (alpha / np.float32(255.0))
