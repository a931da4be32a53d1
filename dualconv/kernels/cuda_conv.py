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

from typing import Any

from ..backend import get_array_module
from ..shapes import Window
from . import cuda
from .cuda_gemm import matmul
from .layout import batch_first, batch_last, columns_batch_first, columns_batch_last


def _column_matrix(col: Any) -> Any:
    """col: (C, kh, kw, N, out_h, out_w) -> (C*kh*kw, out_h*out_w*N) matrix, a view of
    im2col's storage."""
    C, kh, kw, N, out_h, out_w = col.shape
    return columns_batch_last(col).reshape(C * kh * kw, out_h * out_w * N)


def conv2d_forward(x: Any, w: Any, b: Any | None, win: Window) -> tuple[Any, tuple[tuple[int, ...], Any]]:
    """x: (N, C, H, W), w: (O, C, kh, kw), b: (O,) or None -> (y (N, O, out_h, out_w),
    saved = (x's shape, col (C, kh, kw, N, out_h, out_w)))."""
    O = w.shape[0]
    N, _, H, W = x.shape
    out_h, out_w = win.out_size(H, W)
    col = cuda.im2col(x, win)
    y = matmul(w.reshape(O, -1), _column_matrix(col))
    if b is not None:
        y += b[:, None]
    return batch_first(y.reshape(O, out_h, out_w, N)), (tuple(x.shape), col)


def conv2d_backward(gy: Any, saved: tuple[tuple[int, ...], Any], w: Any, win: Window,
                    need_gx: bool, need_gb: bool) -> tuple[Any | None, Any, Any | None]:
    """gy: (N, O, out_h, out_w) and conv2d_forward's saved -> (gx (N, C, H, W) or None,
    gw (O, C, kh, kw), gb (O,) or None)."""
    xp = get_array_module(gy)
    x_shape, col = saved
    O, C, kh, kw = w.shape
    N, _, H, W = x_shape
    out_h, out_w = win.out_size(H, W)
    gy_mat = xp.ascontiguousarray(batch_last(gy)).reshape(O, -1)  # (O, out_h*out_w*N)
    gw = matmul(gy_mat, _column_matrix(col).T).reshape(w.shape)
    gb = gy_mat.sum(axis=1) if need_gb else None
    if not need_gx:
        return None, gw, gb
    gcol = matmul(w.reshape(O, -1).T, gy_mat).reshape(C, kh, kw, out_h, out_w, N)
    return cuda.col2im(columns_batch_first(gcol), H, W, win), gw, gb
