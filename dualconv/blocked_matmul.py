"""Matrix products of a convolution, split into small blocks on the CPU.

A convolution's GEMMs are skinny: a small weight matrix against a very wide
column matrix. LeNet's first layer at batch 256 multiplies (6 x 25) by
(25 x 200704), and its weight gradient sums (6 x 200704) @ (200704 x 25).
Done in one BLAS call, such a product streams megabytes through a kernel
tuned for square matrices; done in blocks of a few thousand columns, each
block is a small product whose operands sit in the L2 cache. On the Intel
Xeon (AVX-512) kind of machine, where OpenBLAS has small-matrix kernels that
skip its packing copies for products under about a million multiply-adds,
the blocked products run 2-4x faster (measured on one core: 17-35 GFLOP/s
whole, 45-95 blocked, for LeNet's conv1 shapes); elsewhere a block that fits
in L2 costs no more than the whole.

Both functions compute exactly the product, as BLAS would: every element of
``a @ b`` is one dot product, in any blocking. Column blocks change nothing
but which call computes an element; inner blocks split each dot product into
partial sums added in block order, which is a summation order like any
other, inside the same rounding bound gamma(K) * (|a| @ |b|).

On the GPU (CuPy) the product is one call: cuBLAS is fastest with the whole
matrix.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .backend import get_array_module

BLOCK_MULTIPLY_ADDS = 10 ** 6
"""Multiply-adds per block product: OpenBLAS's limit for its small-matrix kernels
(SkylakeX and later: products of at most 100^3 multiply-adds skip the packing)."""

MIN_BLOCK = 1024
"""Fewest columns worth a block. A product whose rows x inner size leaves fewer
under the limit above (LeNet's conv2, 16 x 150) runs whole: measured, its blocks
were slower than one call."""


def block_size(rows: int, inner: int) -> int | None:
    """Columns per block of a (rows x inner) @ (inner x columns) product, or None
    for "one call": when blocks under BLOCK_MULTIPLY_ADDS would be narrower than MIN_BLOCK."""
    step = BLOCK_MULTIPLY_ADDS // max(1, rows * inner)
    return step if step >= MIN_BLOCK else None


def even_blocks(total: int, step: int) -> int:
    """The width of each block when ``total`` columns are split into as few blocks of
    at most ``step`` as will do, all as wide as each other (the last one narrower
    where they do not divide evenly). Seed 002's convolution at 64 images multiplies
    1792 columns an output row: two blocks of 896 in one batched call rather than 1201
    and 591 in two, 35 -> 31.5 us (one core, Intel, SkylakeX kernels; as fast with the
    Haswell kernels); its predict, 1.8% more images/s (paired medians of 7)."""
    count = -(-total // step)
    return -(-total // count)


def matmul_column_blocks(a: Any, b: Any, out: Any = None) -> Any:
    """a: (M, K), b: (K, P) -> a @ b: (M, P), computed a block of b's columns at a time
    (into ``out`` where given: a C-contiguous (M, P) array).

    For P much larger than M and K (a weight times im2col columns). The whole
    blocks are one stack of (K x step) matrices, b viewed (blocks, K, step), multiplied
    in one batched call (NumPy runs one BLAS product per block, without coming back
    to Python); the columns left over past the last whole block are one more call.
    """
    xp = get_array_module(a)
    M, K = a.shape
    P = b.shape[1]
    step = block_size(M, K)
    if xp is not np or step is None or P <= step:
        return a @ b if out is None else xp.matmul(a, b, out=out)
    step = even_blocks(P, step)
    if out is None:
        out = np.empty((M, P), dtype=np.result_type(a, b))
    blocks = P // step
    whole = blocks * step
    np.matmul(a, _column_stack(b[:, :whole], blocks), out=_column_stack(out[:, :whole], blocks))
    if whole < P:
        np.matmul(a, b[:, whole:], out=out[:, whole:])
    return out


def matmul_row_blocks(a: Any, b: Any) -> Any:
    """a: (M, K), b: (K, N) -> a @ b: (M, N), computed a block of a's rows at a time.

    For M much larger than K and N (a dense layer's weight gradient over many input
    features, x.T @ gy). The mirror of matmul_column_blocks: the whole blocks are one
    stack of (step x K) matrices, a viewed (blocks, step, K), in one batched call,
    and the rows past the last whole block one more call. The result is C-contiguous.
    """
    xp = get_array_module(a)
    M, K = a.shape
    N = b.shape[1]
    step = block_size(N, K)
    if xp is not np or step is None or M <= step:
        return a @ b
    step = even_blocks(M, step)
    out = np.empty((M, N), dtype=np.result_type(a, b))
    blocks = M // step
    whole = blocks * step
    np.matmul(a[:whole].reshape(blocks, step, K), b, out=out[:whole].reshape(blocks, step, N))
    if whole < M:
        np.matmul(a[whole:], b, out=out[whole:])
    return out


def matmul_inner_blocks(a: Any, b: Any) -> Any:
    """a: (M, P), b: (P, K) -> a @ b: (M, K), summing over P a block at a time.

    For P much larger than M and K (an output gradient times the transposed
    im2col columns: a convolution's weight gradient). The whole blocks' partial
    products come from one batched call, (blocks, M, step) @ (blocks, step, K), and
    are added in block order; the rest of P, past the last whole block, is added last.
    """
    xp = get_array_module(a)
    M, P = a.shape
    step = block_size(M, b.shape[1])
    if xp is not np or step is None or P <= step:
        return a @ b
    step = even_blocks(P, step)
    blocks = P // step
    whole = blocks * step
    partial = np.matmul(_column_stack(a[:, :whole], blocks), b[:whole].reshape(blocks, step, -1))
    out = np.add.reduce(partial, axis=0)  # block 0 + block 1 + ..., in order
    if whole < P:
        out += a[:, whole:] @ b[whole:]
    return out


def _column_stack(m: np.ndarray, blocks: int) -> np.ndarray:
    """m: (R, blocks * step) -> a view (blocks, R, step): block j is m[:, j*step:(j+1)*step]."""
    R, P = m.shape
    return m.reshape(R, blocks, P // blocks).transpose(1, 0, 2)
