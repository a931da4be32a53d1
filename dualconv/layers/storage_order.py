"""Elementwise work done in the order an array is stored, so a GPU reads and writes it coalesced.

CuPy allocates a ufunc's output C-contiguous and walks every operand in the C
order of the shape. An activation stored batch-last ((C, H, W, N) in memory,
indexed (N, C, H, W), as the convolution and pooling kernels make them) would
be read with a stride of N elements between adjacent threads, and its result
would come back batch-first, which the next kernel then reads with a stride of
C*H*W. Seen through ``to_storage(x)`` (a transposed view, no copy) the same
array is C-contiguous: a ufunc on that view walks memory in order, and its
result, seen through ``from_storage``, has the input's layout. NumPy keeps
layouts anyway; the values are the same on both backends.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any


def storage_axes(x: Any) -> tuple[int, ...]:
    """The axes of x from the largest stride to the smallest (ties in axis order):
    ``x.transpose(axes)`` is C-contiguous when x is a permuted contiguous array."""
    if x.flags.c_contiguous:
        return tuple(range(x.ndim))
    return _by_stride(tuple(x.strides))


def to_storage(x: Any, axes: tuple[int, ...]) -> Any:
    """x viewed with its axes in the order ``axes`` (a view; nothing moves)."""
    return x if _inverse(axes) is None else x.transpose(axes)


def from_storage(y: Any, axes: tuple[int, ...]) -> Any:
    """The inverse of ``to_storage(., axes)``: y back in the caller's axis order (a view)."""
    inverse = _inverse(axes)
    return y if inverse is None else y.transpose(inverse)


# The permutations below depend on a few small tuples only, and an activation's are the
# same every step: each is worked out once.

@lru_cache(maxsize=256)
def _by_stride(strides: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted(range(len(strides)), key=lambda a: -abs(strides[a])))


@lru_cache(maxsize=256)
def _inverse(axes: tuple[int, ...]) -> tuple[int, ...] | None:
    """The permutation that undoes ``axes``; None when ``axes`` is in order (nothing to undo)."""
    if axes == tuple(range(len(axes))):
        return None
    inverse = [0] * len(axes)
    for position, axis in enumerate(axes):
        inverse[axis] = position
    return tuple(inverse)
