"""Dropout: inverted dropout, active only in training mode, with counter-based masks.

The mask is a pure function of (key, sample, feature): the same on NumPy and CuPy,
on every GPU model, and whatever the input's memory order. The recipe is one of
the kernels that exist twice (``dualconv.kernels.dropout_forward``: the loops in
kernels/reference.py define it, cpu.py makes it in few passes over memory, and
kernels/dropout.cu in one launch).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import kernels
from .base import Layer


class Dropout(Layer):
    """Zero each input with probability ``p`` and scale the rest by 1/(1-p).

    x: (N, ...) -> y: same shape. In eval mode it is the identity. The mask of
    the k-th training forward after ``seed(s)`` is a pure function of (s, k)
    (see ``dualconv.kernels.dropout_forward``): the same on NumPy and CuPy and
    on every GPU. The Trainer reseeds with (seed, epoch, layer index) every
    epoch, so a mask depends only on (seed, epoch, step).
    """

    couples_samples = False
    pointwise_in_eval = True  # the identity

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"Dropout: p (the drop probability) must be in [0, 1), got {p!r}")
        self.p = float(p)
        self._seed: list[int] | None = None
        self._step = 0
        self._batch_key: int | None = None  # one key for every part of a batch run in parts
        self._first_sample = 0  # where the part to run next starts in its batch

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

    def start_parts(self) -> None:
        self._batch_key = self._key() if self.training and self.p else None

    def enter_part(self, first_sample: int) -> None:
        self._first_sample = first_sample

    def end_parts(self) -> None:
        self._batch_key, self._first_sample = None, 0

    def _forward(self, x: Any) -> Any:
        if not self.training or self.p == 0.0:
            self._cache = tuple(x.shape)
            return x
        key = self._key() if self._batch_key is None else self._batch_key
        y, self._cache = kernels.dropout_forward(x, key, self.p, self._first_sample)
        return y

    def _backward(self, gy: Any) -> Any:
        if isinstance(self._cache, tuple):  # eval mode (or p == 0): the identity
            self._check_grad_shape(gy, self._cache)
            return gy
        self._check_grad_shape(gy, self._cache.shape)
        return gy * self._cache

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p}
