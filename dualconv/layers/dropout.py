"""Dropout: inverted dropout, active only in training mode, with counter-based masks."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_array_module
from ..layout import row_major_index
from .base import Layer

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def random_bits(xp: Any, index: Any, key: int) -> Any:
    """One pseudo-random uint64 per entry of ``index`` (uint64 element numbers, any shape
    and memory order), a pure function of (key, number): SplitMix64.

    Element number i gets splitmix64(key + (i + 1) * golden gamma), computed
    with elementwise integer operations on ``xp`` (numpy or cupy), so both
    backends and every GPU model draw the same bits; nothing is kept between calls.
    """
    z = (index + np.uint64(1)) * _GAMMA + np.uint64(key)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


class Dropout(Layer):
    """Zero each input with probability ``p`` and scale the rest by 1/(1-p).

    x: (N, ...) -> y: same shape. In eval mode it is the identity. The mask of
    the k-th training forward after ``seed(s)`` is a pure function of (s, k)
    (see ``random_bits``): the same on NumPy and CuPy and on every GPU. The
    Trainer reseeds with (seed, epoch, layer index) every epoch, so a mask
    depends only on (seed, epoch, step).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"Dropout: p (the drop probability) must be in [0, 1), got {p!r}")
        self.p = float(p)
        self._seed: list[int] | None = None
        self._step = 0

    def seed(self, seed: int | list[int] | None) -> None:
        """Restart the masks from ``seed`` (an int or a list of ints; None: fresh entropy)."""
        self._seed = None if seed is None else [int(s) for s in np.atleast_1d(seed)]
        self._step = 0

    def _key(self) -> int:
        if self._seed is None:
            self._seed = [int(np.random.SeedSequence().entropy % 2**63)]
        key = np.random.SeedSequence([*self._seed, self._step]).generate_state(1, np.uint64)[0]
        self._step += 1
        return int(key)

    def _forward(self, x: Any) -> Any:
        if not self.training or self.p == 0.0:
            self._cache = tuple(x.shape)
            return x
        xp = get_array_module(x)
        threshold = np.uint64(min(2**64 - 1, round(self.p * 2**64)))
        # Element [n, ...] draws the bits of its row-major number, whatever x's memory
        # order, so the mask is the same on every backend; and the mask is stored in
        # x's memory order, so that x * mask (and gy * mask in backward) walk both
        # arrays in step: with a C-ordered mask over a batch-last x, NumPy's
        # elementwise loops stride across memory and run several times slower.
        keep = random_bits(xp, row_major_index(x), self._key()) >= threshold
        mask = keep * x.dtype.type(1.0 / (1.0 - self.p))
        self._cache = mask
        return x * mask

    def _backward(self, gy: Any) -> Any:
        if isinstance(self._cache, tuple):  # eval mode (or p == 0): the identity
            self._check_grad_shape(gy, self._cache)
            return gy
        self._check_grad_shape(gy, self._cache.shape)
        return gy * self._cache

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p}
