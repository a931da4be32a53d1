"""Dropout: inverted dropout, active only in training mode, with counter-based masks."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_array_module
from ..layout import row_major_index
from .base import Layer

_MIX1 = np.uint32(0x7FEB352D)
_MIX2 = np.uint32(0x846CA68B)
_LOW32 = np.uint64(0xFFFFFFFF)
# Elements hashed at a time on NumPy: the hash makes about fifteen passes over its
# numbers, and a block of 2**16 (256 kB of uint32) keeps them in the L2 cache instead
# of streaming a whole batch's worth through memory fifteen times.
NUMPY_BLOCK = 1 << 16


def lowbias32(z: Any) -> Any:
    """Chris Wellons' "lowbias32" integer hash, applied in place to the uint32 array z.

    Two xorshift-multiply rounds and a final xorshift: a bijection of the 32-bit
    integers (each step is invertible) with good avalanche, and lowbias32(0) == 0.
    """
    z ^= z >> np.uint32(16)
    z *= _MIX1
    z ^= z >> np.uint32(15)
    z *= _MIX2
    z ^= z >> np.uint32(16)
    return z


def random_bits(xp: Any, index: Any, key: int) -> Any:
    """One pseudo-random uint32 per entry of ``index`` (element numbers, uint32 or
    uint64, any shape and memory order), a pure function of (key, number).

    With h = lowbias32 and the 64-bit key split into halves k_lo and k_hi, element
    number i = hi * 2**32 + lo draws h(h(lo ^ k_lo) ^ h(hi) ^ k_hi). Below 2**32, hi
    is 0 and h(0) == 0, so a uint32 index computes h(h(i ^ k_lo) ^ k_hi) in 32-bit
    arithmetic alone (twice as fast as 64-bit on the CPU) and gets the bits the same
    numbers would get as uint64. The operations are elementwise integer ones on
    ``xp`` (numpy or cupy), so both backends and every GPU model draw the same bits.
    """
    k_lo, k_hi = np.uint32(key & 0xFFFFFFFF), np.uint32((key >> 32) & 0xFFFFFFFF)
    if index.dtype == np.uint64:
        z = (index & _LOW32).astype(np.uint32) ^ k_lo
        high = lowbias32((index >> np.uint64(32)).astype(np.uint32))
    else:
        z, high = index.astype(np.uint32) ^ k_lo, None
    z = lowbias32(z)
    z ^= k_hi
    if high is not None:
        z ^= high
    return lowbias32(z)


def dropout_mask(x: Any, key: int, p: float) -> Any:
    """The inverted-dropout mask for x: 0 where the element is dropped, 1/(1-p) where
    it is kept, with x's shape, dtype and memory order.

    Element [n, ...] is kept when random_bits(its row-major number, key) >= p * 2**32,
    whatever x's memory order, so the mask is the same on every backend. The mask is
    stored in x's memory order, so that x * mask (and gy * mask in backward) walk
    both arrays in step: with a C-ordered mask over a batch-last x, NumPy's elementwise
    loops stride across memory and run several times slower. The numbers are uint32
    when x has fewer than 2**32 elements (see random_bits). On NumPy the hash runs
    over blocks of NUMPY_BLOCK numbers in memory order (a pure function of each
    number, so blocking changes no bit); CuPy takes the whole array in one pass.
    """
    xp = get_array_module(x)
    threshold = np.uint32(min(2**32 - 1, round(p * 2**32)))
    scale = x.dtype.type(1.0 / (1.0 - p))
    numbers = row_major_index(x, np.uint32 if x.size <= 2**32 else np.uint64)
    axes = sorted(range(x.ndim), key=lambda a: -abs(numbers.strides[a]))  # slowest-varying first
    in_memory_order = numbers.transpose(axes).reshape(-1)  # a view: row_major_index stores them so
    mask = xp.empty(x.size, dtype=x.dtype)
    block = NUMPY_BLOCK if xp is np else max(1, x.size)
    for start in range(0, x.size, block):
        stop = min(x.size, start + block)
        keep = random_bits(xp, in_memory_order[start:stop], key) >= threshold
        xp.multiply(keep, scale, out=mask[start:stop])
    return mask.reshape([x.shape[a] for a in axes]).transpose([axes.index(a) for a in range(x.ndim)])


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
        mask = dropout_mask(x, self._key(), self.p)
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
