"""The CPU twin of Dense's GEMMs: dense_forward and dense_backward with NumPy.

The contract (dualconv.kernels): x (N, in), w (in, out), b (out,) or None ->
y = x @ w + b (N, out); the backward gives gx = gy @ w.T (N, in), gw = x.T @ gy
(in, out) and gb = the sum of gy over the batch (out,). Each output is the same
dot product as the textbook's (reference.py), summed over many input features a
block at a time (blocked.py), each block's operands in the L2 cache: within the
products' rounding bound of the reference, not always to the last bit.

Memory order: an x stored feature-major (the Flatten of batch-last images, an
F-ordered (N, in)) is multiplied in the orientation that reads it along its
storage, and gx is stored the way x is, so the layers below read it without a
transposing copy. Inputs are checked once, by the dispatch point; these
functions trust their arguments.
"""
from __future__ import annotations

import numpy as np

from .blocked import matmul_inner_blocks, matmul_row_blocks


def feature_major(x: np.ndarray) -> bool:
    """Whether x (N, in) is stored feature-major (F order) and not also as rows."""
    return x.flags.f_contiguous and not x.flags.c_contiguous


def dense_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """x: (N, in), w: (in, out), b: (out,) or None -> y = x @ w + b: (N, out), C-ordered.

    A feature-major x is multiplied as y.T = w.T @ x.T, the same products, each
    operand's blocks read along its storage order; y, a few numbers a sample, is then
    copied to rows (the loss and the backward read rows). The bias is added last.
    """
    if feature_major(x):
        y = np.ascontiguousarray(matmul_inner_blocks(w.T, x.T).T)
    else:
        y = matmul_inner_blocks(x, w)
    if b is not None:
        y += b
    return y


def dense_backward(gy: np.ndarray, x: np.ndarray, w: np.ndarray, need_gx: bool,
                   need_gb: bool) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """gy: (N, out), the forward's x (N, in), w (in, out) -> (gx (N, in) or None,
    gw (in, out), gb (out,) or None).

    gw = x.T @ gy is made a block of input features (rows) at a time, C-ordered. For a
    feature-major x, gx is made as gx.T = w @ gy.T, so it is stored as x is.
    """
    gw = matmul_row_blocks(x.T, gy)
    gb = gy.sum(axis=0) if need_gb else None
    if not need_gx:
        return None, gw, gb
    gx = (w @ gy.T).T if feature_major(x) else gy @ w.T
    return gx, gw, gb
