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

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"Dropout: p (the drop probability) must be in [0, 1), got {p!r}")
        self.p = float(p)
        self.seed(None)

    def seed(self, seed: int | list[int] | None) -> None:
        """Restart the masks from ``seed`` (an int or a list of ints; None: fresh entropy)."""
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % 2**63)
        self._seed = [int(s) for s in np.atleast_1d(seed)]
        self._step = 0

    key_at: Any = None
    """None, or a device array of two int32 (the low and high halves of a key): training
    forwards then read their key there (kernels.dropout_forward_at) and take none from
    (seed, step). A captured training step (dualconv/step_graph.py) sets it while it
    captures and fills it each step; it calls ``skip`` for the forwards it replays."""

    @property
    def forwards(self) -> int:
        """Training forwards since the last seed: the next one takes ``key_of(forwards)``."""
        return self._step

    def key_of(self, forward: int) -> int:
        """The key of training forward number ``forward`` after the seed: a pure function of both."""
        return int(np.random.SeedSequence([*self._seed, forward]).generate_state(1, np.uint64)[0])

    def skip(self, count: int) -> None:
        """``count`` training forwards ran elsewhere (a replayed graph): the next forward
        takes the key after theirs."""
        self._step += int(count)

    def _forward(self, x: Any) -> Any:
        if not self.training or self.p == 0.0:
            self._cache = tuple(x.shape)
            return x
        if self.key_at is not None:
            y, self._cache = kernels.dropout_forward_at(x, self.key_at, self.p, self.first_sample)
            return y
        key = self.key_of(self._step)
        self._step += 1
        y, self._cache = kernels.dropout_forward(x, key, self.p, self.first_sample)
        return y

    def _backward(self, gy: Any) -> Any:
        if isinstance(self._cache, tuple):  # eval mode (or p == 0): the identity
            self._check_grad_shape(gy, self._cache)
            return gy
        self._check_grad_shape(gy, self._cache.shape)
        return gy * self._cache

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p}
