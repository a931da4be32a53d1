"""Dropout: inverted dropout, active only in training mode."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_array_module
from ..layout import in_memory_order_of
from .base import Layer


class Dropout(Layer):
    """Zero each input with probability ``p`` and scale the rest by 1/(1-p).

    x: (N, ...) -> y: same shape. In eval mode it is the identity. Masks come
    from the layer's own generator; ``seed(s)`` makes them reproducible (the
    Trainer reseeds it every epoch from its seed).
    """

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"Dropout: p (the drop probability) must be in [0, 1), got {p!r}")
        self.p = float(p)
        self._seed: int | list[int] | None = None
        self._rng: Any = None
        self._rng_xp: Any = None

    def seed(self, seed: int | list[int] | None) -> None:
        """Restart the mask generator from ``seed`` (an int or a list of ints)."""
        self._seed = seed
        self._rng = None

    def _generator(self, xp: Any) -> Any:
        if self._rng is None or self._rng_xp is not xp:
            seed = self._seed
            if xp is not np and isinstance(seed, list):  # cupy's generator takes one int
                seed = int(np.random.SeedSequence(seed).generate_state(1)[0])
            self._rng, self._rng_xp = xp.random.default_rng(seed), xp
        return self._rng

    def _forward(self, x: Any) -> Any:
        if not self.training or self.p == 0.0:
            self._cache = tuple(x.shape)
            return x
        xp = get_array_module(x)
        # The random numbers are laid out in x's memory order, so that x * mask
        # (and gy * mask in backward) walk both arrays in step: with a C-ordered
        # mask over a batch-last x, NumPy's elementwise loops stride across memory
        # and run several times slower.
        keep = in_memory_order_of(self._generator(xp).random(x.size, dtype=x.dtype), x) >= self.p
        scale = x.dtype.type(1.0 / (1.0 - self.p))
        mask = keep * scale
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
