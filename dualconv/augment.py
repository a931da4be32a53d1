"""Data augmentation applied to each training batch on the model's backend.

``Shift(k)`` moves every image of a batch by its own (dy, dx), each in [-k, k],
filling the pixels that come in with zeros. The offsets are drawn on the host
from (seed, epoch, step) alone, like Dropout's masks, so a run is reproducible
and resumable, and the same on NumPy and CuPy; the shift itself is xp
expressions (a zero pad, a strided view and one gather), so no kernel of its own is needed.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .backend import get_array_module

_SHIFT_STREAM = 0x5348  # keeps the offsets' stream apart from the shuffle's, which uses (seed, epoch)


class Shift:
    """Random translation by up to ``k`` pixels in each direction, zero fill.

    ``shift(x, seed, epoch, step)``: x (N, C, H, W) on either backend -> a new array of
    the same shape, dtype and backend, where out[n, :, i, j] = x[n, :, i - dy_n, j - dx_n]
    (0 outside the image). ``offsets`` gives the (N, 2) table of (dy, dx) used, and
    ``by(x, offsets)`` shifts by a table already on x's backend (a captured training step
    reads it from device memory: dualconv/step_graph.py).
    """

    def __init__(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"Shift: k (the largest shift in pixels) must be an integer >= 0, got {k!r}")
        self.k = int(k)

    def offsets(self, n: int, seed: int, epoch: int, step: int) -> np.ndarray:
        """(n, 2) int64 offsets (dy, dx) in [-k, k], a pure function of (seed, epoch, step)."""
        rng = np.random.default_rng([_SHIFT_STREAM, int(seed), int(epoch), int(step)])
        return rng.integers(-self.k, self.k + 1, size=(n, 2))

    def __call__(self, x: Any, seed: int, epoch: int, step: int) -> Any:
        if getattr(x, "ndim", None) != 4:
            raise ValueError(f"Shift: expects images (N, C, H, W), got shape {getattr(x, 'shape', None)}")
        if self.k == 0:
            return x
        return self.by(x, get_array_module(x).asarray(self.offsets(len(x), seed, epoch, step)))

    def by(self, x: Any, shifts: Any) -> Any:
        """x (N, C, H, W) shifted by ``shifts``, (N, 2) integer (dy, dx) in [-k, k] on x's
        backend (any integer dtype: only indices are made from it).

        The image padded by k zeros on each side has (2k + 1)^2 windows of the image's size,
        one per shift; a strided view lists them (no copy), and one gather picks each
        sample's window: whole rows of pixels, where a gather per pixel took four times as
        long on the CPU."""
        if self.k == 0:
            return x
        xp = get_array_module(x)
        n, c, h, w = x.shape
        k = self.k
        padded = xp.zeros((n, c, h + 2 * k, w + 2 * k), dtype=x.dtype)
        padded[:, :, k:k + h, k:k + w] = x
        s_n, s_c, s_h, s_w = padded.strides
        # windows[i, :, a, b] = padded[i, :, a:a + h, b:b + w]: the images moved by (k - a, k - b)
        windows = xp.lib.stride_tricks.as_strided(padded, (n, c, 2 * k + 1, 2 * k + 1, h, w),
                                                  (s_n, s_c, s_h, s_w, s_h, s_w))
        last = np.int64(k)  # a 64-bit scalar: k - dy in int64 whatever the offsets' integer type
        return xp.ascontiguousarray(windows[xp.arange(n), :, last - shifts[:, 0], last - shifts[:, 1]])

    def __repr__(self) -> str:
        return f"Shift({self.k})"


def parse_augment(text: str) -> Shift:
    """The command line's ``--augment shift=K`` -> Shift(K); anything else is a ValueError naming it."""
    name, _, value = text.partition("=")
    if name.strip() != "shift" or not value.strip().isdigit():
        raise ValueError(f"--augment takes shift=K (K pixels, an integer >= 0), got {text!r}")
    return Shift(int(value))
