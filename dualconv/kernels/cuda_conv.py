"""The CUDA twin of the convolution's GEMMs: conv2d_forward and conv2d_backward on CuPy.

The contract (dualconv.kernels) is the CPU twin's (cpu_conv.py): x (N, C, H, W),
w (O, C, kh, kw), b (O,) or None -> y (N, O, out_h, out_w) and ``saved``, here
(x's shape, col); the backward gives gx, gw, gb. Each is the textbook's sum
(reference.py) made in one launch or one cuBLAS call:

    col = im2col(x)                 one launch (cuda.im2col)
    y   = w @ col + b               one matmul, then the bias
    gw  = gy @ col.T,  gb = sum(gy) one matmul, one reduction
    gx  = col2im(w.T @ gy)          one matmul, one launch (cuda.col2im)

cuBLAS is fastest with the whole matrix, so nothing is split into blocks or
bands, and gw is made as it is stored. The columns are stored batch-last,
(C, kh, kw, out_h, out_w, N), so every reshape around a GEMM is free and y
lands batch-last, (O, out_h, out_w, N), returned as an (N, O, out_h, out_w)
view. cuBLAS may add a dot product's terms in another order than OpenBLAS, so
this twin agrees with the CPU twin within the products' rounding bound. Inputs
are checked once, by the dispatch point; these functions trust their arguments.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from ..backend import get_array_module
from ..shapes import Window
from . import cuda
from .cuda_gemm import matmul
from .layout import BATCH_FIRST, BATCH_LAST, COLUMNS_BATCH_FIRST, COLUMNS_BATCH_LAST

# The sizes come from the arrays' shapes (col's holds out_h and out_w) and the views are
# single transposes by the layout module's axes: these run once per layer and step, so each
# call saved is a Python frame saved.


def conv2d_forward(x: Any, w: Any, b: Any | None, win: Window) -> tuple[Any, tuple[tuple[int, ...], Any]]:
    """x: (N, C, H, W), w: (O, C, kh, kw), b: (O,) or None -> (y (N, O, out_h, out_w),
    saved = (x's shape, col (C, kh, kw, N, out_h, out_w)))."""
    return _forward(cuda.im2col, x, w, b, win)


def runner(kernel: str, args: tuple[Any, ...]) -> Callable[..., Any] | None:
    """For the dispatch point (as cuda.runner): ``run(x, w, b, win)``, conv2d_forward for any
    call with args' signature, its im2col's plan already bound (im2col's arguments, x and
    win, are the call's, so their signature is the call's); None for conv2d_backward (the
    input of its col2im is made inside) and where im2col's launch does not bind."""
    if kernel != "conv2d_forward":
        return None
    x, _, _, win = args
    im2col = cuda.runner("im2col", (x, win))
    return None if im2col is None else functools.partial(_forward, im2col)


def _forward(im2col: Callable[[Any, Window], Any], x: Any, w: Any, b: Any | None,
             win: Window) -> tuple[Any, tuple[tuple[int, ...], Any]]:
    """conv2d_forward with ``im2col(x, win)`` launching the columns."""
    col = im2col(x, win)
    C, kh, kw, N, out_h, out_w = col.shape
    O = w.shape[0]
    # (C*kh*kw, out_h*out_w*N): a view of im2col's batch-last storage
    y = matmul(w.reshape(O, -1), col.transpose(COLUMNS_BATCH_LAST).reshape(C * kh * kw, -1))
    if b is not None:
        y += b[:, None]
    return y.reshape(O, out_h, out_w, N).transpose(BATCH_FIRST), (tuple(x.shape), col)


def conv2d_backward(gy: Any, saved: tuple[tuple[int, ...], Any], w: Any, win: Window,
                    need_gx: bool, need_gb: bool) -> tuple[Any | None, Any, Any | None]:
    """gy: (N, O, out_h, out_w) and conv2d_forward's saved -> (gx (N, C, H, W) or None,
    gw (O, C, kh, kw), gb (O,) or None)."""
    x_shape, col = saved
    C, kh, kw, N, out_h, out_w = col.shape
    O = w.shape[0]
    gy_b = gy.transpose(BATCH_LAST)
    if not gy_b.flags.c_contiguous:
        gy_b = get_array_module(gy).ascontiguousarray(gy_b)
    gy_mat = gy_b.reshape(O, -1)  # (O, out_h*out_w*N)
    col_mat = col.transpose(COLUMNS_BATCH_LAST).reshape(C * kh * kw, -1)
    gw = matmul(gy_mat, col_mat.T).reshape(w.shape)
    gb = gy_mat.sum(axis=1) if need_gb else None
    if not need_gx:
        return None, gw, gb
    gcol = matmul(w.reshape(O, -1).T, gy_mat).reshape(C, kh, kw, out_h, out_w, N)
    return cuda.col2im(gcol.transpose(COLUMNS_BATCH_FIRST), x_shape[2], x_shape[3], win), gw, gb
