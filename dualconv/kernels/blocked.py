"""Matrix products split into small blocks: the CPU twins' GEMMs (cpu_conv.py, cpu_dense.py).

A convolution's GEMMs are skinny: a small weight matrix against a very wide
column matrix (LeNet's first layer at batch 256 multiplies (6 x 25) by
(25 x 200704)), and a wide Dense layer's sum runs over many input features.
Done in one BLAS call, such a product streams megabytes through a kernel tuned
for square matrices; done in blocks of a few thousand columns, each block is a
small product whose operands stay in the L2 cache, within OpenBLAS's
small-matrix kernels, which skip its packing copies.

The rule kept: every function computes exactly the product, as BLAS would.
Every element of ``a @ b`` is one dot product, in any blocking. Column and row
blocks change nothing but which call computes an element; inner blocks split
each dot product into partial sums added in block order, a summation order like
any other, inside the same rounding bound gamma(K) * (|a| @ |b|).

Inputs are NumPy arrays (the CPU twins call these; the CUDA twins make each
product in one cuBLAS call) of one float dtype; outputs are new C-contiguous
arrays unless stated.
"""
from __future__ import annotations

import numpy as np

BLOCK_MULTIPLY_ADDS = 10 ** 6
"""Multiply-adds per block product. It trades the calls a product is split into (fewer
with larger blocks) against keeping each block's operands in the L2 cache and within
OpenBLAS's small-matrix kernels (products of at most 100^3 multiply-adds skip the
packing copies). Chosen with benchmarks/lenet_vs_torch.py; it also sizes the
convolution's bands of output rows and the pieces of a row over it
(cpu_conv.pixels_within_block)."""

MIN_BLOCK = 1024
"""Fewest columns worth a block. It trades the per-call cost of a narrow block against
the cache it saves: a product whose rows x inner size leaves fewer columns under
BLOCK_MULTIPLY_ADDS (LeNet's conv2, 16 x 150) runs whole. Chosen with
benchmarks/lenet_vs_torch.py; it also decides where the convolution's input gradient
folds wide (cpu_conv.folds_wide)."""


def block_size(rows: int, inner: int) -> int | None:
    """Columns per block of a (rows x inner) @ (inner x columns) product, or None
    for "one call": when blocks under BLOCK_MULTIPLY_ADDS would be narrower than MIN_BLOCK."""
    step = BLOCK_MULTIPLY_ADDS // max(1, rows * inner)
    return step if step >= MIN_BLOCK else None


def even_blocks(total: int, step: int) -> int:
    """The width of each block when ``total`` columns are split into as few blocks of
    at most ``step`` as will do, all as wide as each other (the last one narrower
    where they do not divide evenly): equal blocks are one batched call where a
    narrow remainder would be a call of its own."""
    count = -(-total // step)
    return -(-total // count)


def matmul_column_blocks(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """a: (M, K), b: (K, P) -> a @ b: (M, P), computed a block of b's columns at a time
    (into ``out`` where given: a C-contiguous (M, P) array, which is returned).

    For P much larger than M and K (a weight times im2col columns). The whole
    blocks are one stack of (K x step) matrices, b viewed (blocks, K, step), multiplied
    in one batched call (NumPy runs one BLAS product per block, without coming back
    to Python); the columns left over past the last whole block are one more call.
    """
    M, K = a.shape
    P = b.shape[1]
    step = block_size(M, K)
    if step is None or P <= step:
        return a @ b if out is None else np.matmul(a, b, out=out)
    step = even_blocks(P, step)
    if out is None:
        out = np.empty((M, P), dtype=np.result_type(a, b))
    blocks = P // step
    whole = blocks * step
    np.matmul(a, _column_stack(b[:, :whole], blocks), out=_column_stack(out[:, :whole], blocks))
    if whole < P:
        np.matmul(a, b[:, whole:], out=out[:, whole:])
    return out


def matmul_row_blocks(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a: (M, K), b: (K, N) -> a @ b: (M, N), computed a block of a's rows at a time.

    For M much larger than K and N (a dense layer's weight gradient over many input
    features, x.T @ gy). The mirror of matmul_column_blocks: the whole blocks are one
    stack of (step x K) matrices, a viewed (blocks, step, K), in one batched call,
    and the rows past the last whole block one more call. The result is C-contiguous.
    """
    M, K = a.shape
    N = b.shape[1]
    step = block_size(N, K)
    if step is None or M <= step:
        return a @ b
    step = even_blocks(M, step)
    out = np.empty((M, N), dtype=np.result_type(a, b))
    blocks = M // step
    whole = blocks * step
    np.matmul(a[:whole].reshape(blocks, step, K), b, out=out[:whole].reshape(blocks, step, N))
    if whole < M:
        np.matmul(a[whole:], b, out=out[whole:])
    return out


def matmul_inner_blocks(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a: (M, P), b: (P, K) -> a @ b: (M, K), summing over P a block at a time.

    For P much larger than M and K (an output gradient times the transposed
    im2col columns: a convolution's weight gradient). The whole blocks' partial
    products come from one batched call, (blocks, M, step) @ (blocks, step, K), and
    are added in block order; the rest of P, past the last whole block, is added last.
    """
    M, P = a.shape
    step = block_size(M, b.shape[1])
    if step is None or P <= step:
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
