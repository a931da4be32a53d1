"""Batch-last memory order: the views that move the batch axis to the end and back.

The NumPy kernels store images as (C, H, W, N) and im2col columns as
(C, kh, kw, out_h, out_w, N) (see kernels/cpu.py); everything else indexes
them (N, C, H, W) and (C, kh, kw, N, out_h, out_w). These are views, never
copies, and work on NumPy and CuPy arrays alike.
"""
from __future__ import annotations

from typing import Any


def batch_last(x: Any) -> Any:
    """x: (N, C, H, W) -> a view of it indexed (C, H, W, N)."""
    return x.transpose(1, 2, 3, 0)


def batch_first(xb: Any) -> Any:
    """The inverse of batch_last: xb (C, H, W, N) -> a view indexed (N, C, H, W)."""
    return xb.transpose(3, 0, 1, 2)


def columns_batch_last(col: Any) -> Any:
    """col: (C, kh, kw, N, out_h, out_w) -> a view indexed (C, kh, kw, out_h, out_w, N)."""
    return col.transpose(0, 1, 2, 4, 5, 3)


def columns_batch_first(col_b: Any) -> Any:
    """The inverse of columns_batch_last: (C, kh, kw, out_h, out_w, N) -> (C, kh, kw, N, out_h, out_w)."""
    return col_b.transpose(0, 1, 2, 5, 3, 4)


def in_memory_order_of(flat: Any, like: Any) -> Any:
    """flat: (like.size,) -> a view shaped like ``like`` whose elements lie in
    memory in the same order as like's, for an array stored in any permutation
    of its axes (batch-last images, feature-major matrices, C order).

    flat[0], flat[1], ... fill like's elements in the order like keeps them in
    memory; for a C-contiguous ``like`` this is flat.reshape(like.shape).
    """
    axes = sorted(range(like.ndim), key=lambda a: -abs(like.strides[a]))  # slowest-varying first
    stored = flat.reshape([like.shape[a] for a in axes])
    return stored.transpose([axes.index(a) for a in range(like.ndim)])
