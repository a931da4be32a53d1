"""Dropout: inverted dropout, active only in training mode, with counter-based masks.

The mask is a pure function of (key, element): the same on NumPy and CuPy, on
every GPU model, and whatever the input's memory order. The recipe is built so
that NumPy makes it in few passes over memory (see ``dropout``).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import get_array_module
from .base import Layer

_MIX1 = np.uint32(0x7FEB352D)
_MIX2 = np.uint32(0x846CA68B)
NUMPY_BLOCK = 1 << 16
"""Pair words hashed at a time on NumPy. The final round makes about ten passes over
its words, and a block of 2**16 (256 kB of uint32) keeps them in the L2 cache."""


def lowbias32(z: Any, scratch: Any | None = None) -> Any:
    """Chris Wellons' "lowbias32" integer hash, applied in place to the uint32 array z.

    Two xorshift-multiply rounds and a final xorshift: a bijection of the 32-bit
    integers (each step is invertible) with good avalanche. ``scratch``, an
    array like z, holds the shifted words (without it each shift allocates one).
    """
    xp = get_array_module(z)
    if scratch is None:
        scratch = xp.empty_like(z)
    for shift, multiplier in ((16, _MIX1), (15, _MIX2), (16, None)):
        xp.right_shift(z, np.uint32(shift), out=scratch)
        z ^= scratch
        if multiplier is not None:
            z *= multiplier
    return z


def keyed_hash(numbers: Any, key: int) -> Any:
    """u_i = h(h(i ^ k_lo) ^ k_hi) for each uint32 number i, with h = lowbias32 and
    k_lo, k_hi the low and high halves of the 64-bit key: a bijection of the
    32-bit integers for each key. Returns a new uint32 array."""
    z = numbers.astype(np.uint32)
    z ^= np.uint32(key & 0xFFFFFFFF)
    lowbias32(z)
    z ^= np.uint32((key >> 32) & 0xFFFFFFFF)
    return lowbias32(z)


def _batch_last_rows(x: Any) -> Any | None:
    """x: (N, ...) stored batch-last -> the (features, N) matrix view of its memory, else None."""
    xb = x.transpose(*range(1, x.ndim), 0)
    return xb.reshape(-1, x.shape[0]) if xb.flags.c_contiguous else None


def dropout(x: Any, key: int, p: float, first_sample: int = 0) -> tuple[Any, Any]:
    """Inverted dropout of x: (y, mask), both shaped like x, y = x * mask.

    mask is 0 where an element is dropped and 1/(1 - p) where it is kept. Which
    elements drop is a pure function of (key, n, j), for sample n and j the
    row-major number of the element within its sample (F features per sample):

        u_i        = keyed_hash(i, key)                    for i < F + ceil(N/2)
        word(j, m) = lowbias32(u_j ^ u_(F + m))            one 32-bit word per two samples
        bits(n, j) = word(j, n // 2), low 16 bits for even n, high 16 for odd n
        kept       = bits(n, j) >= round(p * 2**16)

    ``first_sample`` (even) says that x holds samples first_sample, first_sample + 1, ...
    of a larger batch: n counts from it, so a batch computed in parts (parts.py) drops
    exactly what it drops whole.

    So the drop probability is p rounded to a multiple of 2**-16 (at most 1 - 2**-16).
    keyed_hash is a bijection, so u_j ^ u_(F+m) is never 0; each word is one
    lowbias32 of numbers that differ for every (j, m).

    Why this shape: a hash per element costs about twenty passes over memory on
    NumPy. Here the keyed hash runs over F + N/2 numbers only, the final round
    over N*F/2 words, and each word gives two samples' bits. Stored (features, N),
    as the batch-last activations of this library are, the two samples of a word
    are neighbours in memory: the 16-bit halves of the words, read in place, are
    the bits in the mask's own order (little-endian, as x86, ARM and CUDA are).

    On NumPy the words, masks and products are made a block of NUMPY_BLOCK words
    at a time, so they stay in the L2 cache; CuPy takes the whole array at once.
    y and mask are stored in x's memory order (made batch-last, then copied into
    x's order when that differs).
    """
    xp = get_array_module(x)
    N = x.shape[0]
    F = x.size // N if N else 0
    M = (N + 1) // 2
    if first_sample % 2:
        raise ValueError(f"Dropout: a part of a batch must start at an even sample, got {first_sample}")
    if F + first_sample // 2 + M >= 2**32:
        raise ValueError(f"Dropout: at most 2**32 features per sample and samples, got shape {tuple(x.shape)}")
    threshold = np.uint16(min(2**16 - 1, round(p * 2**16)))
    scale = x.dtype.type(1.0 / (1.0 - p))
    numbers = xp.arange(F + M, dtype=np.uint32)
    if first_sample:
        numbers[F:] += np.uint32(first_sample // 2)
    u = keyed_hash(numbers, key)
    u_feature, u_pair = u[:F, None], u[None, F:]
    mask = xp.empty((F, N), dtype=x.dtype)
    x_rows = _batch_last_rows(x) if N else None
    y = xp.empty_like(mask) if x_rows is not None else None
    rows = max(1, NUMPY_BLOCK // max(1, M)) if xp is np else max(1, F)
    words, scratch = xp.empty((rows, M), dtype=np.uint32), xp.empty((rows, M), dtype=np.uint32)
    keep = xp.empty((rows, N), dtype=bool)
    for r0 in range(0, F, rows):
        r1 = min(F, r0 + rows)
        w, k = words[:r1 - r0], keep[:r1 - r0]
        xp.bitwise_xor(u_feature[r0:r1], u_pair, out=w)
        lowbias32(w, scratch[:r1 - r0])
        xp.greater_equal(w.view(np.uint16)[:, :N], threshold, out=k)  # halves in sample order
        xp.multiply(k, scale, out=mask[r0:r1])
        if y is not None:
            xp.multiply(x_rows[r0:r1], mask[r0:r1], out=y[r0:r1])
    as_x = x.shape[1:] + (N,)
    order = (x.ndim - 1, *range(x.ndim - 1))
    mask = mask.reshape(as_x).transpose(order)
    if y is not None:
        return y.reshape(as_x).transpose(order), mask
    stored_like_x = xp.empty_like(x)  # so that x * mask and gy * mask walk both in step
    stored_like_x[...] = mask
    return x * stored_like_x, stored_like_x


class Dropout(Layer):
    """Zero each input with probability ``p`` and scale the rest by 1/(1-p).

    x: (N, ...) -> y: same shape. In eval mode it is the identity. The mask of
    the k-th training forward after ``seed(s)`` is a pure function of (s, k)
    (see ``dropout``): the same on NumPy and CuPy and on every GPU. The
    Trainer reseeds with (seed, epoch, layer index) every epoch, so a mask
    depends only on (seed, epoch, step).
    """

    couples_samples = False

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= float(p) < 1.0:
            raise ValueError(f"Dropout: p (the drop probability) must be in [0, 1), got {p!r}")
        self.p = float(p)
        self._seed: list[int] | None = None
        self._step = 0
        self._batch_key: int | None = None  # one key for every part of a batch run in parts
        self._part: tuple[int, int] | None = None  # (key, first sample) of the part to run next

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
        self._part = None if self._batch_key is None else (self._batch_key, first_sample)

    def end_parts(self) -> None:
        self._batch_key = self._part = None

    def _forward(self, x: Any) -> Any:
        if not self.training or self.p == 0.0:
            self._cache = tuple(x.shape)
            return x
        key, first_sample = self._part if self._part is not None else (self._key(), 0)
        y, self._cache = dropout(x, key, self.p, first_sample)
        return y

    def _backward(self, gy: Any) -> Any:
        if isinstance(self._cache, tuple):  # eval mode (or p == 0): the identity
            self._check_grad_shape(gy, self._cache)
            return gy
        self._check_grad_shape(gy, self._cache.shape)
        return gy * self._cache

    def get_config(self) -> dict[str, Any]:
        return {"p": self.p}
