"""Batch-last memory order: the views that move the batch axis to the end and back.

Every kernel twin stores images as (C, H, W, N) and im2col columns as
(C, kh, kw, out_h, out_w, N) (the contract in dualconv/kernels/__init__.py);
everything outside the kernels indexes them (N, C, H, W) and
(C, kh, kw, N, out_h, out_w). These are views, never copies, and work on NumPy
and CuPy arrays alike. Only the kernels import this module; a layer that needs
the batch-last view of a flattened activation calls ``kernels.flatten_batch``.
"""
from __future__ import annotations

import math
from typing import Any

BATCH_LAST = (1, 2, 3, 0)
"""The axes that view (N, C, H, W) as (C, H, W, N)."""
BATCH_FIRST = (3, 0, 1, 2)
"""The axes that view (C, H, W, N) as (N, C, H, W)."""
COLUMNS_BATCH_LAST = (0, 1, 2, 4, 5, 3)
"""The axes that view (C, kh, kw, N, out_h, out_w) as (C, kh, kw, out_h, out_w, N)."""
COLUMNS_BATCH_FIRST = (0, 1, 2, 5, 3, 4)
"""The axes that view (C, kh, kw, out_h, out_w, N) as (C, kh, kw, N, out_h, out_w)."""


def batch_last(x: Any) -> Any:
    """x: (N, C, H, W) -> a view of it indexed (C, H, W, N)."""
    return x.transpose(BATCH_LAST)


def batch_first(xb: Any) -> Any:
    """The inverse of batch_last: xb (C, H, W, N) -> a view indexed (N, C, H, W)."""
    return xb.transpose(BATCH_FIRST)


def columns_batch_last(col: Any) -> Any:
    """col: (C, kh, kw, N, out_h, out_w) -> a view indexed (C, kh, kw, out_h, out_w, N)."""
    return col.transpose(COLUMNS_BATCH_LAST)


def columns_batch_first(col_b: Any) -> Any:
    """The inverse of columns_batch_last: (C, kh, kw, out_h, out_w, N) -> (C, kh, kw, N, out_h, out_w)."""
    return col_b.transpose(COLUMNS_BATCH_FIRST)


def batch_last_axes(ndim: int) -> tuple[int, ...]:
    """The axes that view an (N, d1, d2, ...) array of any rank as (d1, d2, ..., N)."""
    return (*range(1, ndim), 0)


def batch_first_axes(ndim: int) -> tuple[int, ...]:
    """The inverse of batch_last_axes: (d1, d2, ..., N) back to (N, d1, d2, ...)."""
    return (ndim - 1, *range(ndim - 1))


def flatten_batch(x: Any) -> Any:
    """x: (N, d1, d2, ...) -> (N, d1*d2*...), each row in C order.

    When x is stored batch-last this is a view (the transpose of a C-contiguous
    (d1*d2*..., N) matrix, which a GEMM takes as it is); otherwise x.reshape,
    which copies only what is not contiguous.
    """
    N = x.shape[0]
    xb = x.transpose(batch_last_axes(x.ndim))
    if N > 1 and xb.flags.c_contiguous:
        return xb.reshape(-1, N).T
    return x.reshape(N, math.prod(x.shape[1:]))  # -1 is ambiguous for an empty batch
