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

from typing import Any


def storage_axes(x: Any) -> tuple[int, ...]:
    """The axes of x from the largest stride to the smallest (ties in axis order):
    ``x.transpose(axes)`` is C-contiguous when x is a permuted contiguous array."""
    if x.flags.c_contiguous:
        return tuple(range(x.ndim))
    return tuple(sorted(range(x.ndim), key=lambda a: -abs(x.strides[a])))


def to_storage(x: Any, axes: tuple[int, ...]) -> Any:
    """x viewed with its axes in the order ``axes`` (a view; nothing moves)."""
    return x if axes == tuple(range(len(axes))) else x.transpose(axes)


def from_storage(y: Any, axes: tuple[int, ...]) -> Any:
    """The inverse of ``to_storage(., axes)``: y back in the caller's axis order (a view)."""
    if axes == tuple(range(len(axes))):
        return y
    inverse = [0] * len(axes)
    for position, axis in enumerate(axes):
        inverse[axis] = position
    return y.transpose(inverse)
